package copier

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
	"github.com/blkcopy/blkcopy/internal/state"
)

var errCrash = errors.New("simulated crash")

// crasher stands between the copy and its destination file. It logs every
// write with the bytes it replaced and, at the write chosen, crashes: it
// takes the destination and the state file as they are at that instant,
// then undoes a random subset of the writes that were not yet durable, as a
// power cut may. A write is durable once an fdatasync of the checkpoints
// that began after it has returned (the seam fdatasync tells); any other
// may be lost, each location keeping the value of one of its writes or its
// old one, never an older write over a newer. Every write after the crash
// fails. The record is not trusted: if it counted a write that was not
// durable, the lost write shows in the result.
type crasher struct {
	mu       sync.Mutex
	rng      *rand.Rand
	dst, rec string // destination and state file paths
	crashAt  int    // crash at this write of the run; 0 never
	writes   int
	log      []logged
	durable  int // log[:durable] survive a power cut
	crashed  bool
	image    []byte // the destination the crash left
	record   []byte // the state file the crash left; nil: none
}

type logged struct {
	off int64
	old []byte
}

func (c *crasher) reset(crashAt int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashAt, c.writes, c.log, c.durable, c.crashed, c.image, c.record = crashAt, 0, nil, 0, false, nil, nil
}

// fdatasync makes the writes logged before it began durable. It takes a
// millisecond, as a device's cache flush does, while the copy goes on.
func (c *crasher) fdatasync(fd int) error {
	c.mu.Lock()
	n := len(c.log)
	c.mu.Unlock()
	if err := unix.Fdatasync(fd); err != nil {
		return err
	}
	time.Sleep(time.Millisecond)
	c.mu.Lock()
	c.durable = max(c.durable, n)
	c.mu.Unlock()
	return nil
}

func (c *crasher) write(f *os.File, b []byte, off int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return errCrash
	}
	old := make([]byte, len(b))
	n, _ := f.ReadAt(old, off)
	c.log = append(c.log, logged{off, old[:n]})
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	if c.writes++; c.writes == c.crashAt {
		c.crash()
		return errCrash
	}
	return nil
}

func (c *crasher) crash() {
	c.crashed = true
	var err error
	if c.image, err = os.ReadFile(c.dst); err != nil {
		panic(err)
	}
	c.record, err = os.ReadFile(c.rec)
	if errors.Is(err, os.ErrNotExist) {
		c.record = nil
	} else if err != nil {
		panic(err)
	}
	// Newest first: a write that is kept settles its bytes, so that no
	// older write undone later brings back what was there before it.
	var settled []span
	for i := len(c.log) - 1; i >= c.durable; i-- {
		w := c.log[i]
		lost := c.rng.IntN(2) == 0
		for _, f := range subtract(span{w.off, w.off + int64(len(w.old))}, settled) {
			if lost {
				copy(c.image[f.lo:f.hi], w.old[f.lo-w.off:])
			} else {
				settled = append(settled, f)
			}
		}
	}
}

type span struct{ lo, hi int64 }

// subtract returns the parts of s that no span of cut covers.
func subtract(s span, cut []span) []span {
	parts := []span{s}
	for _, c := range cut {
		var next []span
		for _, p := range parts {
			if c.hi <= p.lo || c.lo >= p.hi {
				next = append(next, p)
				continue
			}
			if p.lo < c.lo {
				next = append(next, span{p.lo, c.lo})
			}
			if c.hi < p.hi {
				next = append(next, span{c.hi, p.hi})
			}
		}
		parts = next
	}
	return parts
}

// restore puts the destination and the state file back as the crash left
// them: the machine has rebooted.
func (c *crasher) restore(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(c.dst, c.image, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(c.rec + ".tmp")
	if c.record == nil {
		os.Remove(c.rec)
	} else if err := os.WriteFile(c.rec, c.record, 0o644); err != nil {
		t.Fatal(err)
	}
}

const crashPiece = 16 << 10

// onload is an onload engine for the crasher: it writes the chunk in
// pieces, each a random one of the next four not yet written (as a ring
// of workers does), taking about as long as a fast device, and reports
// the written prefix as it grows, like the real engine. The pace matters:
// with the pieces in any order, or written in a few microseconds each,
// the prefix hardly grows before the crash and the checkpoints, on their
// own goroutine, are never tested.
func (c *crasher) onload(ctx context.Context, dst, src onload.Endpoint, dstOff, srcOff, n int64, o onload.Options) (int64, error) {
	buf := make([]byte, n)
	if _, err := src.File.ReadAt(buf, srcOff); err != nil {
		return 0, err
	}
	pieces := int((n + crashPiece - 1) / crashPiece)
	done := make([]bool, pieces)
	prefix := 0
	for _, i := range windowed(pieces, 4) {
		time.Sleep(50 * time.Microsecond)
		lo, hi := int64(i)*crashPiece, min(int64(i+1)*crashPiece, n)
		if err := c.write(dst.File, buf[lo:hi], dstOff+lo); err != nil {
			return min(int64(prefix)*crashPiece, n), err
		}
		done[i] = true
		old := prefix
		for prefix < pieces && done[prefix] {
			prefix++
		}
		if o.Progress != nil && prefix > old {
			o.Progress(min(int64(prefix)*crashPiece, n) - min(int64(old)*crashPiece, n))
		}
	}
	return n, nil
}

// windowed returns 0..n-1 in an order where each is a random one of the
// lowest w not yet taken.
func windowed(n, w int) []int {
	order := make([]int, 0, n)
	var window []int
	for next := 0; len(order) < n; {
		for len(window) < w && next < n {
			window = append(window, next)
			next++
		}
		k := rand.IntN(len(window))
		order = append(order, window[k])
		window = append(window[:k], window[k+1:]...)
	}
	return order
}

// crashPath is an offload path whose requests write through the crasher,
// in order, a piece at a time, with a little jitter so that requests in
// flight finish out of order.
type crashPath struct {
	c   *crasher
	lim copypath.Limits
}

func (p *crashPath) Name() string { return "crashfake" }
func (p *crashPath) Open(pair copypath.Pair) (copypath.Session, error) {
	return &crashSession{p: p, pair: pair}, nil
}

type crashSession struct {
	p     *crashPath
	pair  copypath.Pair
	calls atomic.Int64
}

func (s *crashSession) Limits() copypath.Limits { return s.p.lim }
func (s *crashSession) Requests() int64         { return s.calls.Load() }
func (s *crashSession) Close() error            { return nil }
func (s *crashSession) Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	s.calls.Add(1)
	buf := make([]byte, n)
	if _, err := s.pair.Src.File.ReadAt(buf, srcOff); err != nil {
		return 0, err
	}
	for done := int64(0); done < n; {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		k := min(crashPiece, n-done)
		if err := s.p.c.write(s.pair.Dst.File, buf[done:done+k], dstOff+done); err != nil {
			return done, err
		}
		done += k
		if progress != nil {
			progress(k)
		}
	}
	return n, nil
}

// Crashes (kill -9 or a power cut) at random writes of copies with a state
// file, each followed by the same copy again until one finishes: the result
// is the uninterrupted copy's, overlapping copies included, where redoing
// work is only safe because the record never lags the writes by more than
// the distance (see checkpoint.go).
func TestCrashAtAnyMomentOfAnOverlappingCopyResumesToTheMemmoveResult(t *testing.T) {
	const size, n = 6 << 20, 4 << 20
	offloadLim := copypath.Limits{Unit: 32 << 10, Align: 512, Request: 128 << 10, InFlight: 4}
	tests := []struct {
		name           string
		srcOff, dstOff int64
		same           bool // one file: source and destination overlap
		offload        bool
	}{
		{"overlap, destination after source (backward), onload", 0, 300<<10 + 17, true, false},
		{"overlap, destination before source (forward), onload", 300<<10 + 17, 1000, true, false},
		{"two files, onload: one chunk, recorded as its prefix grows", 4096, 12345, false, false},
		{"overlap, destination after source (backward), offload one request at a time", 0, 256 << 10, true, true},
		{"two files, offload with requests in flight", 512, 8192, false, true},
	}
	var crashes, resumes, runs int
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resumedBefore := resumes
			for chain := range 3 {
				// The first chain checkpoints only where it must (the
				// guard of overlapping copies, the end); the others every
				// few KiB and milliseconds as well.
				swap(t, &cadence.bytes, 64<<10)
				swap(t, &cadence.every, 5*time.Millisecond)
				if chain == 0 {
					swap(t, &cadence.bytes, 1<<30)
					swap(t, &cadence.every, time.Hour)
				}
				seed := uint64(chain)*1000 + uint64(tt.srcOff)
				dir := fastDir(t)
				src, dst, rec := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img"), filepath.Join(dir, "copy.state")
				data := onloadtest.RandomBytes(size, seed)
				onloadtest.WriteFile(t, src, data)
				want := bytes.Repeat([]byte{sentinel}, size)
				if tt.same {
					dst, want = src, bytes.Clone(data)
				} else {
					onloadtest.WriteFile(t, dst, want)
				}
				copy(want[tt.dstOff:], data[tt.srcOff:tt.srcOff+n])

				c := &crasher{rng: rand.New(rand.NewPCG(seed, 7)), dst: dst, rec: rec}
				swap(t, &onloadCopy, c.onload)
				swap(t, &fdatasync, c.fdatasync)
				swap(t, &offloadPaths, []copypath.Path{&crashPath{c: c, lim: offloadLim}})
				req := Request{Src: src, Dst: dst, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: n, LenSet: true, State: rec, Mode: OnloadOnly}
				if tt.offload {
					req.Mode = Auto
				}
				chainCrashes := 0
				for run := 0; ; run++ {
					crashAt := 0
					if chainCrashes < 15 {
						crashAt = 1 + c.rng.IntN(n/crashPiece)
					}
					c.reset(crashAt)
					runs++
					sum, err := Run(context.Background(), req)
					if sum.ResumedFrom > 0 {
						resumes++
					}
					if errors.Is(err, errCrash) {
						chainCrashes++
						c.restore(t)
						continue
					}
					if err != nil {
						t.Fatalf("run %d: %v", run, err)
					}
					break
				}
				crashes += chainCrashes
				got := onloadtest.ReadFile(t, dst)
				if i := onloadtest.FirstDiff(got, want); i >= 0 {
					t.Fatalf("chain %d: after %d crashes the destination differs from an uninterrupted copy at offset %d", chain, chainCrashes, i)
				}
				checkSettled(t, rec, tt.same, n)
				// A kill after the copy finished, before its caller saw
				// exit 0: the caller runs it again, which must not change
				// the result (an overlapping copy must not move twice).
				c.reset(0)
				if _, err := Run(context.Background(), req); err != nil {
					t.Fatalf("the same copy again after it finished: %v", err)
				}
				if i := onloadtest.FirstDiff(onloadtest.ReadFile(t, dst), want); i >= 0 {
					t.Fatalf("running the finished copy again changed the destination at offset %d", i)
				}
				checkSettled(t, rec, tt.same, n)
			}
			if resumes == resumedBefore {
				t.Error("no run after a crash resumed past byte 0: the record does not advance")
			}
		})
	}
	t.Logf("%d runs, %d crashes, %d of the runs resumed from a record", runs, crashes, resumes)
}

// checkSettled: after a copy finished its record is gone, or, for an
// overlapping copy, marked done.
func checkSettled(t *testing.T, rec string, overlap bool, n int64) {
	t.Helper()
	r, err := state.Load(rec)
	switch {
	case err != nil:
		t.Fatal(err)
	case overlap && (r == nil || r.Done != n):
		t.Errorf("record of the finished overlapping copy: %+v; want it kept with all %d bytes done", r, n)
	case !overlap && r != nil:
		t.Errorf("the state file is still there after the copy finished: %+v", r)
	}
}

// fastDir is a temporary directory on tmpfs when there is one: the crash
// tests model durability themselves, and fsync there costs nothing.
func fastDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "blkcopy-crash-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stateFixture is fixture plus a state file path in the same directory.
func stateFixture(t *testing.T, srcSize, dstSize int) (src, dst, rec string, data []byte) {
	src, dst, data = fixture(t, srcSize, dstSize)
	return src, dst, filepath.Join(filepath.Dir(dst), "copy.state"), data
}

// interruptAt runs req and cancels it once about at bytes are done.
func interruptAt(t *testing.T, req Request, at int64) *InterruptedError {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	req.Progress = func(k int64) {
		if seen.Add(k) >= at {
			cancel()
		}
	}
	_, err := Run(ctx, req)
	var ie *InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want InterruptedError", err)
	}
	return ie
}

func TestInterruptRecordsTheExactPointAndTheSameRequestResumesThere(t *testing.T) {
	for _, tt := range []struct {
		name           string
		srcOff, dstOff int64
		same           bool
	}{{"two files", 4096, 0, false}, {"overlap, backward", 0, 700 << 10, true}} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 4 << 20
			src, dst, rec, data := stateFixture(t, 6<<20, 6<<20)
			want := bytes.Repeat([]byte{sentinel}, 6<<20)
			if tt.same {
				dst, want = src, bytes.Clone(data)
			}
			copy(want[tt.dstOff:], data[tt.srcOff:tt.srcOff+n])
			req := Request{Src: src, Dst: dst, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: n, LenSet: true, Mode: OnloadOnly, BufSize: 64 << 10, State: rec}
			ie := interruptAt(t, req, n/3)
			r, err := state.Load(rec)
			if err != nil || r == nil {
				t.Fatalf("state file after the interrupt: %v, %v", r, err)
			}
			if r.Done != ie.Done || ie.Done <= 0 || ie.Done >= n {
				t.Fatalf("state file records %d done, the interrupt reported %d of %d", r.Done, ie.Done, n)
			}
			if ie.ReqSrcOff != tt.srcOff || ie.ReqDstOff != tt.dstOff || ie.Total != n {
				t.Errorf("interrupt names the request %d/%d/%d, want %d/%d/%d", ie.ReqSrcOff, ie.ReqDstOff, ie.Total, tt.srcOff, tt.dstOff, n)
			}
			sum, err := Run(context.Background(), req)
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if sum.ResumedFrom != ie.Done || sum.Bytes != n-ie.Done || sum.OnloadedBytes != n-ie.Done {
				t.Errorf("resumed_from %d, bytes %d, onloaded %d; want to resume at %d and copy the other %d", sum.ResumedFrom, sum.Bytes, sum.OnloadedBytes, ie.Done, n-ie.Done)
			}
			if got := onloadtest.ReadFile(t, dst); !bytes.Equal(got, want) {
				t.Fatal("after resuming from the state file the destination differs from an uninterrupted copy")
			}
			checkSettled(t, rec, tt.same, n)
			// The same command after success: a copy that does not
			// overlap copies again from the start; an overlapping one
			// does nothing, or it would move the data twice.
			sum, err = Run(context.Background(), req)
			switch {
			case err != nil:
				t.Fatal(err)
			case tt.same && (sum.ResumedFrom != n || sum.Bytes != 0 || sum.OnloadedBytes != 0 || !strings.Contains(sum.Note, "kept, marked done")):
				t.Errorf("the overlapping copy again: %+v; want nothing done, and said why", sum)
			case !tt.same && (sum.ResumedFrom != 0 || sum.Bytes != n):
				t.Errorf("the same command after success: resumed_from %d, bytes %d; want a whole new copy", sum.ResumedFrom, sum.Bytes)
			}
			if got := onloadtest.ReadFile(t, dst); !bytes.Equal(got, want) {
				t.Fatal("running the finished copy again changed the destination")
			}
		})
	}
}

// A state file that records another copy, or that is not a valid record,
// is refused before anything is written, and is left as it was.
func TestStateFileOfAnotherCopyOrCorruptIsRefusedBeforeAnyWrite(t *testing.T) {
	src, dst, rec, _ := stateFixture(t, 4<<20, 4<<20)
	other := filepath.Join(filepath.Dir(dst), "other.img")
	onloadtest.WriteFile(t, other, bytes.Repeat([]byte{sentinel}, 4<<20))
	base := Request{Src: src, Dst: dst, SrcOff: 0, DstOff: 4096, Len: 2 << 20, LenSet: true, Mode: OnloadOnly, BufSize: 64 << 10, State: rec}
	interruptAt(t, base, 1<<20)
	recorded, _ := os.ReadFile(rec)
	dstBefore := onloadtest.ReadFile(t, dst)
	tests := []struct {
		name    string
		edit    func(r *Request)
		content string // replaces the state file when set
		want    string
	}{
		{"another length", func(r *Request) { r.Len = 3 << 20 }, "", "length differs (state 2097152, request 3145728)"},
		{"another source offset", func(r *Request) { r.SrcOff = 512 }, "", "source offset differs (state 0, request 512)"},
		{"another destination offset", func(r *Request) { r.DstOff = 0 }, "", "destination offset differs (state 4096, request 0)"},
		{"another destination file", func(r *Request) { r.Dst = other }, "", "destination path differs"},
		{"a destination that is gone", func(r *Request) { r.Dst = filepath.Join(filepath.Dir(dst), "gone.img") }, "", "destination differs (state file"},
		{"the source as destination", func(r *Request) { r.Dst = src; r.DstOff = 3 << 20; r.Len = 1 << 20 }, "", "destination inode differs"},
		{"a truncated state file", nil, string(recorded[:len(recorded)/2]), "truncated"},
		{"an empty state file", nil, " ", "truncated or empty"},
		{"another program's JSON", nil, `{"copy": "yes"}`, "not a blkcopy state record"},
		{"a record with done past its length", nil, strings.Replace(string(recorded), `"length": 2097152`, `"length": 4096`, 1), "is outside the length 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base
			if tt.edit != nil {
				tt.edit(&req)
			}
			content := recorded
			if tt.content != "" {
				content = []byte(tt.content)
			}
			onloadtest.WriteFile(t, rec, content)
			_, err := Run(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "state file "+rec+": ") {
				t.Fatalf("err = %v; want the state file refused: %q", err, tt.want)
			}
			if got, _ := os.ReadFile(rec); !bytes.Equal(got, content) {
				t.Error("the refused state file was changed")
			}
			if !bytes.Equal(onloadtest.ReadFile(t, dst), dstBefore) || !bytes.Equal(onloadtest.ReadFile(t, other), bytes.Repeat([]byte{sentinel}, 4<<20)) {
				t.Error("a destination was written although the state file was refused")
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "gone.img")); !errors.Is(err, os.ErrNotExist) {
				t.Error("the missing destination was created")
			}
		})
	}
}

// A kill after the copy finished but before its record was removed: the
// rerun has nothing to copy, compares the whole range with --verify, and
// removes the record.
func TestARecordOfAFinishedCopyCopiesNothing(t *testing.T) {
	src, dst, rec, data := stateFixture(t, 2<<20, 2<<20)
	req := Request{Src: src, Dst: dst, Len: 1 << 20, LenSet: true, Mode: OnloadOnly, State: rec, Verify: true}
	if _, err := Run(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	record := func() {
		r := state.State{Copy: state.Copy{SrcOffset: 0, DstOffset: 0, Length: 1 << 20, Direction: state.Forward}, Done: 1 << 20}
		for i, p := range []string{src, dst} {
			e := &endpoint{path: p}
			f, _ := os.Open(p)
			ep, err := fileEndpoint(p, f)
			if err != nil {
				t.Fatal(err)
			}
			defer ep.close()
			e = ep
			if i == 0 {
				r.Src = e.identity(false)
			} else {
				r.Dst = e.identity(true)
			}
		}
		if err := state.Save(rec, &r); err != nil {
			t.Fatal(err)
		}
	}
	record()
	sum, err := Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if sum.ResumedFrom != 1<<20 || sum.Bytes != 0 || sum.OnloadedBytes != 0 || !sum.Verified || !strings.Contains(sum.Note, "nothing left to copy") {
		t.Errorf("summary %+v; want nothing copied, the whole range verified", sum)
	}
	if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file not removed: %v", err)
	}
	// A byte of the done range gone bad is found, at its offset.
	record()
	f, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	f.WriteAt([]byte{^data[777]}, 777)
	f.Close()
	_, err = Run(context.Background(), req)
	var me *MismatchError
	if !errors.As(err, &me) || me.DstOff != 777 {
		t.Fatalf("err = %v; want a mismatch at offset 777", err)
	}
}

// --verify on a resumed copy compares the whole range, not only the part
// this run copied: the bytes of the killed run are checked too.
func TestVerifyOnAResumedCopyComparesTheWholeRange(t *testing.T) {
	src, dst, rec, data := stateFixture(t, 4<<20, 4<<20)
	req := Request{Src: src, Dst: dst, Len: 4 << 20, LenSet: true, Mode: OnloadOnly, BufSize: 64 << 10, State: rec, Verify: true}
	ie := interruptAt(t, req, 2<<20)
	f, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	f.WriteAt([]byte{^data[4321]}, 4321)
	f.Close()
	sum, err := Run(context.Background(), req)
	var me *MismatchError
	if !errors.As(err, &me) || me.DstOff != 4321 || sum.ResumedFrom != ie.Done {
		t.Fatalf("resumed from %d (interrupt at %d), err = %v; want a mismatch at offset 4321", sum.ResumedFrom, ie.Done, err)
	}
}

func TestStateDoesNotGoWithNoSync(t *testing.T) {
	src, dst, rec, _ := stateFixture(t, 1<<20, 1<<20)
	_, err := Run(context.Background(), Request{Src: src, Dst: dst, State: rec, NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "--no-sync") {
		t.Fatalf("err = %v; want --state refused with --no-sync", err)
	}
	checkDest(t, dst, 0, nil)
}

// A dry run reads and checks the record, shows where the copy would
// resume, and writes nothing: no state file either.
func TestDryRunWithStateWritesNothing(t *testing.T) {
	src, dst, rec, _ := stateFixture(t, 2<<20, 2<<20)
	req := Request{Src: src, Dst: dst, Mode: OnloadOnly, State: rec, DryRun: true}
	if _, err := Run(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a dry run created the state file: %v", err)
	}
	req.DryRun, req.BufSize = false, 64<<10
	ie := interruptAt(t, req, 1<<20)
	recorded, _ := os.ReadFile(rec)
	before := onloadtest.ReadFile(t, dst)
	req.DryRun = true
	sum, err := Run(context.Background(), req)
	if err != nil || sum.ResumedFrom != ie.Done || sum.Bytes != 2<<20-ie.Done {
		t.Fatalf("dry run: resumed_from %d, bytes %d, %v; want %d and the rest", sum.ResumedFrom, sum.Bytes, err, ie.Done)
	}
	if got, _ := os.ReadFile(rec); !bytes.Equal(got, recorded) || !bytes.Equal(onloadtest.ReadFile(t, dst), before) {
		t.Fatal("a dry run wrote the state file or the destination")
	}
}

// When the record cannot be kept (its directory is gone), the copy stops
// with an error naming the state file rather than go on without it.
func TestACopyWhoseRecordCannotBeWrittenStops(t *testing.T) {
	swap(t, &cadence.bytes, 64<<10)
	swap(t, &cadence.every, 5*time.Millisecond)
	src, dst, _, _ := stateFixture(t, 4<<20, 4<<20)
	dir := t.TempDir()
	rec := filepath.Join(dir, "copy.state")
	real := onloadCopy
	swap(t, &onloadCopy, func(ctx context.Context, d, s onload.Endpoint, dOff, sOff, n int64, o onload.Options) (int64, error) {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
		// Paced, so that checkpoints fall due while it runs (not
		// before the first period, nor within one of the end).
		var w int64
		for w < n {
			time.Sleep(2 * time.Millisecond)
			k, err := real(ctx, d, s, dOff+w, sOff+w, min(256<<10, n-w), o)
			if w += k; err != nil {
				return w, err
			}
		}
		return w, nil
	})
	_, err := Run(context.Background(), Request{Src: src, Dst: dst, Mode: OnloadOnly, BufSize: 64 << 10, State: rec})
	if err == nil || !strings.Contains(err.Error(), "state file "+rec) {
		t.Fatalf("err = %v; want the copy stopped by the state file", err)
	}
}

// A state file that cannot be written at all (its directory is missing)
// stops the copy before its first write. One that can be written is not
// saved before the copy starts: its first record is made durable by the
// first checkpoint, off the copy's path, since until then a crash leaves
// no record and a rerun starts at byte 0, where this run did.
func TestTheStateFileIsCheckedBeforeTheFirstWriteAndSavedByACheckpoint(t *testing.T) {
	src, dst, rec, _ := stateFixture(t, 4<<20, 4<<20)
	before := onloadtest.ReadFile(t, dst)
	missing := filepath.Join(filepath.Dir(rec), "no-such-dir", "copy.state")
	_, err := Run(context.Background(), Request{Src: src, Dst: dst, Mode: OnloadOnly, BufSize: 64 << 10, State: missing})
	if err == nil || !strings.Contains(err.Error(), "state file "+missing) {
		t.Fatalf("err = %v; want a refusal naming the state file", err)
	}
	if !bytes.Equal(onloadtest.ReadFile(t, dst), before) {
		t.Fatal("the destination was written although the state file could not be")
	}

	swap(t, &cadence.bytes, 64<<10)
	var atFirstWrite error
	real := onloadCopy
	first := true
	swap(t, &onloadCopy, func(ctx context.Context, d, s onload.Endpoint, dOff, sOff, n int64, o onload.Options) (int64, error) {
		if first {
			first = false
			_, atFirstWrite = os.Stat(rec)
		}
		return real(ctx, d, s, dOff, sOff, n, o)
	})
	ie := interruptAt(t, Request{Src: src, Dst: dst, Mode: OnloadOnly, BufSize: 64 << 10, State: rec}, 2<<20)
	if !errors.Is(atFirstWrite, os.ErrNotExist) {
		t.Errorf("state file at the first write: %v; want none yet", atFirstWrite)
	}
	got, err := state.Load(rec)
	if err != nil || got == nil || got.Done != ie.Done || ie.Done == 0 {
		t.Fatalf("record after the interrupt: %+v, %v; want done = %d > 0", got, err, ie.Done)
	}
}

// The checkpoint cadence: none in the first period, none before the share
// bound's next, none when the run should end within a period at its rate
// so far (its own final fdatasync is as near), else one.
func TestCheckpointDue(t *testing.T) {
	began := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return began.Add(d) }
	const mib = 1 << 20
	tests := []struct {
		name        string
		now, next   time.Duration
		done, total int64
		want        bool
	}{
		{"within the first period", 1 * time.Second, 2 * time.Second, 256 * mib, 8192 * mib, false},
		{"after it, far from the end", 2 * time.Second, 2 * time.Second, 512 * mib, 8192 * mib, true},
		{"after it, ending within a period", 2 * time.Second, 2 * time.Second, 1536 * mib, 2048 * mib, false},
		{"ending just beyond a period", 2 * time.Second, 2 * time.Second, 1000 * mib, 2048 * mib, true},
		{"before the share bound's next", 10 * time.Second, 12 * time.Second, 1000 * mib, 100000 * mib, false},
		{"nothing done yet", 3 * time.Second, 2 * time.Second, 0, 100 * mib, true},
		{"all done", 3 * time.Second, 2 * time.Second, 100 * mib, 100 * mib, false},
	}
	for _, tt := range tests {
		if got := due(at(tt.now), began, at(tt.next), tt.done, tt.total, 2*time.Second); got != tt.want {
			t.Errorf("%s: due = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// publish wakes the saver for the byte count only when a checkpoint could
// be due: a copy that takes none must not pay a cross-thread wake-up per
// chunk for it.
func TestPublishKicksTheSaverOnlyFromKickAt(t *testing.T) {
	tests := []struct {
		name   string
		n      int64
		kickAt time.Duration // from now
		want   bool
	}{
		{"bytes due, before kickAt", cadence.bytes, time.Second, false},
		{"bytes due, after kickAt", cadence.bytes, -time.Second, true},
		{"bytes not due, after kickAt", cadence.bytes - 1, -time.Second, false},
	}
	for _, tt := range tests {
		c := &checkpointer{kick: make(chan struct{}, 1)}
		c.kickAt.Store(time.Now().Add(tt.kickAt).UnixNano())
		c.publish(tt.n)
		if got := len(c.kick) == 1; got != tt.want {
			t.Errorf("%s: kicked = %v, want %v", tt.name, got, tt.want)
		}
		if c.mark.Load() != tt.n {
			t.Errorf("%s: mark = %d, want %d", tt.name, c.mark.Load(), tt.n)
		}
	}
}
