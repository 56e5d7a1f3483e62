package onload

// RangeReader reads byte ranges of one endpoint at any offset and length,
// going through the enclosing block-aligned window when the file is open
// with O_DIRECT. The verifier uses it to read both sides of a copy back.
type RangeReader struct{ s side }

// NewRangeReader returns a reader for e.
func NewRangeReader(e Endpoint) *RangeReader { return &RangeReader{s: newSide(e)} }

// BufSize is how large (and how aligned, see NewBuffers) a buffer must be to
// read any n-byte range.
func (r *RangeReader) BufSize(n int64) int64 { return r.s.windowSize(n) }

// ReadRange reads [off, off+n) into buf and returns the part of buf holding
// exactly those bytes. Fewer than n bytes before end of file is an
// io.ErrUnexpectedEOF *Error.
func (r *RangeReader) ReadRange(buf []byte, off, n int64) ([]byte, error) {
	return r.s.readRange(buf, off, n)
}

func (s side) windowSize(n int64) int64 {
	if !s.direct {
		return n
	}
	// An unaligned range touches at most one extra block at each end.
	return alignUp(n, s.align) + 2*s.align
}

func (s side) readRange(buf []byte, off, n int64) ([]byte, error) {
	w0 := alignDown(off, s.align)
	w1 := alignUp(off+n, s.align)
	if _, err := s.readAt(buf[:w1-w0], w0, int(off+n-w0)); err != nil {
		return nil, err
	}
	return buf[off-w0 : off-w0+n], nil
}
