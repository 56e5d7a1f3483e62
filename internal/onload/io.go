package onload

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Test seams: the positional syscalls every byte of a copy goes through.
// Tests swap them to inject short transfers, EINTR and errors at chosen
// offsets of chosen descriptors; nothing else assigns them.
var (
	pread  = unix.Pread
	pwrite = unix.Pwrite
)

// Error is a failed I/O with the operation, the file and the byte offset at
// which it failed, so a user can find the bad sector and resume from there.
type Error struct {
	Op     string // "read", "write", "fdatasync", ...
	Path   string
	Offset int64
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s at offset %d: %v", e.Op, e.Path, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// side is an Endpoint reduced to what the I/O loops need.
type side struct {
	fd     int
	path   string
	direct bool
	align  int64 // 1 unless direct
}

func newSide(e Endpoint) side {
	s := side{fd: int(e.File.Fd()), path: e.File.Name(), direct: e.Direct, align: 1}
	if e.Direct {
		// O_DIRECT needs at least 512-byte alignment on every Linux block
		// driver; a caller that passed 0 or 1 would otherwise get EINVAL
		// from the first unaligned I/O.
		s.align = max(e.Align, 512)
	}
	return s
}

// readAt fills p from off, retrying EINTR and continuing after short reads.
// Reaching end of file is fine once need bytes are in: aligned windows may
// stick out past the end of a regular file. Fewer than need bytes is
// io.ErrUnexpectedEOF, because a source that shrank under us must never
// turn into a silently short copy.
func (s side) readAt(p []byte, off int64, need int) (int, error) {
	got := 0
	for got < len(p) {
		m, err := pread(s.fd, p[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, &Error{Op: "read", Path: s.path, Offset: off + int64(got), Err: err}
		}
		if m <= 0 {
			break
		}
		got += m
		// An O_DIRECT read that ends off the block grid stopped at end of
		// file; reading on from there would fail with EINVAL.
		if s.direct && int64(m)%s.align != 0 {
			break
		}
	}
	if got < need {
		return got, &Error{Op: "read", Path: s.path, Offset: off + int64(got), Err: io.ErrUnexpectedEOF}
	}
	return got, nil
}

// writeAt writes all of p at off, retrying EINTR and continuing after short
// writes. A write that makes no progress without an error is reported, not
// retried forever.
func (s side) writeAt(p []byte, off int64) error {
	for len(p) > 0 {
		m, err := pwrite(s.fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &Error{Op: "write", Path: s.path, Offset: off, Err: err}
		}
		if m <= 0 {
			return &Error{Op: "write", Path: s.path, Offset: off, Err: io.ErrShortWrite}
		}
		p = p[m:]
		off += int64(m)
	}
	return nil
}

// sync makes the written data durable and, for buffered writes, is where a
// failed writeback finally shows up as an error.
func (s side) sync() error {
	for {
		err := unix.Fdatasync(s.fd)
		switch {
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EINVAL):
			// Special files without a sync method; nothing to flush.
			return nil
		case err != nil:
			return &os.PathError{Op: "fdatasync", Path: s.path, Err: err}
		}
		return nil
	}
}

func alignDown(x, a int64) int64 { return x - x%a }

func alignUp(x, a int64) int64 { return alignDown(x+a-1, a) }
