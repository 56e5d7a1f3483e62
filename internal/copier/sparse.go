package copier

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/plan"
	"github.com/blkcopy/blkcopy/internal/sparse"
)

// holes is a copy's --sparse state: where zeroes go instead of data, and
// what was saved. Nil with --sparse never, which writes every byte.
type holes struct {
	dest *sparse.Dest
	// srcExtents: the source is a regular file whose holes are found with
	// SEEK_DATA and never read. Not for overlapping copies within one file,
	// which run backwards: splitting a chunk into extents would make the
	// finished part stop being a suffix, and the resume point wrong.
	srcExtents bool
	// bufs is the onload buffer set kept across the per-extent copies, so
	// an image of many small extents does not map buffers per extent.
	bufs      *onload.Buffers
	zeroBytes atomic.Int64
}

// holePiece bounds one hole request: a write-zeroes that the kernel
// emulates by writing zero pages runs at the device's write speed, and
// progress and Ctrl-C should stay live.
const holePiece = 256 << 20

func newHoles(mode sparse.Mode, src, dst *endpoint, overlap bool) (*holes, error) {
	if mode == sparse.Never {
		return nil, nil
	}
	// Write-zeroes on a block device, measured on this project's loop
	// devices (2 GiB, kernel 6.18): 0.01 s against 6.5-12.6 s for writing
	// the zeroes when the loop device sits on ext4 (it becomes an
	// fallocate ZERO_RANGE of the backing file), 0.23 s against 0.40 s on
	// tmpfs, where the kernel emulates it with its own zero pages. Never
	// slower there, so it is the first choice; auto still times it
	// against a plain write on the first long zero run and keeps the
	// faster, since a device may emulate it slowly. always uses it
	// whatever it costs.
	d, err := sparse.NewDest(sparse.DestConfig{File: dst.file, Block: dst.block, Align: dst.lbs, WriteZeroes: dst.block, Probe: mode == sparse.Auto})
	if err != nil {
		return nil, err
	}
	return &holes{dest: d, srcExtents: !src.block && !overlap}, nil
}

func (h *holes) close() {
	if h == nil {
		return
	}
	if h.bufs != nil {
		h.bufs.Free()
	}
	_ = h.dest.Close()
}

// zero is the onload copy's hook for a run of zero blocks it read.
func (h *holes) zero(off, n int64) error {
	if err := h.dest.Zero(off, n); err != nil {
		return err
	}
	h.zeroBytes.Add(n)
	return nil
}

// extents runs one plan chunk extent by extent: data through the chunk's
// method, holes of the source straight to the destination as zeroes.
func (r *runner) extents(ctx context.Context, w *window, c plan.Chunk) error {
	end := c.Src + c.Len
	for off := c.Src; off < end; {
		if err := ctx.Err(); err != nil {
			return errors.Join(w.drain(ctx), err)
		}
		e, err := sparse.NextExtent(r.src.file, off, end)
		if err != nil {
			return errors.Join(w.drain(ctx), err)
		}
		sub := plan.Chunk{Src: off, Dst: c.Dst + off - c.Src, Len: e.Len, Method: c.Method}
		if e.Hole {
			err = r.hole(ctx, w, sub)
		} else {
			err = r.chunk(ctx, w, sub)
		}
		if err != nil {
			return err
		}
		off += e.Len
	}
	return nil
}

// hole makes a source hole read as zeroes at the destination: nothing read,
// nothing written as data. Requests in flight finish first, so the done
// prefix stays in plan order.
func (r *runner) hole(ctx context.Context, w *window, c plan.Chunk) error {
	if err := w.drain(ctx); err != nil {
		return err
	}
	for c.Len > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(c.Len, holePiece)
		if err := r.beforeWrite(ctx, w, k); err != nil {
			return err
		}
		if err := r.holes.dest.Zero(c.Dst, k); err != nil {
			return err
		}
		r.sum.SparseBytes += k
		r.done += k
		r.publish()
		if r.req.Progress != nil {
			r.req.Progress(k)
		}
		c.Src, c.Dst, c.Len = c.Src+k, c.Dst+k, c.Len-k
	}
	return nil
}

// grow gives a regular-file destination its final size before the copy
// writes anything: a range that ends in a hole past the old end is written
// by nobody, and growing first (rather than after the copy) keeps the size
// right whenever the copy stops, a crash under --state included, where a
// rerun that finds everything done copies nothing.
func (h *holes) grow(end int64) error {
	if h == nil {
		return nil
	}
	return h.dest.Extend(end)
}

// finishHoles puts what was saved, and what the file system or device
// refused, in the summary.
func (r *runner) finishHoles() {
	h := r.holes
	if h == nil {
		return
	}
	r.sum.ZeroBytes = h.zeroBytes.Load()
	if h.dest.NoPunch() {
		r.sum.Note = joinNote(r.sum.Note, "the file system cannot punch holes: zero runs over old data were written as zeroes")
	}
	switch {
	case h.dest.Slower():
		r.sum.Note = joinNote(r.sum.Note, "write-zeroes measured slower than writing zeroes on "+r.dst.path+": zero runs after the first were written as data")
	case h.dest.Block() && !h.dest.WriteZeroes():
		r.sum.Note = joinNote(r.sum.Note, "the device refused write-zeroes: zero runs were written as zeroes")
	}
}

// onloadOptions adds the zero hook and the kept buffers to an onload copy.
func (h *holes) onloadOptions(opt onload.Options, align int64) (onload.Options, error) {
	if h == nil {
		return opt, nil
	}
	opt.Zero, opt.ZeroGrain = h.zero, h.dest.Grain()
	if h.srcExtents {
		if h.bufs == nil {
			var err error
			if h.bufs, err = onload.NewBuffers(2*onload.DefaultDepth, opt.BufSize, align); err != nil {
				return opt, err
			}
		}
		opt.Buffers = h.bufs
	}
	return opt, nil
}
