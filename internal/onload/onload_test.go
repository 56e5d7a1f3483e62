package onload_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
)

const fileSize = 256 << 10

type copyCase struct {
	name           string
	srcOff, dstOff int64
	n              int64
	dstSize        int // size of the destination file before the copy
}

var copyCases = []copyCase{
	{"aligned", 4096, 8192, 64 << 10, fileSize},
	{"whole file", 0, 0, fileSize, fileSize},
	{"unaligned head same phase", 100, 100, 50000, fileSize},
	{"unaligned tail", 0, 0, 70001, fileSize},
	{"phase mismatch", 3, 700, 100000, fileSize},
	{"inside one block", 10, 20, 100, fileSize},
	{"one byte", 5000, 7, 1, fileSize},
	{"destination grows past its end", 1000, 9000, 20001, 10000},
	{"destination starts past its end", 0, 20000, 5000, 10000},
}

// expected is what the destination file holds after a correct copy: its old
// bytes everywhere but the range, which holds the source's bytes.
func expected(dst, src []byte, c copyCase) []byte {
	want := append([]byte(nil), dst...)
	if end := int(c.dstOff + c.n); end > len(want) {
		want = append(want, make([]byte, end-len(want))...)
	}
	copy(want[c.dstOff:c.dstOff+c.n], src[c.srcOff:c.srcOff+c.n])
	return want
}

func TestCopyRegularFilesMatchesSourceAndLeavesRestOfDestination(t *testing.T) {
	dir := onloadtest.DirectDir(t)
	type mode struct {
		name                 string
		srcDirect, dstDirect bool
	}
	modes := []mode{
		{"buffered", false, false},
		{"direct", true, true},
		{"buffered to direct", false, true},
		{"direct to buffered", true, false},
	}
	configs := []onload.Options{
		{BufSize: 8192, Depth: 1},
		{BufSize: 12288, Depth: 3},
		{},
	}
	for _, m := range modes {
		for _, align := range []int64{512, 4096} {
			for _, opt := range configs {
				for ci, c := range copyCases {
					name := fmt.Sprintf("%s/align=%d/buf=%d,depth=%d/%s", m.name, align, opt.BufSize, opt.Depth, c.name)
					t.Run(name, func(t *testing.T) {
						checkCopy(t, dir, c, fileSize, uint64(ci), m.srcDirect, m.dstDirect, align, opt)
					})
				}
			}
		}
	}
}

func TestCopyPhaseMismatchLargerThanStagingPiece(t *testing.T) {
	c := copyCase{srcOff: 3, dstOff: 700, n: 3<<20 - 1000, dstSize: 3 << 20}
	checkCopy(t, onloadtest.DirectDir(t), c, 3<<20, 7, true, true, 512, onload.Options{BufSize: 2 << 20})
}

// checkCopy copies c between files in dir and checks the whole destination
// file and the progress reported.
func checkCopy(t *testing.T, dir string, c copyCase, srcSize int, seed uint64, srcDirect, dstDirect bool, align int64, opt onload.Options) {
	t.Helper()
	src := onloadtest.RandomBytes(srcSize, seed)
	old := onloadtest.RandomBytes(c.dstSize, seed+100)
	sp, dp := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	onloadtest.WriteFile(t, sp, src)
	onloadtest.WriteFile(t, dp, old)
	var progress atomic.Int64
	opt.Progress = func(n int64) { progress.Add(n) }
	written, err := onload.Copy(t.Context(),
		onloadtest.Open(t, dp, dstDirect, align),
		onloadtest.Open(t, sp, srcDirect, align),
		c.dstOff, c.srcOff, c.n, opt)
	if err != nil || written != c.n {
		t.Fatalf("Copy = %d, %v; want %d, nil", written, err, c.n)
	}
	if progress.Load() != c.n {
		t.Errorf("progress reported %d bytes, want %d", progress.Load(), c.n)
	}
	got := onloadtest.ReadFile(t, dp)
	if i := onloadtest.FirstDiff(got, expected(old, src, c)); i >= 0 {
		t.Fatalf("destination differs from expected at byte %d (range [%d, %d), size %d, want size %d)",
			i, c.dstOff, c.dstOff+c.n, len(got), max(c.dstSize, int(c.dstOff+c.n)))
	}
}

func TestCopyZeroLengthWritesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	onloadtest.WriteFile(t, p, []byte("abc"))
	e := onloadtest.Open(t, p, false, 1)
	if n, err := onload.Copy(t.Context(), e, e, 0, 1, 0, onload.Options{}); n != 0 || err != nil {
		t.Fatalf("Copy of 0 bytes = %d, %v", n, err)
	}
}

// faultRun copies fileSize-4096 bytes from offset 1024 of a random source
// file to offset 2048 of a destination file full of sentinel bytes, through
// the given syscall wrappers, and checks what must hold even when the copy
// fails: written is a prefix that holds the source's bytes, progress added
// up to written, the rest of the range holds old or new bytes only, and
// nothing outside the range changed.
type faultRun struct {
	direct  bool
	opt     onload.Options
	src     onload.Endpoint
	dst     onload.Endpoint
	srcFd   int
	dstFd   int
	srcData []byte
	dstData []byte
	dstPath string
}

const (
	faultSrcOff = 1024
	faultDstOff = 2048
	faultN      = fileSize - 4096
)

func newFaultRun(t *testing.T, direct bool) *faultRun {
	dir := onloadtest.DirectDir(t)
	r := &faultRun{direct: direct, opt: onload.Options{BufSize: 16384, Depth: 2}}
	r.srcData = onloadtest.RandomBytes(fileSize, 1)
	r.dstData = onloadtest.RandomBytes(fileSize, 2)
	sp := filepath.Join(dir, "src")
	r.dstPath = filepath.Join(dir, "dst")
	onloadtest.WriteFile(t, sp, r.srcData)
	onloadtest.WriteFile(t, r.dstPath, r.dstData)
	r.src = onloadtest.Open(t, sp, direct, 512)
	r.dst = onloadtest.Open(t, r.dstPath, direct, 512)
	r.srcFd, r.dstFd = int(r.src.File.Fd()), int(r.dst.File.Fd())
	return r
}

func (r *faultRun) run(t *testing.T, ctx context.Context, rd, wr func(fd int, p []byte, off int64) (int, error)) (int64, error) {
	t.Helper()
	defer onload.SwapSyscalls(rd, wr)()
	var progress atomic.Int64
	r.opt.Progress = func(n int64) { progress.Add(n) }
	written, err := onload.Copy(ctx, r.dst, r.src, faultDstOff, faultSrcOff, faultN, r.opt)
	if progress.Load() != written {
		t.Errorf("progress reported %d bytes, written is %d", progress.Load(), written)
	}
	got := onloadtest.ReadFile(t, r.dstPath)
	if len(got) != len(r.dstData) {
		t.Fatalf("destination size changed from %d to %d", len(r.dstData), len(got))
	}
	if i := onloadtest.FirstDiff(got[:faultDstOff], r.dstData[:faultDstOff]); i >= 0 {
		t.Errorf("byte %d before the range changed", i)
	}
	if i := onloadtest.FirstDiff(got[faultDstOff+faultN:], r.dstData[faultDstOff+faultN:]); i >= 0 {
		t.Errorf("byte %d after the range changed", faultDstOff+faultN+i)
	}
	want := r.srcData[faultSrcOff : faultSrcOff+faultN]
	rng := got[faultDstOff : faultDstOff+faultN]
	if i := onloadtest.FirstDiff(rng[:written], want[:written]); i >= 0 {
		t.Errorf("written prefix of %d bytes differs from the source at byte %d", written, i)
	}
	for i := written; i < faultN; i++ {
		if rng[i] != want[i] && rng[i] != r.dstData[faultDstOff+i] {
			t.Fatalf("byte %d of the range is neither old nor new", i)
		}
	}
	return written, err
}

// on returns a wrapper of the real syscall that calls f instead for fd.
func on(fd int, real func(int, []byte, int64) (int, error), f func(p []byte, off int64) (int, error)) func(int, []byte, int64) (int, error) {
	return func(gotFd int, p []byte, off int64) (int, error) {
		if gotFd != fd {
			return real(gotFd, p, off)
		}
		return f(p, off)
	}
}

func modes(t *testing.T, f func(t *testing.T, direct bool)) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) { f(t, direct) })
	}
}

func TestCopyErrorNamesOpPathOffsetAndStopsBeforeIt(t *testing.T) {
	realR, realW := onload.Syscalls()
	const bad = 100000 // byte offset of the bad sector, relative to the range
	tests := []struct {
		name  string
		op    string
		errno syscall.Errno
	}{
		{"read EIO", "read", syscall.EIO},
		{"read ENODATA", "read", syscall.ENODATA},
		{"write EIO", "write", syscall.EIO},
		{"write ENOSPC", "write", syscall.ENOSPC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			modes(t, func(t *testing.T, direct bool) {
				r := newFaultRun(t, direct)
				rd, wr := realR, realW
				badOff, path := int64(faultSrcOff+bad), r.src.File.Name()
				failing := func(real func(int, []byte, int64) (int, error), fd int) func(p []byte, off int64) (int, error) {
					return func(p []byte, off int64) (int, error) {
						if off <= badOff && badOff < off+int64(len(p)) {
							return 0, tt.errno
						}
						return real(fd, p, off)
					}
				}
				if tt.op == "read" {
					rd = on(r.srcFd, realR, failing(realR, r.srcFd))
				} else {
					badOff, path = faultDstOff+bad, r.dstPath
					wr = on(r.dstFd, realW, failing(realW, r.dstFd))
				}
				written, err := r.run(t, t.Context(), rd, wr)
				var oe *onload.Error
				if !errors.As(err, &oe) || !errors.Is(err, tt.errno) {
					t.Fatalf("err = %v, want an *onload.Error wrapping %v", err, tt.errno)
				}
				if oe.Op != tt.op || oe.Path != path || oe.Offset > badOff || oe.Offset <= badOff-r.opt.BufSize {
					t.Errorf("error %q: want op %s, path %s, offset within one buffer at or before %d", err, tt.op, path, badOff)
				}
				want := fmt.Sprintf("%s %s at offset %d: %s", tt.op, path, oe.Offset, tt.errno.Error())
				if err.Error() != want {
					t.Errorf("error text %q, want %q", err, want)
				}
				if written > bad {
					t.Errorf("written = %d, past the failing byte %d", written, bad)
				}
				if written < bad-2*r.opt.BufSize {
					t.Errorf("written = %d, want the chunks before the failing one (about %d)", written, bad)
				}
			})
		})
	}
}

func TestCopyRetriesEINTRAndShortTransfers(t *testing.T) {
	realR, realW := onload.Syscalls()
	// Short transfers stay multiples of 512 bytes, as the kernel's are
	// with O_DIRECT.
	short := func(real func(int, []byte, int64) (int, error), fd int) func(p []byte, off int64) (int, error) {
		var mu sync.Mutex
		calls := 0
		return func(p []byte, off int64) (int, error) {
			mu.Lock()
			calls++
			c := calls
			mu.Unlock()
			switch {
			case c%3 == 0:
				return 0, syscall.EINTR
			case c%3 == 1 && len(p) > 1024:
				return real(fd, p[:len(p)/1024*512], off)
			}
			return real(fd, p, off)
		}
	}
	modes(t, func(t *testing.T, direct bool) {
		r := newFaultRun(t, direct)
		written, err := r.run(t, t.Context(),
			on(r.srcFd, realR, short(realR, r.srcFd)),
			on(r.dstFd, realW, short(realW, r.dstFd)))
		if err != nil || written != faultN {
			t.Fatalf("Copy = %d, %v; want %d, nil", written, err, faultN)
		}
	})
}

func TestCopyWriteOfZeroBytesIsAnErrorNotALoop(t *testing.T) {
	realR, realW := onload.Syscalls()
	modes(t, func(t *testing.T, direct bool) {
		r := newFaultRun(t, direct)
		_, err := r.run(t, t.Context(), realR, on(r.dstFd, realW, func(p []byte, off int64) (int, error) { return 0, nil }))
		if !errors.Is(err, io.ErrShortWrite) || !strings.Contains(err.Error(), "write "+r.dstPath+" at offset ") {
			t.Fatalf("err = %v, want short write naming %s", err, r.dstPath)
		}
	})
}

func TestCopyFromShrunkSourceIsUnexpectedEOF(t *testing.T) {
	realR, realW := onload.Syscalls()
	modes(t, func(t *testing.T, direct bool) {
		r := newFaultRun(t, direct)
		// The source ends 5000 bytes into the range, as if truncated
		// after the caller checked its size.
		end := int64(faultSrcOff + 5000)
		rd := on(r.srcFd, realR, func(p []byte, off int64) (int, error) {
			if off >= end {
				return 0, nil
			}
			// Like the kernel at end of file, even with O_DIRECT:
			// the read stops short, at a byte that need not be
			// block-aligned.
			m, err := realR(r.srcFd, p, off)
			return int(min(int64(m), end-off)), err
		})
		written, err := r.run(t, t.Context(), rd, realW)
		var oe *onload.Error
		if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &oe) || oe.Op != "read" || oe.Path != r.src.File.Name() {
			t.Fatalf("err = %v, want unexpected EOF reading %s", err, r.src.File.Name())
		}
		if written > 5000 {
			t.Errorf("written = %d, past the end of the source", written)
		}
	})
}

func TestCopyCancelledStopsAfterInFlightWrites(t *testing.T) {
	realR, realW := onload.Syscalls()
	modes(t, func(t *testing.T, direct bool) {
		r := newFaultRun(t, direct)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var writes, afterCancel atomic.Int64
		var cancelled atomic.Bool
		wr := on(r.dstFd, realW, func(p []byte, off int64) (int, error) {
			if cancelled.Load() {
				afterCancel.Add(1)
			}
			if writes.Add(1) == 4 {
				cancel()
				cancelled.Store(true)
			}
			return realW(r.dstFd, p, off)
		})
		written, err := r.run(t, ctx, realR, wr)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// Workers (two per unit of depth) that checked just before the
		// cancel may still start their write, so the written prefix can
		// hold those too, but no write that began after they finished.
		most := int64(2*r.opt.Depth - 1)
		if n := afterCancel.Load(); n > most {
			t.Errorf("%d writes started after cancel, want at most %d in flight", n, most)
		}
		if w := writes.Load(); w > 4+most {
			t.Errorf("%d writes in all, want at most 4 and the %d in flight at the cancel", w, most)
		}
		if written >= faultN || written > writes.Load()*r.opt.BufSize {
			t.Errorf("written = %d after %d writes of at most %d bytes, cancelled on the 4th", written, writes.Load(), r.opt.BufSize)
		}
	})
}

func TestCopyCancelledBeforeStartWritesNothing(t *testing.T) {
	r := newFaultRun(t, false)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	written, err := r.run(t, ctx, nil, nil)
	if written != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Copy = %d, %v; want 0, context.Canceled", written, err)
	}
}

func TestDefaultBufSize(t *testing.T) {
	tests := []struct {
		optimal, want int64
	}{
		{0, 8 << 20},
		{3 << 20, 6 << 20}, // whole optimal units
		{100000, alignUp(8300000, 4096)},
		{9 << 20, 8 << 20}, // a stripe larger than a buffer is ignored
	}
	for _, tt := range tests {
		if got := onload.DefaultBufSize(tt.optimal); got != tt.want {
			t.Errorf("DefaultBufSize(%d) = %d, want %d", tt.optimal, got, tt.want)
		}
	}
}

func alignUp(x, a int64) int64 { return (x + a - 1) / a * a }

// rssAnon returns the process's resident anonymous memory in bytes.
func rssAnon(t *testing.T) int64 {
	for line := range strings.Lines(string(onloadtest.ReadFile(t, "/proc/self/status"))) {
		var kb int64
		if _, err := fmt.Sscanf(line, "RssAnon: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	t.Fatal("no RssAnon in /proc/self/status")
	return 0
}

func TestCopyMemoryStaysFlatWhateverTheLength(t *testing.T) {
	const n = 256 << 20
	dir := t.TempDir()
	sp, dp := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	// A sparse source reads as zeros without touching the disk; the
	// destination is as sparse, so only the copy's own memory moves.
	onloadtest.WriteFile(t, sp, nil)
	onloadtest.WriteFile(t, dp, nil)
	if err := os.Truncate(sp, n); err != nil {
		t.Fatal(err)
	}
	opt := onload.Options{BufSize: 1 << 20, Depth: 2, NoSync: true}
	before := rssAnon(t)
	var peak int64
	opt.Progress = func(int64) { peak = max(peak, rssAnon(t)) }
	if _, err := onload.Copy(t.Context(), onloadtest.Open(t, dp, false, 1), onloadtest.Open(t, sp, false, 1), 0, 0, n, opt); err != nil {
		t.Fatal(err)
	}
	// Four 1 MiB buffers, plus slack for goroutine stacks and the runtime.
	if grew, most := peak-before, int64(4<<20+2<<20); grew > most {
		t.Errorf("resident memory grew by %d bytes during a %d-byte copy, want at most %d", grew, n, most)
	}
}
