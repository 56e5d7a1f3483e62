// Package onload is the copy blkcopy does itself when the storage cannot:
// page-aligned buffers, O_DIRECT where the endpoint was opened with it, and
// reads overlapped with writes so a copy runs at the speed of the slower side
// instead of the sum of both, which is what dd does.
package onload

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/sparse"
)

// Endpoint is one side of a copy.
type Endpoint struct {
	File *os.File
	// Direct says File was opened with O_DIRECT. A Direct destination
	// must be open for reading too (O_RDWR): blocks that the range only
	// partly covers are read, patched and written whole.
	Direct bool
	// Align is the logical block size of the device (1 or 512 for regular
	// files). With Direct, offsets and lengths of every I/O are multiples
	// of it, and buffers are aligned to max(Align, page size).
	Align int64
}

// Options tune a Copy; the zero value picks defaults.
type Options struct {
	BufSize int64 // bytes per I/O; 0 = DefaultBufSize(0); rounded up to the alignment
	// Depth is the I/Os in flight per side; 0 = DefaultDepth. Memory is
	// 2*Depth buffers of BufSize, whatever the length of the copy.
	Depth int
	// Progress is called with the bytes newly added to the written
	// prefix. Calls never overlap; they come from the copy's goroutines
	// and must be cheap.
	Progress func(n int64)
	// NoSync skips the fdatasync of dst at the end, for a caller that
	// syncs once after many Copy calls.
	NoSync bool
	// Zero, when set, is called instead of writing a run of whole
	// ZeroGrain-aligned blocks (destination offsets) that read as zeroes;
	// it must make them read as zeroes on dst (a hole, a write-zeroes
	// request). It runs on the workers, concurrently, on disjoint ranges.
	// ZeroGrain is a multiple of dst's alignment.
	Zero      func(off, n int64) error
	ZeroGrain int64
	// Buffers, when set, are used instead of mapping new ones: a caller
	// that calls Copy once per data extent keeps one set for all. They
	// must be at least BufSize (rounded to the alignment) each, aligned
	// for both ends; Copy uses up to 2*Depth of them.
	Buffers *Buffers
}

// DefaultDepth is the number of reads and of writes in flight. One of each
// (two workers) is what we measured best on two cores (see
// BenchmarkCopyLoop and bench/): depth 2 was no faster on loop devices and
// cost more CPU in thread hand-offs.
const DefaultDepth = 1

// DefaultBufSize derives the bytes per I/O from a device's optimal_io_size
// in bytes (0 when unknown). It is 8 MiB, in whole optimal I/O units when
// the device names one that fits. max_sectors_kb is deliberately not an
// input: the block layer splits a larger I/O into several requests that the
// device works on at once, which is the point.
// Measured with bench/ on /dev/shm-backed direct-I/O loop devices, 2 GiB, 5
// alternating runs on an idle machine (2026-11-26): 4 MiB gave 1.37x dd
// bs=4M and 80% of fio's read+write ceiling, 8 MiB 1.32-1.37x and 89%, at
// less CPU per GiB; 2 MiB took more CPU. Two 8 MiB buffers keep peak RSS
// near 22 MiB whatever the length.
func DefaultBufSize(optimalIOSize int64) int64 {
	size := int64(8 << 20)
	if optimalIOSize > 0 && optimalIOSize <= size {
		size = alignDown(size, optimalIOSize)
	}
	return alignUp(size, pageSize)
}

// Copy copies n bytes from src at srcOff to dst at dstOff. It returns the
// number of bytes written to dst as a contiguous prefix
// [dstOff, dstOff+written) and stops early, returning ctx.Err() wrapped, when
// ctx is cancelled, after in-flight writes finish. It never writes outside
// [dstOff, dstOff+n) with changed content: with a Direct destination the
// partly covered blocks at either end are read back and rewritten whole.
//
// Source and destination ranges must not overlap: reads and writes run
// concurrently and out of order. The orchestrator guarantees this by giving
// Copy one non-overlapping chunk at a time.
//
// Errors are *Error values naming the operation, path and offset; a source
// that ends before srcOff+n fails with io.ErrUnexpectedEOF.
func Copy(ctx context.Context, dst, src Endpoint, dstOff, srcOff, n int64, opt Options) (written int64, err error) {
	if n <= 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("copy %s to %s: %w", src.File.Name(), dst.File.Name(), err)
	}
	c := newCopier(dst, src, dstOff, srcOff, n, opt)
	defer runtime.KeepAlive(dst.File)
	defer runtime.KeepAlive(src.File)
	return c.run(ctx)
}

type copier struct {
	dst, src          side
	dstOff, srcOff, n int64
	bufSize           int64
	base              int64 // dst offset where chunk 0's window starts
	count             int64 // number of chunks
	workers           int
	ctx               context.Context
	progress          func(int64)
	noSync            bool
	zero              func(off, n int64) error
	zeroGrain         int64
	bufs              *Buffers // the caller's, or nil
	dstSize           int64    // size of a regular-file dst before the copy; -1 otherwise
	mu                sync.Mutex
	cond              sync.Cond
	next              int64  // next chunk to hand to a worker
	prefix            int64  // chunks [0, prefix) are written
	done              []bool // ring of written chunks at and past prefix
	stopAt            int64  // lowest failed chunk, or count
	err               error  // the failure of chunk stopAt
	cancelled         bool
}

func newCopier(dst, src Endpoint, dstOff, srcOff, n int64, opt Options) *copier {
	c := &copier{
		dst: newSide(dst), src: newSide(src),
		dstOff: dstOff, srcOff: srcOff, n: n,
		progress: opt.Progress, noSync: opt.NoSync,
		zero: opt.Zero, zeroGrain: opt.ZeroGrain, bufs: opt.Buffers,
		dstSize: -1,
	}
	c.cond.L = &c.mu
	depth := opt.Depth
	if depth <= 0 {
		depth = DefaultDepth
	}
	c.bufSize = opt.BufSize
	if c.bufSize <= 0 {
		c.bufSize = DefaultBufSize(0)
	}
	c.bufSize = alignUp(c.bufSize, max(c.dst.align, c.src.align, pageSize))
	// A zero run is written (or not) whole, so it is whole blocks of dst.
	c.zeroGrain = alignUp(max(c.zeroGrain, 4096), c.dst.align)
	// Chunk windows start on the destination's block grid so that every
	// chunk but the first and last is written with whole blocks. A
	// buffered destination takes any offset, so its windows follow the
	// source's grid instead and only the first and last chunk of an
	// unaligned O_DIRECT source need the staging copy.
	c.base = alignDown(dstOff, c.dst.align)
	if !c.dst.direct {
		c.base = dstOff - srcOff%c.src.align
	}
	c.count = (dstOff + n - c.base + c.bufSize - 1) / c.bufSize
	// Each worker alternates a read and a write, so 2*depth workers keep
	// about depth I/Os in flight on each side.
	c.workers = int(min(2*int64(depth), c.count))
	// The ring bounds how far workers may run ahead of the written
	// prefix, so a stalled chunk cannot make bookkeeping grow with n.
	c.done = make([]bool, 4*c.workers)
	c.stopAt = c.count
	return c
}

// chunk returns the destination range of chunk i and the start of its
// block-aligned window.
func (c *copier) chunk(i int64) (w0, d0, d1 int64) {
	w0 = c.base + i*c.bufSize
	return w0, max(w0, c.dstOff), min(w0+c.bufSize, c.dstOff+c.n)
}

func (c *copier) run(ctx context.Context) (int64, error) {
	c.ctx = ctx
	if c.dst.direct {
		var st unix.Stat_t
		if unix.Fstat(c.dst.fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			c.dstSize = st.Size
		}
	}
	bufs := c.bufs
	if bufs == nil || len(bufs.Bufs) < c.workers || int64(len(bufs.Bufs[0])) < c.bufSize {
		var err error
		if bufs, err = NewBuffers(c.workers, c.bufSize, max(c.dst.align, c.src.align)); err != nil {
			return 0, err
		}
		defer bufs.Free()
	}

	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cancelled = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()

	var wg sync.WaitGroup
	for _, buf := range bufs.Bufs[:c.workers] {
		wg.Go(func() { c.worker(buf[:c.bufSize]) })
	}
	wg.Wait()

	written := c.written(c.prefix)
	if c.err == nil && c.prefix == c.count {
		if err := c.finish(); err != nil {
			// Buffered writes fail at writeback: after a failed sync
			// no byte of the range is known to be on the device.
			return 0, err
		}
		return written, nil
	}
	// The copy failed already; a failed trim would only add noise.
	_ = c.trimDst()
	if c.err != nil {
		return written, c.err
	}
	return written, fmt.Errorf("copy %s to %s stopped after %d bytes: %w", c.src.path, c.dst.path, written, context.Cause(ctx))
}

// written is the length of the destination prefix covered by chunks
// [0, chunks).
func (c *copier) written(chunks int64) int64 {
	if chunks == 0 {
		return 0
	}
	_, _, d1 := c.chunk(chunks - 1)
	return d1 - c.dstOff
}

func (c *copier) finish() error {
	if err := c.trimDst(); err != nil {
		return err
	}
	if c.noSync {
		return nil
	}
	return c.dst.sync()
}

// trimDst undoes the growth of a regular-file destination past the range:
// an O_DIRECT write of the last partial block extends the file to the end
// of that block, where a buffered write would have stopped at dstOff+n.
func (c *copier) trimDst() error {
	if c.dstSize < 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(c.dst.fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: c.dst.path, Err: err}
	}
	if want := max(c.dstSize, c.dstOff+c.n); st.Size > want {
		if err := unix.Ftruncate(c.dst.fd, want); err != nil {
			return &Error{Op: "truncate", Path: c.dst.path, Offset: want, Err: err}
		}
	}
	return nil
}

// take hands out the next chunk, waiting while workers are a full ring
// ahead of the written prefix; false once the copy is done or stopping.
func (c *copier) take() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.stopping() && c.next < c.count && c.next-c.prefix >= int64(len(c.done)) {
		c.cond.Wait()
	}
	if c.stopping() || c.next >= c.count {
		return 0, false
	}
	c.next++
	return c.next - 1, true
}

// stopping asks ctx itself too: the AfterFunc that sets cancelled (to wake
// take) runs in its own goroutine, possibly after many more chunks.
func (c *copier) stopping() bool { return c.cancelled || c.ctx.Err() != nil || c.stopAt < c.count }

// shouldWrite says whether a filled chunk may still be written: after a
// cancel nothing new starts, and after a failure only chunks before it can
// still extend the written prefix.
func (c *copier) shouldWrite(i int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.cancelled && c.ctx.Err() == nil && i < c.stopAt
}

func (c *copier) fail(i int64, err error) {
	c.mu.Lock()
	if i < c.stopAt {
		c.stopAt, c.err = i, err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *copier) complete(i int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ring := int64(len(c.done))
	c.done[i%ring] = true
	old := c.prefix
	for c.prefix < c.count && c.done[c.prefix%ring] {
		c.done[c.prefix%ring] = false
		c.prefix++
	}
	if c.prefix == old {
		return
	}
	if c.progress != nil {
		c.progress(c.written(c.prefix) - c.written(old))
	}
	c.cond.Broadcast()
}

// worker copies chunk after chunk through its own buffer: read, then write.
// With several workers some read while others write, so both devices stay
// busy. A reader/writer pipeline passing buffers over channels measured the
// same throughput but about twice the CPU: every hand-off wakes a goroutine
// on another thread, which costs more than the I/O submission itself.
func (c *copier) worker(buf []byte) {
	var stage *Buffers // for source reads off the block grid; rarely needed
	defer func() {
		if stage != nil {
			stage.Free()
		}
	}()
	for {
		i, ok := c.take()
		if !ok {
			return
		}
		if c.src.direct && stage == nil && !c.srcAligned(i) {
			var err error
			if stage, err = NewBuffers(1, c.src.windowSize(min(c.bufSize, stagePiece)), c.src.align); err != nil {
				c.fail(i, err)
				continue
			}
		}
		if err := c.fill(i, buf, stage); err != nil {
			c.fail(i, err)
			continue
		}
		if !c.shouldWrite(i) {
			continue
		}
		if err := c.flush(i, buf); err != nil {
			c.fail(i, err)
			continue
		}
		c.complete(i)
	}
}

// srcAligned says whether chunk i's source bytes can be read with O_DIRECT
// straight to where the write wants them in the buffer.
func (c *copier) srcAligned(i int64) bool {
	w0, d0, d1 := c.chunk(i)
	a := c.src.align
	s0 := d0 - c.dstOff + c.srcOff
	return s0%a == 0 && (d1-d0)%a == 0 && (d0-w0)%a == 0
}

// fill puts the bytes chunk i writes into buf, laid out as the
// destination's block-aligned window starting at w0.
func (c *copier) fill(i int64, buf []byte, stage *Buffers) error {
	w0, d0, d1 := c.chunk(i)
	if c.dst.direct {
		// Read-modify-write of the blocks the range covers only in
		// part: a block device writes whole logical blocks anyway, so
		// the bytes outside the range go back with the value they
		// have now. Past the end of a regular file they read as zeros,
		// which is what a hole there reads as too.
		a := c.dst.align
		w1 := alignUp(d1, a)
		if d0 > w0 {
			if err := c.readDstBlock(buf[:a], w0); err != nil {
				return err
			}
		}
		if tail := w1 - a; d1 < w1 && (tail > w0 || d0 == w0) {
			if err := c.readDstBlock(buf[tail-w0:w1-w0], tail); err != nil {
				return err
			}
		}
	}
	s0 := d0 - c.dstOff + c.srcOff
	into := buf[d0-w0 : d1-w0]
	if !c.src.direct || c.srcAligned(i) {
		_, err := c.src.readAt(into, s0, len(into))
		return err
	}
	// Source and destination disagree about where blocks start (or the
	// source range starts or ends inside a block): read the source's own
	// aligned window and move the bytes in memory. Toggling O_DIRECT off
	// with fcntl instead would change the file status flags under the
	// other workers' in-flight I/O and push the data through the page
	// cache, which costs a copy as well.
	for done := int64(0); done < d1-d0; {
		k := min(stagePiece, d1-d0-done)
		data, err := c.src.readRange(stage.Bufs[0], s0+done, k)
		if err != nil {
			return err
		}
		done += int64(copy(into[done:], data))
	}
	return nil
}

// stagePiece bounds the staging buffer of an off-grid source read, so a
// phase-mismatched copy with large buffers still keeps its memory small.
const stagePiece = 1 << 20

func (c *copier) readDstBlock(p []byte, off int64) error {
	got, err := c.dst.readAt(p, off, 0)
	if err != nil {
		return err
	}
	clear(p[got:])
	return nil
}

func (c *copier) flush(i int64, buf []byte) error {
	w0, d0, d1 := c.chunk(i)
	lo, hi := d0, d1
	if c.dst.direct {
		lo, hi = w0, alignUp(d1, c.dst.align)
	}
	if c.zero == nil {
		return c.dst.writeAt(buf[lo-w0:hi-w0], lo)
	}
	// Only blocks wholly inside [d0, d1) may be zero runs: the rest of
	// the window holds the destination's own bytes, read back for the
	// write of a partial block, and goes back as it was.
	return sparse.Split(buf[lo-w0:hi-w0], lo, d0, d1, c.zeroGrain, func(off, n int64, zero bool) error {
		if zero {
			return c.zero(off, n)
		}
		return c.dst.writeAt(buf[off-w0:off-w0+n], off)
	})
}
