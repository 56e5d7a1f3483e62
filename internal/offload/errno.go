package offload

import (
	"errors"

	"golang.org/x/sys/unix"
)

// unavailableErrnos is the one place that decides which copy_file_range
// errors mean "offload is not available for this pair here, copy by onload
// instead". Every errno not listed is a real error that stops the copy
// (EIO, ENODATA, ENOSPC, EDQUOT, ENOMEM, EROFS, EFBIG, EPERM, ...), because
// the read/write copy would meet the same medium, quota or policy and
// falling back would only hide the first, most accurate report.
//
// The list follows coreutils' is_CLONENOTSUP and Go's
// internal/poll.CopyFileRange, narrowed for block devices.
var unavailableErrnos = map[unix.Errno]struct{}{
	// Kernels without copy offload refuse block devices, and every kernel
	// refuses a mixed pair (block device with regular file), with EINVAL.
	unix.EINVAL: {},
	// Before Linux 5.3, and again since 5.19 for file systems without a
	// cross-file-system copy, two different file systems give EXDEV.
	unix.EXDEV: {},
	// NFS and other file systems without a copy method (Go issue #40731).
	// On Linux ENOTSUP is the same number as EOPNOTSUPP.
	unix.EOPNOTSUPP: {},
	// copy_file_range appeared in Linux 4.5; seccomp filters also answer
	// ENOSYS for system calls they do not know.
	unix.ENOSYS: {},
	// The offload series wants both descriptors opened alike (O_DIRECT on
	// both); a mismatch gives EBADF although each descriptor is fine on its
	// own. Descriptors that really are wrong (source not readable,
	// destination not writable or O_APPEND) are told apart in Copy,
	// see badDescriptors, and stay real errors.
	unix.EBADF: {},
	// coreutils lists ENOTTY because FICLONE is an ioctl and file systems
	// without it answer "inappropriate ioctl". copy_file_range falls back to
	// the same clone path on some file systems and stacking file systems
	// (FUSE, overlayfs) pass such answers through; it says nothing about the
	// data or the device, so the plain copy is the right answer.
	unix.ENOTTY: {},
}

// Decided against, with the reason, so nobody adds them back by copying
// coreutils' list:
//
//   - EPERM: Go (issue #40893) and coreutils fall back because seccomp in old
//     containers answered EPERM instead of ENOSYS. For blkcopy EPERM more
//     often means an immutable or append-only destination or a sealed file,
//     where the plain write fails too, or worse, is allowed to go around a
//     policy that forbade this copy. It is a real error.
//   - EACCES: for the same reason as EPERM: an LSM or sandbox denied this
//     copy at this point, after open(2) already granted access; copying the
//     bytes another way would sidestep that decision. Real error.
//   - ETXTBSY: copy_file_range answers it when either end is an active swap
//     file. write(2) refuses an active swap file too (generic_write_checks),
//     so onload would fail the same way after wasting a read. Real error.

// Unavailable reports whether err means "offload is not available for this
// pair here; fall back to onload", per unavailableErrnos.
func Unavailable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.badDescriptors {
		return false
	}
	var errno unix.Errno
	if !errors.As(e.Err, &errno) {
		return false
	}
	_, ok := unavailableErrnos[errno]
	return ok
}

// badDescriptors reports whether an EBADF is the caller's own doing rather
// than an O_DIRECT mismatch: copy_file_range also answers EBADF when the
// source is not open for reading, the destination not open for writing, or
// the destination has O_APPEND. A fallback would then fail too or, with
// O_APPEND, write at the end of the file instead of at dstOff.
func badDescriptors(dstFd, srcFd uintptr) bool {
	srcFlags, err := unix.FcntlInt(srcFd, unix.F_GETFL, 0)
	if err != nil {
		return true
	}
	dstFlags, err := unix.FcntlInt(dstFd, unix.F_GETFL, 0)
	if err != nil {
		return true
	}
	if srcFlags&unix.O_ACCMODE == unix.O_WRONLY {
		return true
	}
	if dstFlags&unix.O_ACCMODE == unix.O_RDONLY {
		return true
	}
	return dstFlags&unix.O_APPEND != 0
}
