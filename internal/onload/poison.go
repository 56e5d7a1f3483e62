package onload

import "fmt"

// Poison writes to dst at dstOff the bitwise complement of the n bytes of
// src at srcOff, so that every byte of that destination range differs from
// the source. The offload canary does this before its first request: a copy
// that reports success and moves nothing then leaves a difference to find,
// even where source and destination happened to hold the same bytes (two
// runs of zeroes, or a range copied before). The range must be one the copy
// is about to overwrite, and on O_DIRECT endpoints aligned to both sides'
// block sizes (the canary is one path unit, which is).
func Poison(dst, src Endpoint, dstOff, srcOff, n int64) error {
	s, d := newSide(src), newSide(dst)
	if a := max(s.align, d.align); srcOff%a != 0 || dstOff%a != 0 || n%a != 0 {
		return fmt.Errorf("poison %s at offset %d: %d bytes are not aligned to %d", d.path, dstOff, n, a)
	}
	bufs, err := NewBuffers(1, n, max(s.align, d.align))
	if err != nil {
		return err
	}
	defer bufs.Free()
	buf := bufs.Bufs[0][:n]
	if _, err := s.readAt(buf, srcOff, int(n)); err != nil {
		return err
	}
	for i := range buf {
		buf[i] = ^buf[i]
	}
	return d.writeAt(buf, dstOff)
}
