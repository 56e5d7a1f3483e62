package scsi

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
)

// Error is a failed SCSI command: the ioctl failed (Err), the transport
// lost it (HostStatus), or the device completed it with a status other
// than GOOD (Status, and Sense when it sent sense data).
type Error struct {
	Op   string // "EXTENDED COPY", "INQUIRY", ...
	Path string // the device, or "SRC -> DST" for EXTENDED COPY
	// Offset is the source byte offset (in the opened file) where the
	// failing command's range begins; -1 for commands without one.
	Offset int64
	// DstOffset and Len complete the picture for EXTENDED COPY.
	DstOffset, Len int64
	Status         uint8
	HostStatus     uint16
	Sense          *Sense // nil when the device sent none
	Err            error  // the system call's error; nil when the device answered
}

// newError returns nil when the command succeeded, else what failed.
func newError(op, path string, resp response, err error) *Error {
	if err == nil && resp.ok() {
		return nil
	}
	e := &Error{Op: op, Path: path, Offset: -1, Status: resp.status, HostStatus: resp.hostStatus, Err: err}
	if s, ok := parseSense(resp.sense); ok && err == nil {
		e.Sense = &s
	}
	return e
}

func (e *Error) Error() string {
	where := e.Path
	if e.Offset >= 0 {
		where += fmt.Sprintf(" at offset %d", e.Offset)
		if e.Len > 0 {
			where += fmt.Sprintf(" (%d bytes to offset %d)", e.Len, e.DstOffset)
		}
	}
	return fmt.Sprintf("%s %s: %s", e.Op, where, e.what())
}

// what says what went wrong, most specific first.
func (e *Error) what() string {
	switch {
	case e.Err != nil:
		return e.Err.Error()
	case e.HostStatus != 0:
		return hostWords(e.HostStatus)
	case e.Sense != nil:
		return e.Sense.String()
	case e.Status == statusCheckCondition:
		return "check condition without sense data"
	}
	return statusWords(e.Status)
}

func (e *Error) Unwrap() error { return e.Err }

// unavailableErrnos are the ioctl failures that mean "SCSI commands by
// SG_IO are not available to us here".
var unavailableErrnos = map[unix.Errno]string{
	// Not a SCSI device: block drivers answer ioctls they do not know
	// with ENOTTY (ENOIOCTLCMD reaches user space as ENOTTY) or EINVAL.
	unix.ENOTTY:     "the device does not take SCSI commands (SG_IO)",
	unix.EINVAL:     "the device does not take SCSI commands (SG_IO)",
	unix.EOPNOTSUPP: "the device does not take SCSI commands (SG_IO)",
	// Commands outside the kernel's read-only allow list, and any command
	// through a partition, need CAP_SYS_RAWIO; a container may also
	// filter the ioctl with seccomp.
	unix.EPERM:  "SCSI commands by SG_IO need CAP_SYS_RAWIO (run as root)",
	unix.EACCES: "SCSI commands by SG_IO need CAP_SYS_RAWIO (run as root)",
}

func (e *Error) verdict() verdict {
	if e.Err != nil {
		var errno unix.Errno
		if errors.As(e.Err, &errno) && unavailableErrnos[errno] != "" {
			return unavailable
		}
		return real
	}
	if e.HostStatus != 0 || e.Status != statusCheckCondition || e.Sense == nil {
		return real
	}
	return e.Sense.verdict()
}

// classified returns e as the copier should see it: wrapped as
// "unavailable" when the path cannot serve, e itself when it is real.
func (e *Error) classified() error {
	if e.verdict() != unavailable {
		return e
	}
	if e.Err != nil {
		var errno unix.Errno
		errors.As(e.Err, &errno)
		return copypath.Unavailable(fmt.Errorf("%s (%w)", unavailableErrnos[errno], e))
	}
	return copypath.Unavailable(e)
}
