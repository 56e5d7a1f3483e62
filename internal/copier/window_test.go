package copier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blkcopy/blkcopy/internal/copypath"
)

// fakePath is an offload path that copies with pread/pwrite, so tests can
// shape its limits, timing and failures while the data still moves.
type fakePath struct {
	lim copypath.Limits
	// hook runs before each request copies; a non-nil error fails the
	// request after copying done bytes (a prefix).
	hook func(call int64, dstOff, n int64) (done int64, err error)
	s    *fakeSession
}

func (p *fakePath) Name() string { return "fake" }
func (p *fakePath) Open(pair copypath.Pair) (copypath.Session, error) {
	p.s = &fakeSession{p: p, pair: pair}
	return p.s, nil
}

type fakeSession struct {
	p                *fakePath
	pair             copypath.Pair
	calls            atomic.Int64
	inflight, maxInf atomic.Int64
	mu               sync.Mutex
	lens             []int64
}

func (s *fakeSession) Limits() copypath.Limits { return s.p.lim }
func (s *fakeSession) Requests() int64         { return s.calls.Load() }
func (s *fakeSession) Close() error            { return nil }

func (s *fakeSession) Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	call := s.calls.Add(1)
	cur := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInf.Load()
		if cur <= m || s.maxInf.CompareAndSwap(m, cur) {
			break
		}
	}
	s.mu.Lock()
	s.lens = append(s.lens, n)
	s.mu.Unlock()
	want, ferr := n, error(nil)
	if s.p.hook != nil {
		if d, err := s.p.hook(call, dstOff, n); err != nil {
			want, ferr = d, err
		}
	}
	buf := make([]byte, want)
	if _, err := s.pair.Src.File.ReadAt(buf, srcOff); err != nil {
		return 0, err
	}
	if _, err := s.pair.Dst.File.WriteAt(buf, dstOff); err != nil {
		return 0, err
	}
	if progress != nil && want > 0 {
		progress(want)
	}
	return want, ferr
}

func withFakePath(t *testing.T, p *fakePath) {
	swap(t, &offloadPaths, []copypath.Path{p})
}

var windowLimits = copypath.Limits{Unit: 64 << 10, Align: 4096, Request: 256 << 10, InFlight: 4, Canary: 64 << 10}

func TestOffloadKeepsSeveralRequestsInFlightWithoutOverlap(t *testing.T) {
	p := &fakePath{lim: windowLimits, hook: func(call, _, _ int64) (int64, error) {
		time.Sleep(2 * time.Millisecond) // long enough for requests to meet
		return 0, nil
	}}
	withFakePath(t, p)
	src, dst, data := fixture(t, 4<<20, 4<<20)
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	checkDest(t, dst, 0, data)
	if got := p.s.maxInf.Load(); got != 4 {
		t.Errorf("at most %d requests were in flight at once, want the path's InFlight of 4", got)
	}
	if p.s.lens[0] != windowLimits.Canary {
		t.Errorf("first request was %d bytes, want the canary's %d", p.s.lens[0], windowLimits.Canary)
	}
	// 4 MiB: one 64 KiB canary, the rest of its 256 KiB chunk, 15 more.
	if sum.OffloadRequests != 17 || sum.OffloadedBytes != 4<<20 || sum.OffloadPath != "fake" {
		t.Errorf("offload_requests %d offloaded %d path %q; want 17 requests, all 4 MiB by fake", sum.OffloadRequests, sum.OffloadedBytes, sum.OffloadPath)
	}
}

func TestOverlappingOffloadRunsOneRequestAtATime(t *testing.T) {
	for _, tt := range []struct {
		name           string
		srcOff, dstOff int64
	}{{"destination after source", 0, 300 << 10}, {"destination before source", 300 << 10, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePath{lim: windowLimits, hook: func(call, _, _ int64) (int64, error) {
				time.Sleep(time.Millisecond)
				return 0, nil
			}}
			withFakePath(t, p)
			src, _, data := fixture(t, 4<<20, 0)
			const n = 3 << 20
			if _, err := Run(context.Background(), Request{Src: src, Dst: src, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: n, LenSet: true}); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(data)
			copy(want[tt.dstOff:], data[tt.srcOff:tt.srcOff+n])
			got, _ := os.ReadFile(src)
			if !bytes.Equal(got, want) {
				t.Fatal("overlapping offloaded copy is not the memmove result")
			}
			if m := p.s.maxInf.Load(); m != 1 {
				t.Errorf("%d requests in flight at once on overlapping ranges; two in flight may read what the other writes", m)
			}
			for _, l := range p.s.lens {
				if l > 300<<10 {
					t.Errorf("request of %d bytes is longer than the 300 KiB distance", l)
				}
			}
		})
	}
}

func TestUnavailableInTheWindowFallsBackAtTheExactByte(t *testing.T) {
	p := &fakePath{lim: windowLimits, hook: func(call, dstOff, n int64) (int64, error) {
		if call == 5 {
			// Later requests are already in flight and finish first.
			return 12288, copypath.Unavailable(syscall.EOPNOTSUPP)
		}
		time.Sleep(3 * time.Millisecond)
		return 0, nil
	}}
	withFakePath(t, p)
	src, dst, data := fixture(t, 4<<20, 4<<20)
	sum, err := Run(context.Background(), Request{Src: src, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	checkDest(t, dst, 0, data)
	if sum.OffloadDisabledReason == "" || sum.OnloadedBytes == 0 || sum.OffloadedBytes+sum.OnloadedBytes != 4<<20 {
		t.Errorf("offloaded %d onloaded %d reason %q; want a fallback that copies each byte once", sum.OffloadedBytes, sum.OnloadedBytes, sum.OffloadDisabledReason)
	}
}

func TestRealErrorInTheWindowStopsTheCopy(t *testing.T) {
	p := &fakePath{lim: windowLimits, hook: func(call, dstOff, n int64) (int64, error) {
		switch {
		case call == 4:
			return 0, syscall.ENOSPC
		case call > 4:
			// Requests sent before the failure was seen stay in flight
			// until it has surely been (its result is the only one that
			// can arrive meanwhile), so the count below does not depend
			// on how the goroutines were scheduled.
			time.Sleep(200 * time.Millisecond)
		}
		return 0, nil
	}}
	withFakePath(t, p)
	src, dst, _ := fixture(t, 4<<20, 4<<20)
	_, err := Run(context.Background(), Request{Src: src, Dst: dst})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if c := p.s.calls.Load(); c > int64(4+windowLimits.InFlight) {
		t.Errorf("%d requests issued after a real error; want no new request once it is seen", c)
	}
}

// An interrupt while later requests finish before earlier ones: the
// resume point is the finished prefix, and resuming gives the full copy.
func TestInterruptInTheWindowResumesFromTheFinishedPrefix(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &fakePath{lim: windowLimits, hook: func(call, dstOff, n int64) (int64, error) {
		switch {
		case call == 6:
			cancel()
			time.Sleep(20 * time.Millisecond) // finishes last
		case call > 6:
			time.Sleep(time.Millisecond)
		}
		return 0, nil
	}}
	withFakePath(t, p)
	src, dst, data := fixture(t, 4<<20, 4<<20)
	req := Request{Src: src, Dst: dst, Len: 4 << 20, LenSet: true}
	_, err := Run(ctx, req)
	var ie *InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want InterruptedError", err)
	}
	if ie.Done <= 0 || ie.Done >= 4<<20 || ie.Done%windowLimits.Align != 0 {
		t.Fatalf("done = %d; want a partial, aligned prefix", ie.Done)
	}
	// Nothing past the reported prefix may be relied on; the resume
	// rewrites it. Zero the destination past it to prove that.
	f, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte{sentinel}, int(4<<20-ie.Done)), ie.Done)
	f.Close()
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got[:ie.Done], data[:ie.Done]) {
		t.Fatal("the reported done prefix is not all copied")
	}
	req.SrcOff, req.DstOff, req.Len = ie.SrcOff, ie.DstOff, ie.Len
	if _, err := Run(context.Background(), req); err != nil {
		t.Fatalf("resume: %v", err)
	}
	checkDest(t, dst, 0, data)
}

// A backward (overlapping) copy split into requests smaller than its
// chunks: an interrupt's done bytes must be a suffix of the range, or the
// resume would skip bytes that were never copied.
func TestInterruptedBackwardCopyResumesFromTheFinishedSuffix(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &fakePath{lim: windowLimits, hook: func(call, dstOff, n int64) (int64, error) {
		// Slow requests stay smaller than the 256 KiB chunks (see adapt):
		// 64 KiB per 100 ms asks for 160 KiB, two units.
		time.Sleep(100 * time.Millisecond)
		if call == 4 {
			cancel()
		}
		return 0, nil
	}}
	withFakePath(t, p)
	src, _, data := fixture(t, 4<<20, 0)
	const srcOff, dstOff, n = 0, 300 << 10, 3 << 20
	want := bytes.Clone(data)
	copy(want[dstOff:], data[srcOff:srcOff+n])
	req := Request{Src: src, Dst: src, SrcOff: srcOff, DstOff: dstOff, Len: n, LenSet: true}
	sum, err := Run(ctx, req)
	var ie *InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want InterruptedError", err)
	}
	if !sum.Backward || ie.Done <= 0 || ie.Done >= n || ie.SrcOff != srcOff || ie.DstOff != dstOff {
		t.Fatalf("backward %v, done %d, resume at %d/%d; want a partial backward copy resumed from the head", sum.Backward, ie.Done, ie.SrcOff, ie.DstOff)
	}
	got, _ := os.ReadFile(src)
	if !bytes.Equal(got[dstOff+n-ie.Done:dstOff+n], want[dstOff+n-ie.Done:dstOff+n]) {
		t.Fatalf("the last %d bytes, reported done, are not all copied", ie.Done)
	}
	if ie.Done%(256<<10) == 0 {
		t.Errorf("done = %d, whole chunks: the interrupt did not land between requests of one chunk", ie.Done)
	}
	req.Len = ie.Len
	if _, err := Run(context.Background(), req); err != nil {
		t.Fatalf("resume: %v", err)
	}
	got, _ = os.ReadFile(src)
	if !bytes.Equal(got, want) {
		t.Fatal("after resuming, the overlapping copy is not the memmove result")
	}
}

// Request sizes grow from one unit, and past one device command they are
// whole commands: a request of 2.5 commands would cost a third command
// for half of one.
func TestAdaptKeepsRequestsToWholeCommands(t *testing.T) {
	const unit, cmd = 128 << 10, 1 << 20 // NVMe: MSSRL 256 blocks, 8 ranges per command
	tests := []struct {
		name    string
		cur     int64
		n       int64
		took    time.Duration
		command int64
		want    int64
	}{
		{"grows at most 4x, in units, below a command", unit, unit, time.Millisecond, cmd, 4 * unit},
		{"past a command: whole commands", 3 * unit, 3 * unit, 20 * time.Millisecond, cmd, cmd},
		{"no command size: whole units", 3 * unit, 3 * unit, 20 * time.Millisecond, 0, 12 * unit},
		{"slow: shrinks, never below a unit", 4 * cmd, unit, time.Second, cmd, unit},
		{"capped by Request", 8 * cmd, 8 * cmd, time.Millisecond, cmd, 16 * cmd},
	}
	for _, tt := range tests {
		r := &runner{lim: copypath.Limits{Unit: unit, Command: tt.command, Request: 16 * cmd}, reqSize: tt.cur}
		r.adapt(tt.n, tt.took)
		if r.reqSize != tt.want {
			t.Errorf("%s: adapt(%d, %s) from %d = %d, want %d", tt.name, tt.n, tt.took, tt.cur, r.reqSize, tt.want)
		}
	}
}
