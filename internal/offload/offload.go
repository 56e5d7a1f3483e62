// Package offload copies one chunk with copy_file_range(2) and says whether
// a failure means "offload is not available here" or a real error.
package offload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// maxCall caps one copy_file_range call. The kernel caps a call near 2 GiB
// anyway; a smaller cap keeps cancellation and progress responsive when
// the kernel does the copy itself at device speed.
const maxCall = 1 << 30

// copyFileRange is the test seam for the system call.
var copyFileRange = unix.CopyFileRange

// Error is a failed copy_file_range call.
type Error struct {
	Op     string // "copy_file_range"
	Path   string // "SRC -> DST"
	Offset int64  // source offset where the failing call started
	Err    error  // the errno, or io.ErrUnexpectedEOF for an early source end

	// badDescriptors marks an EBADF caused by the descriptors themselves
	// (see badDescriptors); the zero value keeps the errno table's verdict.
	badDescriptors bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s at offset %d: %v", e.Op, e.Path, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Copy copies n bytes from src at srcOff to dst at dstOff with
// copy_file_range, looping on short returns and checking ctx between calls.
// It returns the bytes copied, always a contiguous prefix of the range, so
// a fallback can resume at srcOff+copied. progress, if not nil, is called
// after each successful call with the bytes that call copied.
//
// The file positions of src and dst are neither used nor moved: the kernel
// gets pointers to local offsets.
func Copy(ctx context.Context, dst, src *os.File, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	if n < 0 || srcOff < 0 || dstOff < 0 {
		return 0, fmt.Errorf("copy_file_range %s -> %s at offset %d: negative length or offset (len %d, dst offset %d)",
			src.Name(), dst.Name(), srcOff, n, dstOff)
	}
	srcFd, dstFd := src.Fd(), dst.Fd()
	defer runtime.KeepAlive(src)
	defer runtime.KeepAlive(dst)

	path := src.Name() + " -> " + dst.Name()
	fail := func(at int64, err error) *Error {
		return &Error{Op: "copy_file_range", Path: path, Offset: at, Err: err}
	}
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		roff, woff := srcOff+done, dstOff+done
		want := min(n-done, maxCall)
		start := roff
		c, err := copyFileRange(int(srcFd), &roff, int(dstFd), &woff, int(want), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			e := fail(start, err)
			if errors.Is(err, unix.EBADF) {
				e.badDescriptors = badDescriptors(dstFd, srcFd)
			}
			return done, e
		}
		if c <= 0 {
			// 0 means the source ended before the range did. Taking that as
			// "done" is how copy tools truncated large copies silently.
			return done, fail(start, fmt.Errorf("source ended after %d of %d bytes: %w", done, n, io.ErrUnexpectedEOF))
		}
		if int64(c) > want {
			return done, fail(start, fmt.Errorf("kernel reported %d bytes copied, %d asked", c, want))
		}
		done += int64(c)
		if progress != nil {
			progress(int64(c))
		}
	}
	return done, nil
}
