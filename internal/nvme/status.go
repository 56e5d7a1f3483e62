package nvme

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Status is an NVMe completion status as a passthrough ioctl returns it: a
// positive return value is the Status Field of the completion queue entry
// (CQE Dword 3 bits 31:17, NVMe Base Specification "Completion Queue Entry")
// shifted down by one, the way the Linux driver stores it
// (nvme_req(req)->status = le16_to_cpu(cqe->status) >> 1):
//
//	bits  7:0  SC   Status Code
//	bits 10:8  SCT  Status Code Type (0 generic, 1 command specific,
//	                2 media and data integrity, 3 path related, 7 vendor)
//	bits 12:11 CRD  Command Retry Delay
//	bit  13    M    More (the Error Information log page has more)
//	bit  14    DNR  Do Not Retry
type Status uint16

// Status Code Types (NVMe Base Specification, "Status Field Definition").
const (
	SCTGeneric         = 0
	SCTCommandSpecific = 1
	SCTMediaError      = 2
	SCTPath            = 3
	SCTVendor          = 7
)

// SCT is the Status Code Type.
func (s Status) SCT() uint8 { return uint8(s>>8) & 7 }

// SC is the Status Code within its type.
func (s Status) SC() uint8 { return uint8(s) }

// DNR reports the Do Not Retry bit: the controller says the same command
// would fail again.
func (s Status) DNR() bool { return s&0x4000 != 0 }

// More reports the More bit: the controller's Error Information log page
// holds more about this failure (nvme error-log shows it).
func (s Status) More() bool { return s&0x2000 != 0 }

// code is SCT and SC together, the key of statusWords.
func (s Status) code() uint16 { return uint16(s) & 0x7ff }

// statusWords turns (SCT << 8 | SC) into words. Generic and media codes are
// from the NVMe Base Specification 2.0 ("Generic Command Status Values",
// "Media and Data Integrity Errors", "Path Related Status"); the NVM
// command set ones (SCT 0 80h-84h, SCT 1 80h-89h, SCT 2 80h-88h) from the
// NVM Command Set Specification 1.2, Figures 17-19 and the Copy command
// section (3.3.2); names as in libnvme's nvme_status_to_string. The Linux
// driver itself completes commands with SCT 3 codes 70h/71h when the host
// gave up on a path or aborted the command.
var statusWords = map[uint16]string{
	0x000: "successful completion",
	0x001: "invalid command opcode",
	0x002: "invalid field in command",
	0x003: "command ID conflict",
	0x004: "data transfer error",
	0x005: "command aborted due to power loss notification",
	0x006: "internal error",
	0x007: "command abort requested",
	0x008: "command aborted due to submission queue deletion",
	0x009: "command aborted due to failed fused command",
	0x00a: "command aborted due to missing fused command",
	0x00b: "invalid namespace or format",
	0x00c: "command sequence error",
	0x00d: "invalid SGL segment descriptor",
	0x00e: "invalid number of SGL descriptors",
	0x00f: "data SGL length invalid",
	0x010: "metadata SGL length invalid",
	0x011: "SGL descriptor type invalid",
	0x012: "invalid use of controller memory buffer",
	0x013: "PRP offset invalid",
	0x014: "atomic write unit exceeded",
	0x015: "operation denied",
	0x016: "SGL offset invalid",
	0x018: "host identifier inconsistent format",
	0x019: "keep alive timer expired",
	0x01a: "keep alive timeout invalid",
	0x01b: "command aborted due to preempt and abort",
	0x01c: "sanitize failed",
	0x01d: "sanitize in progress",
	0x01e: "SGL data block granularity invalid",
	0x01f: "command not supported for queue in controller memory buffer",
	0x020: "namespace is write protected",
	0x021: "command interrupted",
	0x022: "transient transport error",
	0x023: "command prohibited by command and feature lockdown",
	0x024: "admin command media not ready",
	0x025: "invalid key tag",
	0x080: "LBA out of range",
	0x081: "capacity exceeded",
	0x082: "namespace not ready",
	0x083: "reservation conflict",
	0x084: "format in progress",

	0x129: "I/O command set not supported",
	0x12a: "I/O command set not enabled",
	0x12b: "I/O command set combination rejected",
	0x12c: "invalid I/O command set",
	0x180: "conflicting attributes",
	0x181: "invalid protection information",
	0x182: "attempted write to read only range",
	0x183: "command size limit exceeded",
	0x184: "invalid command ID",
	0x185: "incompatible namespace or format",
	0x186: "fast copy not possible",
	0x187: "overlapping I/O range",
	0x188: "namespace not reachable",
	0x189: "insufficient resources",
	0x1b8: "zoned boundary error",
	0x1b9: "zone is full",
	0x1ba: "zone is read only",
	0x1bb: "zone is offline",
	0x1bc: "zone invalid write",
	0x1bd: "too many active zones",
	0x1be: "too many open zones",
	0x1bf: "invalid zone state transition",

	0x280: "write fault",
	0x281: "unrecovered read error",
	0x282: "end-to-end guard check error",
	0x283: "end-to-end application tag check error",
	0x284: "end-to-end reference tag check error",
	0x285: "compare failure",
	0x286: "access denied",
	0x287: "deallocated or unwritten logical block",
	0x288: "end-to-end storage tag check error",

	0x300: "internal path error",
	0x301: "asymmetric access persistent loss",
	0x302: "asymmetric access inaccessible",
	0x303: "asymmetric access transition",
	0x360: "controller pathing error",
	0x370: "host pathing error",
	0x371: "command aborted by host",
}

// Words says what the status means, without the numbers.
func (s Status) Words() string {
	if w, ok := statusWords[s.code()]; ok {
		return w
	}
	switch s.SCT() {
	case SCTGeneric:
		return "unknown generic status"
	case SCTCommandSpecific:
		return "unknown command specific status"
	case SCTMediaError:
		return "unknown media or data integrity error"
	case SCTPath:
		return "unknown path related status"
	case SCTVendor:
		return "vendor specific status"
	}
	return "reserved status code type"
}

// String is the words with the numbers a vendor's documentation or the
// error log would use: "unrecovered read error (SCT 2h, SC 81h, DNR)".
func (s Status) String() string {
	str := fmt.Sprintf("%s (SCT %Xh, SC %02Xh", s.Words(), s.SCT(), s.SC())
	if s.More() {
		str += ", more in the error log"
	}
	if s.DNR() {
		str += ", DNR"
	}
	return str + ")"
}

// unsupportedStatus lists the completions that mean "this controller or
// namespace does not do this Copy command here": the device refused the
// command as a whole before moving data, so falling back to the host copy
// at the same byte is safe and loses nothing. Every other status (media and
// data integrity errors above all, but also LBA out of range, write
// protection, path and transport errors, anything unknown) is a real error
// that stops the copy: the host copy would meet the same medium, the same
// protection or the same broken path, and the device's report is the most
// accurate one the user will get.
var unsupportedStatus = map[uint16]struct{}{
	// The controller does not implement Copy (or not on this queue), though
	// Identify said it does.
	0x001: {},
	0x01f: {},
	// A field the controller does not accept: above all a descriptor
	// format it does not support ("shall be aborted with a status code of
	// Invalid Field in Command", NVM Command Set 1.2, 3.3.2).
	0x002: {},
	// The descriptor format does not fit how the namespace is formatted
	// (16b versus 32b/64b guard protection information, same section).
	0x00b: {},
	// The namespace's command set is not the NVM command set, or is off.
	0x129: {}, 0x12a: {}, 0x12c: {},
	// Our protection information settings do not fit the namespace.
	0x181: {},
	// NR, NLB or their sum exceeds MSRC, MSSRL or MCL: the namespace's
	// limits are not what Identify said (reformatted since Open?).
	0x183: {},
	// Copy between these formats is not possible; fast copy not possible.
	0x185: {}, 0x186: {},
}

// Unsupported reports whether the status means "Copy is not available
// here; fall back", per unsupportedStatus.
func (s Status) Unsupported() bool {
	_, ok := unsupportedStatus[s.code()]
	return ok
}

// Error is a failed NVMe passthrough command: either the ioctl failed (Err)
// or the device completed the command with a status other than success.
type Error struct {
	Op   string // "NVMe Copy", "Identify Controller", ...
	Path string // the device, or "SRC -> DST" for Copy
	// Offset is the source byte offset (in the opened file) where the
	// failing command's range begins; -1 for commands without one.
	Offset int64
	// DstOffset and Len complete the picture for Copy.
	DstOffset, Len int64
	Status         Status
	// Result is Dword 0 of the completion. For a failed Copy the device
	// puts there the number of the lowest Source Range entry it did not
	// copy (NVM Command Set 1.2, 3.3.2); blkcopy reports it but does not
	// count those ranges as done, see session.run.
	Result uint32
	Err    error // the system call's error; nil when the device answered
}

func (e *Error) Error() string {
	where := e.Path
	if e.Offset >= 0 {
		where += fmt.Sprintf(" at offset %d", e.Offset)
		if e.Len > 0 {
			where += fmt.Sprintf(" (%d bytes to offset %d)", e.Len, e.DstOffset)
		}
	}
	if e.Err != nil {
		return fmt.Sprintf("%s %s: %v", e.Op, where, e.Err)
	}
	msg := fmt.Sprintf("%s %s: %v", e.Op, where, e.Status)
	if e.Len > 0 && e.Result > 0 {
		msg += fmt.Sprintf("; the device reports source ranges 0-%d copied", e.Result-1)
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// unavailableErrnos are the ioctl failures that mean "NVMe passthrough is
// not available to us here" rather than "the device or the data is in
// trouble".
var unavailableErrnos = map[unix.Errno]string{
	// The driver is not NVMe: block drivers answer ioctls they do not know
	// with ENOTTY (ENOIOCTLCMD reaches user space as ENOTTY) or EINVAL
	// (loop; see namespaceIDError). The NVMe driver answers EINVAL for a
	// command it will not pass on, e.g. a namespace ID that is not the
	// descriptor's.
	unix.ENOTTY:     "the device does not take NVMe passthrough commands",
	unix.EINVAL:     "the NVMe driver refused the passthrough command",
	unix.EOPNOTSUPP: "the device does not take NVMe passthrough commands",
	// Passthrough needs CAP_SYS_ADMIN (always through a partition, and
	// for admin commands like Identify); a container may also filter
	// the ioctl with seccomp.
	unix.EACCES: "NVMe passthrough needs CAP_SYS_ADMIN (run as root)",
	unix.EPERM:  "NVMe passthrough needs CAP_SYS_ADMIN (run as root)",
}

// errnoUnavailable returns the words for an ioctl error that means the path
// is unavailable, or "" for a real error (EIO, ENODEV, ENOMEM, and EINTR,
// which the driver returns when it cancelled the command after a timeout or
// a controller reset: whether it ran is unknown, so it is not retried).
func errnoUnavailable(err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	return unavailableErrnos[errno]
}
