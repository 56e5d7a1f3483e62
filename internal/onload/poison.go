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

// Saved is a destination range as it was before the canary poisoned it.
type Saved struct {
	dst  side
	off  int64
	bufs *Buffers
	n    int64
}

// Save reads the n bytes of dst at off (aligned as for Poison), so that a
// copy refused after its canary was poisoned (--mode offload, when the
// path turns out unavailable at its first command) can put them back and
// leave the destination as it found it.
func Save(dst Endpoint, off, n int64) (*Saved, error) {
	d := newSide(dst)
	if off%d.align != 0 || n%d.align != 0 {
		return nil, fmt.Errorf("save %s at offset %d: %d bytes are not aligned to %d", d.path, off, n, d.align)
	}
	bufs, err := NewBuffers(1, n, d.align)
	if err != nil {
		return nil, err
	}
	if _, err := d.readAt(bufs.Bufs[0][:n], off, int(n)); err != nil {
		bufs.Free()
		return nil, err
	}
	return &Saved{dst: d, off: off, bufs: bufs, n: n}, nil
}

// Restore writes the saved bytes back and frees them.
func (s *Saved) Restore() error {
	defer s.Free()
	return s.dst.writeAt(s.bufs.Bufs[0][:s.n], s.off)
}

// Free lets the saved bytes go; Restore is no longer possible.
func (s *Saved) Free() {
	if s != nil && s.bufs != nil {
		s.bufs.Free()
		s.bufs = nil
	}
}
