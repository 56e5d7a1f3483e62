package sparse

import (
	"bytes"
	"encoding/binary"
)

// zeroes is what IsZero compares with: 16 KiB stays in the L1/L2 cache, and
// bytes.Equal compares with vector instructions, faster than a Go loop.
var zeroes [16 << 10]byte

// IsZero reports whether every byte of p is zero. Random data differs in
// its first word almost always, so that word is tested first: the scan of
// data that holds no zero blocks costs one load per block.
func IsZero(p []byte) bool {
	if len(p) >= 8 && binary.NativeEndian.Uint64(p) != 0 {
		return false
	}
	for len(p) > 0 {
		n := min(len(p), len(zeroes))
		if !bytes.Equal(p[:n], zeroes[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// Split walks p, which holds the bytes at [off, off+len(p)), and calls fn
// for each run in order: a run of data, or a run of whole grain-aligned
// blocks within [lo, hi) that hold only zeroes. Bytes outside [lo, hi) (the
// blocks a direct write reads back and rewrites whole) and partial blocks
// are always data. It stops at fn's first error.
func Split(p []byte, off, lo, hi, grain int64, fn func(off, n int64, zero bool) error) error {
	end := off + int64(len(p))
	b0, b1 := alignUp(max(lo, off), grain), alignDown(min(hi, end), grain)
	start, inZero := off, false
	for b := b0; b+grain <= b1; b += grain {
		z := IsZero(p[b-off : b-off+grain])
		if z == inZero {
			continue
		}
		if b > start {
			if err := fn(start, b-start, inZero); err != nil {
				return err
			}
		}
		start, inZero = b, z
	}
	if inZero {
		if err := fn(start, b1-start, true); err != nil {
			return err
		}
		start = b1
	}
	if end > start {
		return fn(start, end-start, false)
	}
	return nil
}
