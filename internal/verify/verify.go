// Package verify reads two byte ranges back and finds where they first
// differ. It serves --verify and the offload canary: copy_file_range on a
// patched kernel was seen to report success while the device copied
// nothing, so only reading both sides proves the data moved.
package verify

import (
	"context"
	"fmt"
	"sync"

	"github.com/blkcopy/blkcopy/internal/onload"
)

// Compare reads n bytes from a at aOff and b at bOff and returns the offset,
// relative to the start of the ranges (0..n-1), of the first byte that
// differs, or -1 when the ranges are equal. Each side reads through O_DIRECT
// when its endpoint has it, in its own goroutine, so the two devices work at
// the same time. Memory is about 2*bufSize whatever n is, as for
// onload.Copy: two buffers of bufSize/2 per side, one compared while the
// other fills (bufSize 0 = onload.DefaultBufSize(0)). Read errors name
// the path and offset; a side that ends early is an io.ErrUnexpectedEOF error, not a
// difference.
func Compare(ctx context.Context, a, b onload.Endpoint, aOff, bOff, n int64, bufSize int64) (firstDiff int64, err error) {
	if n <= 0 {
		return -1, nil
	}
	if bufSize <= 0 {
		bufSize = onload.DefaultBufSize(0)
	}
	piece := min(max(bufSize/2, 4096), n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ra, err := startSide(a, aOff, n, piece, stop, &wg)
	if err != nil {
		return -1, err
	}
	rb, err := startSide(b, bOff, n, piece, stop, &wg)
	if err != nil {
		close(stop)
		wg.Wait()
		ra.bufs.Free()
		return -1, err
	}
	defer func() {
		// The readers must be out of their buffers before they go.
		close(stop)
		wg.Wait()
		ra.bufs.Free()
		rb.bufs.Free()
	}()
	for pos := int64(0); pos < n; pos += piece {
		if err := ctx.Err(); err != nil {
			return -1, fmt.Errorf("compare %s and %s stopped at byte %d of %d: %w", a.File.Name(), b.File.Name(), pos, n, context.Cause(ctx))
		}
		x, y := <-ra.out, <-rb.out
		if x.err != nil {
			return -1, x.err
		}
		if y.err != nil {
			return -1, y.err
		}
		if i := onload.FirstDiff(x.data, y.data); i >= 0 {
			return pos + int64(i), nil
		}
		ra.free <- x.buf
		rb.free <- y.buf
	}
	return -1, nil
}

type readResult struct {
	buf  []byte // the whole buffer, to hand back
	data []byte // the bytes of the range within it
	err  error
}

type reader struct {
	bufs *onload.Buffers
	free chan []byte
	out  chan readResult
}

// startSide reads [off, off+n) of e in pieces of size bytes into two
// buffers, one being compared while the other fills.
func startSide(e onload.Endpoint, off, n, size int64, stop <-chan struct{}, wg *sync.WaitGroup) (*reader, error) {
	rr := onload.NewRangeReader(e)
	bufs, err := onload.NewBuffers(2, rr.BufSize(size), e.Align)
	if err != nil {
		return nil, err
	}
	r := &reader{bufs: bufs, free: make(chan []byte, 2), out: make(chan readResult, 2)}
	for _, b := range bufs.Bufs {
		r.free <- b
	}
	wg.Go(func() {
		for pos := int64(0); pos < n; pos += size {
			var buf []byte
			select {
			case buf = <-r.free:
			case <-stop:
				return
			}
			data, err := rr.ReadRange(buf, off+pos, min(size, n-pos))
			r.out <- readResult{buf: buf, data: data, err: err}
			if err != nil {
				return
			}
		}
	})
	return r, nil
}
