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

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/nvme"
	"github.com/blkcopy/blkcopy/internal/offload"
	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/plan"
	"github.com/blkcopy/blkcopy/internal/scsi"
	"github.com/blkcopy/blkcopy/internal/sparse"
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
	// OffloadPath limits offload to the path of that name
	// ("copy_file_range", "nvme", "scsi-xcopy"); "" tries each in order.
	OffloadPath string
	BufSize     int64 // onload I/O size; 0 = from the device
	Verify      bool
	NoSync      bool
	DryRun      bool
	// Sparse: what becomes of holes and zeroes (see package sparse).
	Sparse sparse.Mode
	// State is the --state file: the copy records in it, durably, how far
	// it got, and a copy that finds a record of itself there resumes from
	// it (checkpoint.go). Empty: no record.
	State string

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
	Src                   string `json:"src"`
	Dst                   string `json:"dst"`
	SrcOffset             int64  `json:"src_offset"`
	DstOffset             int64  `json:"dst_offset"`
	Bytes                 int64  `json:"bytes"`
	OffloadedBytes        int64  `json:"offloaded_bytes"`
	OnloadedBytes         int64  `json:"onloaded_bytes"`
	Chunks                int64  `json:"chunks"`
	Mode                  string `json:"mode"`
	FallbackReason        string `json:"fallback_reason"`
	OffloadDisabledReason string `json:"offload_disabled_reason"`
	// OffloadPath names the path that offloaded ("copy_file_range",
	// "nvme", "scsi-xcopy"), empty when none served; OffloadRequests counts the system
	// calls or device commands it issued.
	OffloadPath     string        `json:"offload_path"`
	OffloadRequests int64         `json:"offload_requests"`
	Duration        time.Duration `json:"duration_ns"`
	BytesPerSecond  int64         `json:"bytes_per_second"`
	Verified        bool          `json:"verified"`
	Synced          bool          `json:"synced"`
	DryRun          bool          `json:"dry_run"`
	Backward        bool          `json:"backward"`
	// ResumedFrom is how many bytes of the range a --state record had
	// done before this run; Bytes, OffloadedBytes and OnloadedBytes count
	// this run's copy of the rest.
	ResumedFrom int64  `json:"resumed_from"`
	Note        string `json:"note,omitempty"`
	// Sparse is --sparse. SparseBytes are source holes, neither read nor
	// written as data; ZeroBytes were read, found zero and became holes
	// or write-zeroes instead of data writes (they count in
	// OnloadedBytes, SparseBytes do not).
	Sparse      string `json:"sparse"`
	SparseBytes int64  `json:"sparse_bytes"`
	ZeroBytes   int64  `json:"zero_bytes"`
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
	// The whole request's offsets (Total is its length): with --state,
	// running it again resumes from the record.
	ReqSrcOff, ReqDstOff int64
	Err                  error
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
	sum = &Summary{Src: req.Src, Dst: req.Dst, SrcOffset: req.SrcOff, DstOffset: req.DstOff, Mode: req.Mode.String(), DryRun: req.DryRun, Sparse: req.Sparse.String()}
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
	prior, err := loadState(req)
	if err != nil {
		return sum, err
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

	overlap := sameDevice && abs(srcAbs-dstAbs) < n
	backward := overlap && dstAbs > srcAbs
	full, fullOverlap := n, overlap
	var ck *checkpointer
	if req.State != "" {
		if ck, err = newCheckpointer(req, prior, src, dst, n, backward); err != nil {
			return sum, err
		}
		// Resume after what the record has done, as an interrupt's resume
		// command would: a forward copy after its done head, a backward
		// one before its done tail.
		done := ck.base
		if !backward {
			req.SrcOff, req.DstOff, srcAbs, dstAbs = req.SrcOff+done, req.DstOff+done, srcAbs+done, dstAbs+done
		}
		n -= done
		req.Len, req.LenSet, sum.Bytes, sum.ResumedFrom = n, true, n, done
		if overlap = sameDevice && abs(srcAbs-dstAbs) < n; overlap {
			ck.lead = abs(srcAbs - dstAbs)
		}
		if n == 0 {
			return sum, finishedEarlier(ctx, req, sum, src, dst, full, fullOverlap)
		}
	}
	mode := req.Mode
	if req.Sparse != sparse.Auto && !src.block && !dst.block && mode != OffloadOnly {
		// always (cp --sparse=always): read the data to find zero blocks
		// in it, which copy_file_range copies as data. never: write
		// every byte, which copy_file_range does not do where it clones
		// (a reflink on XFS or btrfs shares the source's extents and
		// keeps its holes).
		mode = OnloadOnly
	}
	sess, reason, err := openPath(mode, req.OffloadPath, copypath.Pair{Src: src.ep(), Dst: dst.ep(), Overlap: overlap})
	if err != nil {
		return sum, err
	}
	if mode != req.Mode {
		reason = "--sparse " + req.Sparse.String() + " copies regular files through the host (always: to find zero blocks; never: to write every byte)"
	}
	if sess != nil {
		defer sess.Close()
		sum.OffloadPath = sess.name
	}
	sum.FallbackReason = reason
	if req.Mode == OffloadOnly && sess == nil {
		return sum, fmt.Errorf("%w: %s", ErrOffloadUnavailable, reason)
	}
	in := plan.Input{Src: srcAbs, Dst: dstAbs, Len: n, SameDevice: sameDevice, BlockSize: max(src.lbs, dst.lbs), Backward: backward}
	if ck != nil && backward {
		// A backward chunk's bytes count as done only once it is whole
		// (the done suffix grows chunk by chunk): bound them for the record.
		in.OnloadMax = cadence.bytes
	}
	if sess != nil {
		lim := sess.Limits()
		in.BlockSize, in.OffloadMax = lim.Align, lim.Request
	}
	p, err := plan.New(in)
	if err != nil {
		return sum, err
	}
	st := p.Stats()
	sum.Backward = p.Backward()
	sum.PlannedOffloadBytes, sum.PlannedOnloadBytes = st.OffloadBytes, st.OnloadBytes
	if sess != nil && st.OnloadBytes > 0 {
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

	r := &runner{req: req, sum: sum, src: src, dst: dst, backward: p.Backward(), ck: ck}
	if !fullOverlap {
		// --verify on a resumed copy compares the whole range; an
		// overlapping copy can only check what this run copied.
		r.verifyFrom = sum.ResumedFrom
	}
	if r.holes, err = newHoles(req.Sparse, src, dst, overlap); err != nil {
		return sum, err
	}
	defer r.holes.close()
	if err := r.holes.grow(req.DstOff + n); err != nil {
		return sum, fmt.Errorf("set the size of %s: %w", dst.path, err)
	}
	if sess != nil {
		r.sess, r.lim, r.offloadOK = sess, sess.Limits(), true
		r.reqSize = r.lim.Unit
	}
	if req.Verify && overlap {
		if r.srcSums, err = sumRange(ctx, src.path, req.SrcOff, n); err != nil {
			return sum, err
		}
	}
	if ck != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		if err := ck.start(cancel, created); err != nil {
			return sum, err
		}
		defer ck.close()
	}
	if req.Start != nil {
		req.Start(n)
	}
	began := time.Now()
	runErr := r.run(ctx, p, srcAbs-req.SrcOff, dstAbs-req.DstOff)
	r.finishHoles()
	sum.Duration = time.Since(began)
	if sess != nil {
		sum.OffloadRequests = sess.Requests()
	}
	if sum.Duration > 0 {
		sum.BytesPerSecond = int64(float64(sum.OffloadedBytes+sum.OnloadedBytes+sum.SparseBytes) / sum.Duration.Seconds())
	}
	// Sync what was written even when the copy stopped, so the bytes an
	// interrupt report calls done are on the medium.
	if !req.NoSync {
		if err := unix.Fdatasync(int(dst.file.Fd())); err != nil {
			return sum, errors.Join(runErr, fmt.Errorf("fdatasync %s: %w", dst.path, err))
		}
		sum.Synced = true
	}
	if ck != nil {
		if err := ck.close(); err != nil {
			return sum, err // the record could not be kept: the copy was stopped
		}
		// Record where a stop left the copy (the destination was just
		// synced), and a finished copy before a long --verify, so that a
		// rerun after a kill during it does not copy again.
		if runErr != nil || req.Verify {
			if err := ck.record(r.done); err != nil {
				return sum, errors.Join(runErr, err)
			}
		}
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			// Counted on the whole range, so that with --state the same
			// command resumes, and without it these offsets do.
			done := sum.ResumedFrom + r.done
			ie := &InterruptedError{Done: done, Total: full, Len: full - done, Err: runErr, ReqSrcOff: sum.SrcOffset, ReqDstOff: sum.DstOffset}
			ie.SrcOff, ie.DstOff = sum.SrcOffset, sum.DstOffset
			if !r.backward {
				ie.SrcOff, ie.DstOff = sum.SrcOffset+done, sum.DstOffset+done
			}
			return sum, ie
		}
		return sum, runErr
	}
	var verr error
	if req.Verify {
		if verr = r.verifyAll(ctx); verr == nil {
			sum.Verified = true
		}
	}
	if ck != nil {
		if err := ck.settle(r.done, fullOverlap, verr); err != nil {
			return sum, errors.Join(verr, err)
		}
		if fullOverlap {
			sum.Note = joinNote(sum.Note, keptNote(req.State))
		}
	}
	return sum, verr
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
	var opt int64
	for _, e := range []*endpoint{src, dst} {
		if e.dev != nil {
			opt = max(opt, e.dev.OptimalIOSize)
		}
	}
	return onload.DefaultBufSize(opt)
}

// onloadCopy is a test seam: tests swap it to inject a copy that silently
// corrupts, which real devices do not do on demand.
var onloadCopy = onload.Copy

// offloadPaths are the ways to offload, in the order they are tried: the
// kernel's copy offload first (it keeps the block layer in charge), then
// the storage's own commands: NVMe Copy within a namespace, SCSI EXTENDED
// COPY within a LU or between LUs of one copy manager. A test seam: tests
// put fakes here.
var offloadPaths = []copypath.Path{offload.Path{}, nvme.Path{}, scsi.Path{}}

// PathNames are the offload paths' names, in the order they are tried.
func PathNames() []string {
	var names []string
	for _, p := range offloadPaths {
		names = append(names, p.Name())
	}
	return names
}

// namedSession is an open offload path.
type namedSession struct {
	copypath.Session
	name string
}

// openPath opens the first offload path that serves the pair (only the one
// named only, when set). With none, it returns why not, in words: one path's reason alone, or each path's
// reason after its name. Only real failures are errors.
func openPath(mode Mode, only string, pair copypath.Pair) (*namedSession, string, error) {
	if mode == OnloadOnly {
		return nil, "offload not requested (--mode onload)", nil
	}
	var reasons []string
	for _, p := range offloadPaths {
		if only != "" && p.Name() != only {
			continue
		}
		s, err := p.Open(pair)
		if err == nil {
			return &namedSession{Session: s, name: p.Name()}, "", nil
		}
		if !copypath.IsUnavailable(err) {
			return nil, "", fmt.Errorf("%s offload: %w", p.Name(), err)
		}
		reasons = append(reasons, p.Name()+": "+err.Error())
	}
	if len(reasons) == 1 {
		_, why, _ := strings.Cut(reasons[0], ": ")
		return nil, why, nil
	}
	return nil, strings.Join(reasons, "; "), nil
}

type runner struct {
	req       Request
	sum       *Summary
	src, dst  *endpoint
	sess      *namedSession // nil: no offload path serves this pair
	lim       copypath.Limits
	offloadOK bool // sess is set and has not been disabled
	canaryRun bool
	reqSize   int64 // bytes in the next offload request, see adapt
	backward  bool
	done      int64      // bytes of the finished prefix (or suffix when backward)
	srcSums   *rangeSums // overlapping --verify: the source before the copy
	// verifyFrom: --verify also compares this many bytes before the range
	// (the part a --state record had done when this run resumed).
	verifyFrom int64
	ck         *checkpointer // --state; nil without
	holes      *holes        // --sparse auto/always; nil with never
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// run executes the plan. srcShift/dstShift turn the plan's whole-disk
// offsets back into offsets on the opened files.
//
// Offload chunks go through a window of requests in flight (the path's
// InFlight, or one when the ranges overlap, so that no request reads what
// another writes); onload chunks run one at a time once the window is
// empty, since the onload engine already overlaps its own reads and
// writes. The first offload request is one canary's worth and runs alone:
// it is read back before anything else is trusted to the path.
func (r *runner) run(ctx context.Context, p *plan.Plan, srcShift, dstShift int64) error {
	w := newWindow(r, 1)
	if r.offloadOK && !p.Overlapping() {
		w = newWindow(r, r.lim.InFlight)
	}
	for c := range p.All() {
		if err := ctx.Err(); err != nil {
			return errors.Join(w.drain(ctx), err)
		}
		c.Src -= srcShift
		c.Dst -= dstShift
		r.sum.Chunks++
		var err error
		if r.holes != nil && r.holes.srcExtents {
			err = r.extents(ctx, w, c)
		} else {
			err = r.chunk(ctx, w, c)
		}
		if err != nil {
			return err
		}
	}
	return w.drain(ctx)
}

// chunk runs one chunk (or a data extent of one) through the offload
// window, or through the host.
func (r *runner) chunk(ctx context.Context, w *window, c plan.Chunk) error {
	for c.Method == plan.Offload && r.offloadOK && c.Len > 0 {
		if err := ctx.Err(); err != nil {
			return errors.Join(w.drain(ctx), err)
		}
		q := c
		q.Len = min(c.Len, r.reqSize)
		canary := !r.canaryRun
		if canary {
			r.canaryRun = true
			if r.lim.Canary > 0 {
				q.Len = min(c.Len, r.lim.Canary)
			}
		}
		if r.ck != nil {
			q.Len = min(q.Len, r.ck.requestMax(r.lim.Align))
		}
		if r.backward {
			// The finished part must stay a suffix of the range for
			// the resume point: take requests from the chunk's end.
			q.Src, q.Dst = c.Src+c.Len-q.Len, c.Dst+c.Len-q.Len
		}
		if err := r.beforeWrite(ctx, w, q.Len); err != nil {
			return errors.Join(w.drain(ctx), err)
		}
		var saved *onload.Saved
		var poison *onload.Canary
		if canary && r.lim.Canary > 0 {
			// --mode offload promises nothing written when the copy
			// cannot be offloaded, and a path may only find that out
			// at its first command: keep what the poison overwrites.
			if r.req.Mode == OffloadOnly {
				var err error
				if saved, err = onload.Save(r.dst.onload(), q.Dst, q.Len); err != nil {
					return fmt.Errorf("offload check: %w", err)
				}
			}
			// Make the canary's destination differ from its source,
			// or a copy that moved nothing over equal bytes (zeroes
			// on zeroes) would pass the read-back.
			var err error
			if poison, err = onload.Poison(r.dst.onload(), r.src.onload(), q.Dst, q.Src, q.Len); err != nil {
				saved.Free()
				return fmt.Errorf("offload check: %w", err)
			}
		}
		w.submit(ctx, q)
		if canary {
			err := w.drain(ctx)
			if saved != nil && errors.Is(err, ErrOffloadUnavailable) {
				if rerr := saved.Restore(); rerr != nil {
					err = errors.Join(err, fmt.Errorf("restoring %s at offset %d after the refused canary: %w", r.dst.path, q.Dst, rerr))
				}
			}
			saved.Free()
			if err == nil && poison != nil && r.offloadOK {
				err = r.canary(ctx, q, poison)
			}
			poison.Free()
			if err != nil {
				return err
			}
		}
		if w.stopped() {
			return w.drain(ctx)
		}
		r.publish() // after the canary: its bytes count once checked
		c.Len -= q.Len
		if !r.backward {
			c.Src, c.Dst = c.Src+q.Len, c.Dst+q.Len
		}
	}
	if c.Len == 0 {
		return nil
	}
	// An onload chunk, or the rest of an offload chunk after offload
	// was disabled.
	if err := w.drain(ctx); err != nil {
		return err
	}
	if err := r.beforeWrite(ctx, w, c.Len); err != nil {
		return err
	}
	n, err := r.onloadChunk(ctx, c.Src, c.Dst, c.Len, r.done)
	if err != nil {
		if errors.Is(err, context.Canceled) && !r.backward {
			r.done += n // a forward copy's written prefix is a valid resume point
		}
		return err
	}
	r.done += c.Len
	r.publish()
	return nil
}

// publish tells the --state record how far the copy is.
func (r *runner) publish() {
	if r.ck != nil {
		r.ck.publish(r.done)
	}
}

// beforeWrite keeps an overlapping --state copy resumable (see
// checkpoint.go): before a chunk or request of n bytes that would write
// more than the distance past the durable point, it makes what is done
// durable and recorded. The window holds one request on overlapping
// copies, so draining it first waits for nothing submit would not.
func (r *runner) beforeWrite(ctx context.Context, w *window, n int64) error {
	if r.ck == nil || r.ck.lead == 0 {
		return nil
	}
	if err := w.drain(ctx); err != nil {
		return err
	}
	if r.done+n-r.ck.saved.Load() <= r.ck.lead {
		return nil
	}
	return r.ck.record(r.done)
}

// requestTarget is how long one offload request should take: long enough
// to carry many device commands (the kernel submits a call's pieces at
// once; the NVMe path keeps several commands queued), short enough that
// progress moves and an interrupt stops the copy within about a second
// even on a slow device, with a window of requests in flight.
const requestTarget = 250 * time.Millisecond

// adapt sizes the next requests from how fast the last one ran: n bytes in
// d. Requests start at one unit (after the canary) and grow at most
// fourfold per finished request, up to the path's Request size, in whole
// units.
func (r *runner) adapt(n int64, d time.Duration) {
	want := r.lim.Request
	if d > 0 {
		want = int64(float64(n) / d.Seconds() * requestTarget.Seconds())
	}
	want = min(want, r.reqSize*4, r.lim.Request)
	step := r.lim.Unit
	if c := r.lim.Command; c > step && want >= c {
		step = c // whole commands: no partial one per request
	}
	r.reqSize = max(want/step*step, r.lim.Unit)
}

// request is one Copy call of the offload path.
type request struct {
	c        plan.Chunk
	n        int64 // bytes done, a prefix of c
	err      error
	took     time.Duration
	finished bool
}

// window keeps up to max offload requests in flight and accounts for them
// in plan order: r.done only ever covers a finished prefix, so an
// interrupt's resume point is right even when later requests finished
// first.
type window struct {
	r        *runner
	max      int
	queue    []*request // submitted, not yet accounted, in plan order
	results  chan *request
	inflight int
	err      error // the first failure in plan order
	// failed: a request met a real error; nothing more is submitted even
	// while earlier requests, still in flight, keep w.err unset.
	failed bool
}

func newWindow(r *runner, n int) *window {
	n = max(n, 1)
	return &window{r: r, max: n, results: make(chan *request, n)}
}

// submit starts a request once a slot is free. A failure is kept in w.err.
func (w *window) submit(ctx context.Context, c plan.Chunk) {
	for w.inflight >= w.max && !w.stopped() {
		w.collect(ctx)
	}
	if w.stopped() {
		return
	}
	q := &request{c: c}
	w.queue = append(w.queue, q)
	w.inflight++
	go func() {
		began := time.Now()
		q.n, q.err = w.r.sess.Copy(ctx, c.Dst, c.Src, c.Len, w.r.req.Progress)
		q.took = time.Since(began)
		w.results <- q
	}()
}

func (w *window) stopped() bool { return w.err != nil || w.failed }

// drain waits for every request in flight and returns the first failure.
func (w *window) drain(ctx context.Context) error {
	for w.inflight > 0 {
		w.collect(ctx)
	}
	return w.err
}

func (w *window) collect(ctx context.Context) {
	q := <-w.results
	w.inflight--
	q.finished = true
	w.r.sum.OffloadedBytes += q.n
	if q.err != nil && !copypath.IsUnavailable(q.err) && !(onloadRetryable(q.err) && w.r.req.Mode == Auto) {
		w.failed = true
	}
	if q.err == nil {
		w.r.adapt(q.n, q.took)
	}
	// Accounting runs in plan order: a fallback through the host happens
	// for the oldest failed request first, while later ones may still be
	// in flight on other, disjoint ranges.
	for w.err == nil && len(w.queue) > 0 && w.queue[0].finished {
		q := w.queue[0]
		w.queue = w.queue[1:]
		if err := w.r.finish(ctx, q); err != nil {
			w.err = err
		}
	}
}

// finish settles one request in plan order: success counts it done, an
// unavailable path or a retryable failure has the rest of its chunk
// copied through the host, anything else stops the copy.
func (r *runner) finish(ctx context.Context, q *request) error {
	err := q.err
	if err != nil && !errors.Is(err, context.Canceled) {
		err = r.offloadFailed(ctx, q, err)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) && !r.backward {
			r.done += q.n
		}
		return err
	}
	r.done += q.c.Len
	return nil
}

// offloadFailed decides what a failed request means: fall back for the
// rest of its chunk (and the rest of the run), or stop.
func (r *runner) offloadFailed(ctx context.Context, q *request, err error) error {
	switch {
	case copypath.IsUnavailable(err):
		if r.req.Mode == OffloadOnly {
			return fmt.Errorf("%w: %w", ErrOffloadUnavailable, err)
		}
		r.disableOffload(fmt.Sprintf("%s failed (%v); copying through the host instead", r.sess.name, err))
	case onloadRetryable(err) && r.req.Mode == Auto:
		r.disableOffload(fmt.Sprintf("offloaded copy failed (%v); retrying through the host", err))
	default:
		return err
	}
	c := q.c
	n, err := r.onloadChunk(ctx, c.Src+q.n, c.Dst+q.n, c.Len-q.n, r.done+q.n)
	q.n += n
	return err
}

// onloadChunk copies through the host and returns the bytes written, a
// prefix of the range. It does not sync: Run syncs once at the end (or on
// a stop), not once per chunk, which would cost a cache flush per chunk on
// overlapping copies. prefix is the run's done count before the range when
// the range extends a forward copy's finished prefix: then its written
// prefix counts as done for the --state record as it grows; -1 otherwise.
func (r *runner) onloadChunk(ctx context.Context, srcOff, dstOff, n, prefix int64) (int64, error) {
	progress := r.req.Progress
	if r.ck != nil && prefix >= 0 && !r.backward {
		var written int64 // the engine's Progress calls never overlap
		progress = func(k int64) {
			written += k
			r.ck.publish(prefix + written)
			if r.req.Progress != nil {
				r.req.Progress(k)
			}
		}
	}
	opt, err := r.holes.onloadOptions(onload.Options{BufSize: r.sum.BufSize, Progress: progress, NoSync: true}, max(r.src.lbs, r.dst.lbs))
	if err != nil {
		return 0, err
	}
	w, err := onloadCopy(ctx, r.dst.onload(), r.src.onload(), dstOff, srcOff, n, opt)
	r.sum.OnloadedBytes += w
	return w, err
}

// canary reads back the first offloaded request: a kernel with the posted
// series was seen to report full success while the device rejected every
// Copy command, so a successful return is not proof the data moved. The
// request is one path unit (one device command) on block devices and the
// first MiB between regular files: enough to catch a copy that did
// nothing, cheap to read back. The destination is compared with the
// source bytes the poison read (the ranges do not overlap, and the source
// is not written during the copy).
func (r *runner) canary(ctx context.Context, c plan.Chunk, poison *onload.Canary) error {
	diff, err := poison.Check()
	if err != nil {
		return fmt.Errorf("offload check: %w", err)
	}
	if diff < 0 {
		return nil
	}
	r.sum.OffloadedBytes -= c.Len
	r.disableOffload(fmt.Sprintf("%s reported success but %s at offset %d does not match the source; offload is not trustworthy here", r.sess.name, r.dst.path, c.Dst+diff))
	if _, err := r.onloadChunk(ctx, c.Src, c.Dst, c.Len, -1); err != nil {
		return err
	}
	if r.req.Mode == OffloadOnly {
		// The chunk was redone through the host, so the bytes reported
		// done are right; the rest is refused as --mode offload asks.
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
	so, do := r.req.SrcOff-r.verifyFrom, r.req.DstOff-r.verifyFrom
	diff, err := verify.Compare(ctx, r.src.onload(), r.dst.onload(), so, do, r.sum.Bytes+r.verifyFrom, r.sum.BufSize)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if diff >= 0 {
		return &MismatchError{Src: r.src.path, Dst: r.dst.path, SrcOff: so + diff, DstOff: do + diff}
	}
	return nil
}
