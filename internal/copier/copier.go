// Package copier runs one copy: it opens both ends, gathers their facts,
// decides whether offload may be tried, asks plan for the chunks and runs
// each through offload or onload, keeping the promises of the behaviour
// contract (nothing written outside the destination range, refusals before
// any write, a resumable stop on interrupt).
package copier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/offload"
	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/plan"
	"github.com/blkcopy/blkcopy/internal/sysfs"
	"github.com/blkcopy/blkcopy/internal/verify"
)

// Mode is the user's --mode.
type Mode int

const (
	Auto Mode = iota
	OffloadOnly
	OnloadOnly
)

func (m Mode) String() string {
	switch m {
	case OffloadOnly:
		return "offload"
	case OnloadOnly:
		return "onload"
	}
	return "auto"
}

// ParseMode parses --mode.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return Auto, nil
	case "offload":
		return OffloadOnly, nil
	case "onload":
		return OnloadOnly, nil
	}
	return Auto, fmt.Errorf("invalid mode %q: want auto, offload or onload", s)
}

// Request is one copy as the user asked for it.
type Request struct {
	Src, Dst       string
	SrcOff, DstOff int64
	Len            int64
	LenSet         bool // Len was given; otherwise "to the end of the source, bounded by the destination"
	Mode           Mode
	BufSize        int64 // onload I/O size; 0 = from the device
	Verify         bool
	NoSync         bool
	DryRun         bool

	Sys sysfs.Sys
	// Start is called once the length is known, before the first write;
	// Progress as bytes complete (possibly from another goroutine).
	Start    func(total int64)
	Progress func(n int64)
	// Warn receives one-line warnings (offload disabled mid-run).
	Warn func(msg string)
}

// Summary is what happened; cmd prints it as text or JSON.
type Summary struct {
	Src                   string        `json:"src"`
	Dst                   string        `json:"dst"`
	SrcOffset             int64         `json:"src_offset"`
	DstOffset             int64         `json:"dst_offset"`
	Bytes                 int64         `json:"bytes"`
	OffloadedBytes        int64         `json:"offloaded_bytes"`
	OnloadedBytes         int64         `json:"onloaded_bytes"`
	Chunks                int64         `json:"chunks"`
	Mode                  string        `json:"mode"`
	FallbackReason        string        `json:"fallback_reason"`
	OffloadDisabledReason string        `json:"offload_disabled_reason"`
	Duration              time.Duration `json:"duration_ns"`
	BytesPerSecond        int64         `json:"bytes_per_second"`
	Verified              bool          `json:"verified"`
	Synced                bool          `json:"synced"`
	DryRun                bool          `json:"dry_run"`
	Backward              bool          `json:"backward"`
	Note                  string        `json:"note,omitempty"`
	// Dry runs: what the plan would do.
	PlannedOffloadBytes int64 `json:"planned_offload_bytes,omitempty"`
	PlannedOnloadBytes  int64 `json:"planned_onload_bytes,omitempty"`
	BufSize             int64 `json:"onload_io_size,omitempty"`
}

// MismatchError is a --verify (or canary) difference.
type MismatchError struct {
	Src, Dst       string
	SrcOff, DstOff int64 // offsets of the first differing byte
	// Block is set when only checksums of Block-sized blocks could be
	// compared (overlapping copy): the difference is within that block.
	Block int64
}

func (e *MismatchError) Error() string {
	if e.Block > 0 {
		return fmt.Sprintf("verify: %s differs from the source (as it was before the overlapping copy) within the %d bytes at offset %d", e.Dst, e.Block, e.DstOff)
	}
	return fmt.Sprintf("verify: %s at offset %d differs from %s at offset %d", e.Dst, e.DstOff, e.Src, e.SrcOff)
}

// ErrOffloadUnavailable wraps why --mode offload could not offload.
var ErrOffloadUnavailable = errors.New("offload unavailable")

// InterruptedError reports a stop on cancel at a chunk boundary.
type InterruptedError struct {
	Done, Total int64
	// Resume values: the request that finishes the copy.
	SrcOff, DstOff, Len int64
	Err                 error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted after %d of %d bytes", e.Done, e.Total)
}
func (e *InterruptedError) Unwrap() error { return e.Err }

// onloadRetryable says whether a failed offload of a chunk is worth one
// more try through the host: EIO from an offloaded copy can be the copy
// engine's failure rather than the medium's, and if the medium is really
// bad the onload retry fails too and stops the copy.
func onloadRetryable(err error) bool { return errors.Is(err, unix.EIO) }

// Run performs the copy described by req.
func Run(ctx context.Context, req Request) (sum *Summary, err error) {
	sum = &Summary{Src: req.Src, Dst: req.Dst, SrcOffset: req.SrcOff, DstOffset: req.DstOff, Mode: req.Mode.String(), DryRun: req.DryRun}
	src, err := openSource(req.Sys, req.Src)
	if err != nil {
		return sum, fmt.Errorf("open source: %w", err)
	}
	defer src.close()
	// Check the source range before opening (and perhaps creating) the
	// destination: a refused copy must leave no trace.
	if req.SrcOff > src.size {
		return sum, fmt.Errorf("source %s: offset %d is past its end (%d bytes)", src.path, req.SrcOff, src.size)
	}
	if req.LenSet && req.Len > src.size-req.SrcOff {
		return sum, fmt.Errorf("source %s: range %d+%d is past its end (%d bytes); refusing a short copy", src.path, req.SrcOff, req.Len, src.size)
	}
	dst, created, err := openDest(req.Sys, req.Dst, req.DryRun)
	if errors.Is(err, ErrInUse) || errors.Is(err, ErrReadOnly) {
		return sum, err // already "destination PATH: in use ..."
	}
	if err != nil {
		return sum, fmt.Errorf("open destination: %w", err)
	}
	defer dst.close()
	if created {
		sum.Note = "created " + dst.path
	}

	if dst.block && req.DstOff > dst.size {
		return sum, fmt.Errorf("destination %s: offset %d is past its end (%d bytes)", dst.path, req.DstOff, dst.size)
	}
	n := req.Len
	if !req.LenSet {
		n = src.size - req.SrcOff
		if dst.block {
			n = min(n, dst.size-req.DstOff)
		}
	}
	if dst.block && n > dst.size-req.DstOff {
		return sum, fmt.Errorf("destination %s: range %d+%d is past its end (%d bytes); refusing to write", dst.path, req.DstOff, n, dst.size)
	}
	if req.DstOff > (1<<63-1)-n {
		return sum, fmt.Errorf("destination %s: offset %d + length %d overflows", dst.path, req.DstOff, n)
	}
	sum.Bytes = n

	sameDevice := src.disk == dst.disk
	srcAbs, dstAbs := req.SrcOff+src.start, req.DstOff+dst.start
	if n == 0 {
		sum.Note = joinNote(sum.Note, "nothing to copy: the range is empty")
		return sum, nil
	}
	if sameDevice && srcAbs == dstAbs {
		sum.Note = joinNote(sum.Note, "nothing to do: source and destination are the same range of the same device")
		return sum, nil
	}

	offMax, reason := offloadDecision(req.Mode, src, dst)
	sum.FallbackReason = reason
	if req.Mode == OffloadOnly && offMax == 0 {
		return sum, fmt.Errorf("%w: %s", ErrOffloadUnavailable, reason)
	}
	align := max(src.lbs, dst.lbs)
	p, err := plan.New(plan.Input{
		Src: srcAbs, Dst: dstAbs, Len: n, SameDevice: sameDevice,
		BlockSize: align, OffloadMax: offMax,
	})
	if err != nil {
		return sum, err
	}
	st := p.Stats()
	sum.Backward = p.Backward()
	sum.PlannedOffloadBytes, sum.PlannedOnloadBytes = st.OffloadBytes, st.OnloadBytes
	if offMax > 0 && st.OnloadBytes > 0 {
		if r := p.Reason(); r != "" {
			sum.FallbackReason = r
		}
		if req.Mode == OffloadOnly {
			return sum, fmt.Errorf("%w: %d of %d bytes cannot be offloaded: %s", ErrOffloadUnavailable, st.OnloadBytes, n, sum.FallbackReason)
		}
	}
	sum.BufSize = bufSize(req.BufSize, src, dst)
	if req.DryRun {
		sum.Chunks = st.Chunks
		return sum, nil
	}

	r := &runner{req: req, sum: sum, src: src, dst: dst, offloadOK: offMax > 0, backward: p.Backward()}
	if req.Verify && sameDevice && abs(srcAbs-dstAbs) < n {
		if r.srcSums, err = sumRange(ctx, src.path, req.SrcOff, n); err != nil {
			return sum, err
		}
	}
	if req.Start != nil {
		req.Start(n)
	}
	began := time.Now()
	runErr := r.run(ctx, p, srcAbs-req.SrcOff, dstAbs-req.DstOff)
	sum.Duration = time.Since(began)
	if sum.Duration > 0 {
		sum.BytesPerSecond = int64(float64(sum.OffloadedBytes+sum.OnloadedBytes) / sum.Duration.Seconds())
	}
	// Sync what was written even when the copy stopped, so the bytes an
	// interrupt report calls done are on the medium.
	if !req.NoSync {
		if err := unix.Fdatasync(int(dst.file.Fd())); err != nil {
			return sum, errors.Join(runErr, fmt.Errorf("fdatasync %s: %w", dst.path, err))
		}
		sum.Synced = true
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			ie := &InterruptedError{Done: r.done, Total: n, Len: n - r.done, Err: runErr}
			ie.SrcOff, ie.DstOff = req.SrcOff, req.DstOff
			if !r.backward {
				ie.SrcOff, ie.DstOff = req.SrcOff+r.done, req.DstOff+r.done
			}
			return sum, ie
		}
		return sum, runErr
	}
	if req.Verify {
		if err := r.verifyAll(ctx); err != nil {
			return sum, err
		}
		sum.Verified = true
	}
	return sum, nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// bufSize picks the onload I/O size: the user's, else what the devices
// say they like, else the onload default.
func bufSize(user int64, src, dst *endpoint) int64 {
	if user > 0 {
		return user
	}
	var maxKB, opt int64
	for _, e := range []*endpoint{src, dst} {
		if e.dev == nil {
			continue
		}
		if e.dev.MaxSectorsKB > 0 && (maxKB == 0 || e.dev.MaxSectorsKB < maxKB) {
			maxKB = e.dev.MaxSectorsKB
		}
		opt = max(opt, e.dev.OptimalIOSize)
	}
	return onload.DefaultBufSize(maxKB, opt)
}

// offloadDecision returns the largest offload chunk for this pair (0 = no
// offload) and, when 0, why not, in words for the summary.
func offloadDecision(mode Mode, src, dst *endpoint) (int64, string) {
	switch {
	case mode == OnloadOnly:
		return 0, "offload not requested (--mode onload)"
	case src.block != dst.block:
		return 0, fmt.Sprintf("source is a %s and destination a %s; copy_file_range needs two of the same kind", src.kind(), dst.kind())
	case !src.block:
		// Between files the kernel's copy_file_range always works or
		// says why not; cap a call so progress and interrupts stay live.
		return fileOffloadMax, ""
	case src.dev == nil || dst.dev == nil:
		return 0, "copy limits unknown (no sysfs entry for the device)"
	case !src.dev.Copy.CanOffload():
		return 0, strings.TrimPrefix(src.dev.Copy.Verdict(), "no offload: ")
	case !dst.dev.Copy.CanOffload():
		return 0, strings.TrimPrefix(dst.dev.Copy.Verdict(), "no offload: ")
	case src.disk != dst.disk:
		// The posted kernel series sends a cross-namespace NVMe copy to
		// the source namespace; only same-disk copies are safe to offload.
		return 0, fmt.Sprintf("source and destination are on different disks (%s, %s); offload is only used within one disk", src.dev.Disk, dst.dev.Disk)
	}
	return src.dev.Copy.MaxBytes, ""
}

// Test seams: tests swap these to inject what real devices cannot produce on
// demand (an offload that reports success without copying, as the posted
// kernel series was seen to; a copy that silently corrupts).
var (
	offloadCopy = offload.Copy
	onloadCopy  = onload.Copy
)

// fileOffloadMax bounds one copy_file_range request between regular files
// (a variable only so tests can make interrupts land between chunks).
var fileOffloadMax int64 = 1 << 30

// fileCanaryBytes is how much of the first copy_file_range chunk between
// regular files is read back.
const fileCanaryBytes = 1 << 20

type runner struct {
	req       Request
	sum       *Summary
	src, dst  *endpoint
	offloadOK bool
	canaryRun bool
	backward  bool
	done      int64      // bytes of completed chunks (head, or tail when backward)
	srcSums   *rangeSums // overlapping --verify: the source before the copy
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// run executes the plan. srcShift/dstShift turn the plan's whole-disk
// offsets back into offsets on the opened files.
func (r *runner) run(ctx context.Context, p *plan.Plan, srcShift, dstShift int64) error {
	for c := range p.All() {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.Src -= srcShift
		c.Dst -= dstShift
		r.sum.Chunks++
		var err error
		if c.Method == plan.Offload && r.offloadOK {
			err = r.offloadChunk(ctx, c)
		} else {
			err = r.onloadChunk(ctx, c.Src, c.Dst, c.Len)
		}
		if err != nil {
			return err
		}
		r.done += c.Len
	}
	return nil
}

// onloadChunk copies one chunk through the host. It does not sync: Run
// syncs once at the end (or on a stop), not once per chunk, which would
// cost a cache flush per chunk on overlapping copies.
func (r *runner) onloadChunk(ctx context.Context, srcOff, dstOff, n int64) error {
	w, err := onloadCopy(ctx, r.dst.onload(), r.src.onload(), dstOff, srcOff, n, onload.Options{BufSize: r.sum.BufSize, Progress: r.req.Progress, NoSync: true})
	r.sum.OnloadedBytes += w
	if err != nil && errors.Is(err, context.Canceled) && !r.backward {
		// A forward copy's written prefix is a valid resume point.
		r.done += w
	}
	return err
}

func (r *runner) offloadChunk(ctx context.Context, c plan.Chunk) error {
	n, err := offloadCopy(ctx, r.dst.file, r.src.file, c.Dst, c.Src, c.Len, r.req.Progress)
	r.sum.OffloadedBytes += n
	switch {
	case err == nil:
		if !r.canaryRun {
			r.canaryRun = true
			return r.canary(ctx, c)
		}
		return nil
	case errors.Is(err, context.Canceled):
		if !r.backward {
			r.done += n
		}
		return err
	case offload.Unavailable(err):
		if r.req.Mode == OffloadOnly {
			return fmt.Errorf("%w: %w", ErrOffloadUnavailable, err)
		}
		r.disableOffload(fmt.Sprintf("copy_file_range failed (%v); copying through the host instead", err))
		return r.onloadChunk(ctx, c.Src+n, c.Dst+n, c.Len-n)
	case onloadRetryable(err) && r.req.Mode == Auto:
		r.disableOffload(fmt.Sprintf("offloaded copy failed (%v); retrying through the host", err))
		return r.onloadChunk(ctx, c.Src+n, c.Dst+n, c.Len-n)
	default:
		return err
	}
}

// canary reads back the first offloaded chunk: a kernel with the posted
// series was seen to report full success while the device rejected every
// Copy command, so a successful return is not proof the data moved. On
// block devices the whole chunk is compared (at most copy_max_bytes).
// Between regular files copy_file_range is the kernel's mature path (cp
// uses it unchecked) and a chunk is up to fileOffloadMax, so only its head
// is compared: enough to catch a copy that did nothing, without reading
// back a reflinked gigabyte.
func (r *runner) canary(ctx context.Context, c plan.Chunk) error {
	n := c.Len
	if !r.src.block {
		n = min(n, fileCanaryBytes)
	}
	diff, err := verify.Compare(ctx, r.src.onload(), r.dst.onload(), c.Src, c.Dst, n, r.sum.BufSize)
	if err != nil {
		return fmt.Errorf("offload check: %w", err)
	}
	if diff < 0 {
		return nil
	}
	r.sum.OffloadedBytes -= c.Len
	r.disableOffload(fmt.Sprintf("copy_file_range reported success but %s at offset %d does not match the source; offload is not trustworthy here", r.dst.path, c.Dst+diff))
	if err := r.onloadChunk(ctx, c.Src, c.Dst, c.Len); err != nil {
		return err
	}
	if r.req.Mode == OffloadOnly {
		// The chunk was redone through the host so the bytes reported
		// done are right; the rest is refused as --mode offload asks.
		r.done += c.Len
		return fmt.Errorf("%w: %s", ErrOffloadUnavailable, r.sum.OffloadDisabledReason)
	}
	return nil
}

func (r *runner) disableOffload(reason string) {
	if !r.offloadOK {
		return
	}
	r.offloadOK = false
	r.sum.OffloadDisabledReason = reason
	if r.req.Warn != nil {
		r.req.Warn("offload disabled for this run: " + reason)
	}
}

// verifyAll compares the whole range after the copy. Overlapping copies on
// one device compare checksums taken of the source before the copy, since
// the copy overwrote part of it.
func (r *runner) verifyAll(ctx context.Context) error {
	if r.srcSums != nil {
		got, err := sumRange(ctx, r.dst.path, r.req.DstOff, r.sum.Bytes)
		if err != nil {
			return err
		}
		if i := r.srcSums.firstDiff(got); i >= 0 {
			off := int64(i) * r.srcSums.block
			return &MismatchError{Src: r.src.path, Dst: r.dst.path, SrcOff: r.req.SrcOff + off, DstOff: r.req.DstOff + off, Block: min(r.srcSums.block, r.sum.Bytes-off)}
		}
		return nil
	}
	diff, err := verify.Compare(ctx, r.src.onload(), r.dst.onload(), r.req.SrcOff, r.req.DstOff, r.sum.Bytes, r.sum.BufSize)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if diff >= 0 {
		return &MismatchError{Src: r.src.path, Dst: r.dst.path, SrcOff: r.req.SrcOff + diff, DstOff: r.req.DstOff + diff}
	}
	return nil
}
