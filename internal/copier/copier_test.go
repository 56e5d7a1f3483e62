package copier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/offload"
	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
)

const sentinel = 0xA5

// fixture writes a random source and a sentinel-filled destination file.
func fixture(t *testing.T, srcSize, dstSize int) (src, dst string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	src, dst = filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	data = onloadtest.RandomBytes(srcSize, uint64(srcSize))
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, bytes.Repeat([]byte{sentinel}, dstSize), 0o644); err != nil {
		t.Fatal(err)
	}
	return src, dst, data
}

// checkDest asserts dst holds want at off and the sentinel everywhere else.
func checkDest(t *testing.T, dst string, off int64, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[off:off+int64(len(want))], want) {
		t.Errorf("destination range [%d,%d) differs from the source", off, off+int64(len(want)))
	}
	for i, c := range got {
		if (int64(i) < off || int64(i) >= off+int64(len(want))) && c != sentinel {
			t.Fatalf("byte at offset %d outside the destination range was written (%#x)", i, c)
		}
	}
}

// withOffloadCopy makes the copy_file_range path call fn instead of the
// system call loop.
func withOffloadCopy(t *testing.T, fn func(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error)) {
	swap(t, &offloadPaths, []copypath.Path{offload.Path{CopyFunc: fn}})
}

// swap replaces a test seam for the duration of the test.
func swap[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func TestFilesCopyThroughCopyFileRange(t *testing.T) {
	src, dst, data := fixture(t, 1<<20, 1<<20)
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst, SrcOff: 4096, DstOff: 12345, Len: 500000, LenSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.OffloadedBytes != 500000 || sum.OnloadedBytes != 0 {
		t.Errorf("offloaded %d, onloaded %d; want all 500000 through copy_file_range", sum.OffloadedBytes, sum.OnloadedBytes)
	}
	checkDest(t, dst, 12345, data[4096:4096+500000])
}

// The posted kernel series was seen returning full success from
// copy_file_range while nothing was copied; the canary must catch it.
func TestCanaryCatchesOffloadThatReportsSuccessWithoutCopying(t *testing.T) {
	var calls int
	withOffloadCopy(t, func(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
		calls++
		return n, nil
	})
	for _, mode := range []Mode{Auto, OffloadOnly} {
		t.Run(mode.String(), func(t *testing.T) {
			calls = 0
			src, dst, data := fixture(t, 3<<20, 3<<20)
			var warnings []string
			sum, err := Run(context.Background(), Request{Src: src, Dst: dst, Mode: mode,
				Warn: func(m string) { warnings = append(warnings, m) }})
			if sum.OffloadDisabledReason == "" || len(warnings) != 1 {
				t.Errorf("offload_disabled_reason %q, warnings %q; want the lie reported once", sum.OffloadDisabledReason, warnings)
			}
			if calls != 1 {
				t.Errorf("copy_file_range called %d times after the canary failed; want 1", calls)
			}
			if mode == OffloadOnly {
				if !errors.Is(err, ErrOffloadUnavailable) {
					t.Fatalf("--mode offload: err = %v, want ErrOffloadUnavailable (exit 3)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sum.OffloadedBytes != 0 || sum.OnloadedBytes != 3<<20 {
				t.Errorf("offloaded %d onloaded %d; want everything redone through the host", sum.OffloadedBytes, sum.OnloadedBytes)
			}
			checkDest(t, dst, 0, data)
		})
	}
}

func TestOffloadFailuresFallBackOrStop(t *testing.T) {
	tests := []struct {
		name     string
		errno    syscall.Errno
		mode     Mode
		wantErr  error
		fellBack bool
	}{
		{"unavailable (EXDEV) falls back to onload", syscall.EXDEV, Auto, nil, true},
		{"unavailable in offload mode is exit 3", syscall.EXDEV, OffloadOnly, ErrOffloadUnavailable, false},
		{"EIO is retried once through the host", syscall.EIO, Auto, nil, true},
		{"EIO in offload mode stops", syscall.EIO, OffloadOnly, syscall.EIO, false},
		{"ENOSPC stops the copy", syscall.ENOSPC, Auto, syscall.ENOSPC, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst, data := fixture(t, 1<<20, 1<<20)
			real := offload.Copy
			var failedAt int64
			withOffloadCopy(t, func(ctx context.Context, d, s *os.File, dOff, sOff, n int64, p func(int64)) (int64, error) {
				// Copy half of the first call (the canary) for real, then
				// fail: the rest must resume at the exact byte reached.
				half := n / 2
				if _, err := real(ctx, d, s, dOff, sOff, half, p); err != nil {
					return 0, err
				}
				failedAt = sOff + half
				return half, &offload.Error{Op: "copy_file_range", Path: s.Name() + " -> " + d.Name(), Offset: sOff + half, Err: tt.errno}
			})
			sum, err := Run(context.Background(), Request{Src: src, Dst: dst, Mode: tt.mode, Len: 1 << 20, LenSet: true})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.fellBack && (failedAt == 0 || sum.OffloadedBytes != failedAt || sum.OnloadedBytes != 1<<20-failedAt || sum.OffloadDisabledReason == "") {
				t.Errorf("offloaded %d onloaded %d reason %q; want %d offloaded (where the call failed), the rest onloaded, and a reason",
					sum.OffloadedBytes, sum.OnloadedBytes, sum.OffloadDisabledReason, failedAt)
			}
			checkDest(t, dst, 0, data)
		})
	}
}

func TestVerifyMismatchReportsFirstDifferingOffset(t *testing.T) {
	src, dst, _ := fixture(t, 1<<20, 1<<20)
	real := onloadCopy
	swap(t, &onloadCopy, func(ctx context.Context, d, s onload.Endpoint, dOff, sOff, n int64, o onload.Options) (int64, error) {
		w, err := real(ctx, d, s, dOff, sOff, n, o)
		// A copy that silently flips one byte, as a bad cable or a buggy
		// device would.
		if _, werr := d.File.WriteAt([]byte{^byte(0)}, 700001); werr != nil {
			t.Fatal(werr)
		}
		return w, err
	})
	_, err := Run(context.Background(), Request{Src: src, Dst: dst, Mode: OnloadOnly, SrcOff: 100, DstOff: 100, Len: 900000, LenSet: true, Verify: true})
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a MismatchError", err)
	}
	if me.DstOff != 700001 || me.SrcOff != 700001 {
		t.Errorf("first difference reported at dst %d src %d, want 700001", me.DstOff, me.SrcOff)
	}
}

func TestInterruptedCopyResumesToTheSameResult(t *testing.T) {
	tests := []struct {
		name           string
		srcOff, dstOff int64
		same           bool
		mode           Mode
	}{
		{"two files, onload", 0, 4096, false, OnloadOnly},
		{"two files, offload", 512, 0, false, Auto},
		{"overlap, destination after source (backward)", 0, 300000, true, Auto},
		{"overlap, destination before source (forward)", 300000, 1000, true, OnloadOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 4 << 20
			swap(t, &offloadPaths, []copypath.Path{offload.Path{FileRequest: 256 << 10}})
			src, dst, data := fixture(t, 6<<20, 6<<20)
			if tt.same {
				dst = src
			}
			want := make([]byte, len(data))
			copy(want, data)
			copy(want[tt.dstOff:], data[tt.srcOff:tt.srcOff+n])

			ctx, cancel := context.WithCancel(context.Background())
			var seen int64
			req := Request{Src: src, Dst: dst, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: n, LenSet: true, Mode: tt.mode, BufSize: 64 << 10,
				Progress: func(k int64) {
					if seen += k; seen >= n/3 {
						cancel()
					}
				}}
			_, err := Run(ctx, req)
			var ie *InterruptedError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want InterruptedError", err)
			}
			if ie.Done <= 0 || ie.Done >= n || ie.Len != n-ie.Done {
				t.Fatalf("interrupted with done=%d len=%d; want a partial copy", ie.Done, ie.Len)
			}
			req.SrcOff, req.DstOff, req.Len, req.Progress = ie.SrcOff, ie.DstOff, ie.Len, nil
			if _, err := Run(context.Background(), req); err != nil {
				t.Fatalf("resume: %v", err)
			}
			got, _ := os.ReadFile(dst)
			if !tt.same {
				full := bytes.Repeat([]byte{sentinel}, len(data))
				copy(full[tt.dstOff:], data[tt.srcOff:tt.srcOff+n])
				want = full
			}
			if !bytes.Equal(got, want) {
				t.Fatal("after resuming, the destination differs from an uninterrupted copy")
			}
		})
	}
}

func TestOverlappingVerifyUsesChecksumsTakenBeforeTheCopy(t *testing.T) {
	src, _, data := fixture(t, 4<<20, 0)
	sum, err := Run(context.Background(), Request{Src: src, Dst: src, SrcOff: 0, DstOff: 1 << 20, Len: 3 << 20, LenSet: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Verified {
		t.Fatal("overlapping copy not verified")
	}
	got, _ := os.ReadFile(src)
	if !bytes.Equal(got[1<<20:], data[:3<<20]) {
		t.Fatal("overlapping copy is not the memmove result")
	}
}

// projectDirFixture is fixture on the file system holding the source tree
// (ext4 on this project's machines), not TMPDIR, which may be a tmpfs.
func projectDirFixture(t *testing.T, name string, size int) (string, []byte) {
	t.Helper()
	dir, err := os.MkdirTemp(".", "testdata-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p, _ := filepath.Abs(filepath.Join(dir, name))
	data := onloadtest.RandomBytes(size, 99)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestFileCopyOnOneFileSystemIsAllCopyFileRange(t *testing.T) {
	src, data := projectDirFixture(t, "src.img", 3<<20)
	dst := filepath.Join(filepath.Dir(src), "dst.img")
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst, SrcOff: 1, DstOff: 4096, Len: 3<<20 - 1, LenSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.OffloadedBytes != sum.Bytes || sum.OnloadedBytes != 0 {
		t.Errorf("offloaded %d of %d bytes (onloaded %d, reason %q); copy_file_range works within one file system on every current kernel",
			sum.OffloadedBytes, sum.Bytes, sum.OnloadedBytes, sum.OffloadDisabledReason)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got[4096:], data[1:]) || !bytes.Equal(got[:4096], make([]byte, 4096)) {
		t.Fatal("destination content is wrong")
	}
}

func TestFileCopyAcrossFileSystemsFallsBackOrSucceeds(t *testing.T) {
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm tmpfs to copy across file systems")
	}
	src, data := projectDirFixture(t, "src.img", 2<<20)
	f, err := os.CreateTemp("/dev/shm", "blkcopy-xdev-*.img")
	if err != nil {
		t.Fatal(err)
	}
	dst := f.Name()
	f.Close()
	t.Cleanup(func() { os.Remove(dst) })
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ext4 -> tmpfs: %d bytes by copy_file_range, %d through the host (%s)", sum.OffloadedBytes, sum.OnloadedBytes, sum.OffloadDisabledReason)
	if sum.OffloadedBytes+sum.OnloadedBytes != int64(len(data)) {
		t.Errorf("offloaded %d + onloaded %d != %d", sum.OffloadedBytes, sum.OnloadedBytes, len(data))
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("cross-file-system copy is wrong")
	}
}

// Zeroes copied onto zeroes: a copy that moved nothing would read back
// equal, so the canary's destination is poisoned first.
func TestCanaryCatchesANoOpCopyOverEqualBytes(t *testing.T) {
	withOffloadCopy(t, func(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
		return n, nil
	})
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	for _, p := range []string{src, dst} {
		if err := os.WriteFile(p, make([]byte, 3<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	if sum.OffloadDisabledReason == "" || sum.OffloadedBytes != 0 {
		t.Errorf("offloaded %d, offload_disabled_reason %q; want the no-op copy caught", sum.OffloadedBytes, sum.OffloadDisabledReason)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, make([]byte, 3<<20)) {
		t.Error("destination is not the source's zeroes after the fallback")
	}
}
