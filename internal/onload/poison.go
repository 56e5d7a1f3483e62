package onload

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Poison writes to dst at dstOff the bitwise complement of the n bytes of
// src at srcOff, so that every byte of that destination range differs from
// the source. The offload canary does this before its first request: a copy
// that reports success and moves nothing then leaves a difference to find,
// even where source and destination happened to hold the same bytes (two
// runs of zeroes, or a range copied before). The range must be one the copy
// is about to overwrite, and on O_DIRECT endpoints aligned to both sides'
// block sizes (the canary is one path unit, which is).
//
// The returned Canary keeps the source bytes it read, so that its Check
// reads only the destination back: the canary is in every offloaded
// copy's time. In the VM rig (SCSI EXTENDED COPY, a 1 MiB canary then, TCG,
// 2026-11-28) it took 68-96 ms when the check read both sides back into
// four fresh buffers and the complement ran byte by byte, 37-67 ms so.
func Poison(dst, src Endpoint, dstOff, srcOff, n int64) (*Canary, error) {
	s, d := newSide(src), newSide(dst)
	if a := max(s.align, d.align); srcOff%a != 0 || dstOff%a != 0 || n%a != 0 {
		return nil, fmt.Errorf("poison %s at offset %d: %d bytes are not aligned to %d", d.path, dstOff, n, a)
	}
	// Two buffers in one mapping: the source's bytes (complemented while
	// they are written) and the destination's read-back.
	bufs, err := NewBuffers(2, n, max(s.align, d.align))
	if err != nil {
		return nil, err
	}
	c := &Canary{dst: d, off: dstOff, n: n, bufs: bufs}
	buf := c.source()
	if _, err := s.readAt(buf, srcOff, int(n)); err != nil {
		c.Free()
		return nil, err
	}
	complement(buf)
	err = d.writeAt(buf, dstOff)
	complement(buf)
	if err != nil {
		c.Free()
		return nil, err
	}
	return c, nil
}

// Canary is a poisoned destination range and the source bytes that the
// copy should put there.
type Canary struct {
	dst  side
	off  int64
	n    int64
	bufs *Buffers
}

func (c *Canary) source() []byte { return c.bufs.Bufs[0][:c.n] }

// Check reads the destination range back and returns the index within it
// of the first byte that differs from the source, or -1 when none does.
func (c *Canary) Check() (int64, error) {
	got := c.bufs.Bufs[1][:c.n]
	if _, err := c.dst.readAt(got, c.off, int(c.n)); err != nil {
		return -1, err
	}
	return int64(FirstDiff(got, c.source())), nil
}

// Free lets the buffers go; a nil Canary is fine.
func (c *Canary) Free() {
	if c != nil && c.bufs != nil {
		c.bufs.Free()
		c.bufs = nil
	}
}

// complement flips every bit of b, eight bytes at a time where it can.
func complement(b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.NativeEndian.PutUint64(b[i:], ^binary.NativeEndian.Uint64(b[i:]))
	}
	for ; i < len(b); i++ {
		b[i] = ^b[i]
	}
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

// FirstDiff returns the index of the first byte where x and y (of equal
// length) differ, or -1. bytes.Equal on blocks runs at memory speed; the
// byte loop only runs inside the one block that differs. The canary's
// check and verify.Compare share it.
func FirstDiff(x, y []byte) int {
	const block = 64 << 10
	for off := 0; off < len(x); off += block {
		end := min(off+block, len(x))
		if bytes.Equal(x[off:end], y[off:end]) {
			continue
		}
		for i := off; i < end; i++ {
			if x[i] != y[i] {
				return i
			}
		}
	}
	return -1
}
