package offload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/blkcopy/blkcopy/internal/copypath"
)

// Request sizes for block devices. The kernel splits one copy_file_range
// call into copy_max_bytes pieces and submits them all at once
// (block/blk-copy.c, blkdev_copy_offload), so a call of one limit's worth
// keeps a single command in flight: on the seed kernel under QEMU that ran
// at 136-160 MiB/s against 490-760 MiB/s for calls of 1 MiB and more
// (issue 8). A call carries up to 128 MiB instead, and two run at once, so
// one is in the kernel while the other returns. The copier sizes requests
// by how fast the last one ran (about a quarter second each), so progress
// and Ctrl-C stay live; this is only the cap.
//
// Fewer, larger calls won where units are small: with 64 KiB units (512
// MiB in the rig, medians of 3 rounds) calls of 16 MiB, 4 at once, ran at
// 0.84-0.87x one call of the whole range in three runs, calls of 128 MiB,
// 2 at once, at 0.94x, 1.01x and 1.18x; a call costs the guest a system
// call and a thread hand-off each, and there were 45 against 18-19. With 1 MiB and
// 8 MiB units the two measured within the runs' noise of each other.
var (
	blockRequest  int64 = 128 << 20
	blockInFlight       = 2
)

// Between regular files one call may be a reflink of a gigabyte or an
// in-kernel copy at disk speed; a gigabyte keeps a call under a few
// seconds and the canary reads back only the head of the first one.
const fileRequest = 1 << 30

// Path is the copy_file_range offload path: between block devices on a
// kernel with the copy offload series (both opened O_DIRECT, the device
// reporting copy limits), and between regular files on every kernel.
type Path struct {
	// CopyFunc replaces Copy; tests use it to inject short copies, lies
	// and errors that real devices do not produce on demand.
	CopyFunc func(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error)
	// FileRequest bounds one call between regular files (0: 1 GiB); tests
	// make it small so interrupts land between calls.
	FileRequest int64
}

// Name is the path's name in JSON and --offload-path.
func (Path) Name() string { return "copy_file_range" }

// Open decides whether copy_file_range can offload this pair and with
// which limits. The reasons are what `fallback_reason` shows.
func (p Path) Open(pair copypath.Pair) (copypath.Session, error) {
	src, dst := pair.Src, pair.Dst
	s := &session{copy: p.CopyFunc, src: src.File, dst: dst.File}
	if s.copy == nil {
		s.copy = Copy
	}
	switch {
	case src.Block != dst.Block:
		return nil, copypath.Unavailablef("source is a %s and destination a %s; copy_file_range needs two of the same kind", kind(src), kind(dst))
	case !src.Block:
		req := p.FileRequest
		if req <= 0 {
			req = fileRequest
		}
		s.lim = copypath.Limits{Unit: req, Align: 1, Request: req, InFlight: 1, Canary: min(req, copypath.CanaryMax)}
		return s, nil
	case src.Dev == nil || dst.Dev == nil:
		return nil, copypath.Unavailablef("copy limits unknown (no sysfs entry for the device)")
	case !src.Dev.Copy.CanOffload():
		return nil, copypath.Unavailablef("%s", strings.TrimPrefix(src.Dev.Copy.Verdict(), "no offload: "))
	case !dst.Dev.Copy.CanOffload():
		return nil, copypath.Unavailablef("%s", strings.TrimPrefix(dst.Dev.Copy.Verdict(), "no offload: "))
	case !pair.SameDisk():
		// The posted kernel series sends a cross-namespace NVMe copy to
		// the source namespace; only same-disk copies are safe to offload.
		return nil, copypath.Unavailablef("source and destination are on different disks (%s, %s); offload is only used within one disk", src.Dev.Disk, dst.Dev.Disk)
	}
	align := max(src.LBS, dst.LBS, 1)
	unit := min(src.Dev.Copy.MaxBytes, dst.Dev.Copy.MaxBytes) &^ (align - 1)
	if unit < align {
		return nil, copypath.Unavailablef("offload limit of %d bytes is smaller than the %d-byte block size", src.Dev.Copy.MaxBytes, align)
	}
	req := max(blockRequest/unit, 1) * unit
	// The canary reads back one unit (64 KiB at most): one device command,
	// cheap to compare, and enough to catch a kernel whose every command
	// fails silently.
	s.lim = copypath.Limits{Unit: unit, Align: align, Request: req, InFlight: blockInFlight, Canary: copypath.CanaryFor(unit, align)}
	return s, nil
}

func kind(e copypath.Endpoint) string {
	if e.Block {
		return "block device"
	}
	return "regular file"
}

type session struct {
	copy     func(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error)
	src, dst *os.File
	lim      copypath.Limits
	calls    atomic.Int64
}

func (s *session) Limits() copypath.Limits { return s.lim }
func (s *session) Requests() int64         { return s.calls.Load() }
func (s *session) Close() error            { return nil }

// Copy runs one request. Copy's own loop continues short returns; each
// call it makes counts as a request.
func (s *session) Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	calls := func(k int64) {
		s.calls.Add(1)
		if progress != nil {
			progress(k)
		}
	}
	done, err := s.copy(ctx, s.dst, s.src, dstOff, srcOff, n, calls)
	if done < n && err == nil {
		return done, fmt.Errorf("copy_file_range %s -> %s at offset %d: copied %d of %d bytes", s.src.Name(), s.dst.Name(), srcOff, done, n)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.calls.Add(1) // the failing call was issued too
		if Unavailable(err) {
			return done, copypath.Unavailable(err)
		}
	}
	return done, err
}
