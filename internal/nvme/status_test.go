package nvme

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Statuses as the ioctl returns them (the CQE status field shifted right by
// one): DNR is 0x4000, More 0x2000, SCT in bits 10:8, SC in bits 7:0.
func TestStatusWordsAndClassification(t *testing.T) {
	tests := []struct {
		status      Status
		str         string
		unsupported bool // fall back to the host copy
	}{
		{0x4001, "invalid command opcode (SCT 0h, SC 01h, DNR)", true},
		{0x4002, "invalid field in command (SCT 0h, SC 02h, DNR)", true},
		{0x400b, "invalid namespace or format (SCT 0h, SC 0Bh, DNR)", true},
		{0x401f, "command not supported for queue in controller memory buffer (SCT 0h, SC 1Fh, DNR)", true},
		{0x4183, "command size limit exceeded (SCT 1h, SC 83h, DNR)", true},
		{0x4185, "incompatible namespace or format (SCT 1h, SC 85h, DNR)", true},
		{0x4181, "invalid protection information (SCT 1h, SC 81h, DNR)", true},
		{0x4129, "I/O command set not supported (SCT 1h, SC 29h, DNR)", true},

		// Media and data integrity errors stop the copy.
		{0x0281, "unrecovered read error (SCT 2h, SC 81h)", false},
		{0x6281, "unrecovered read error (SCT 2h, SC 81h, more in the error log, DNR)", false},
		{0x0280, "write fault (SCT 2h, SC 80h)", false},
		{0x0282, "end-to-end guard check error (SCT 2h, SC 82h)", false},
		{0x0284, "end-to-end reference tag check error (SCT 2h, SC 84h)", false},
		{0x0286, "access denied (SCT 2h, SC 86h)", false},
		{0x0287, "deallocated or unwritten logical block (SCT 2h, SC 87h)", false},
		// So do the device's other refusals that the host copy would meet too.
		{0x4080, "LBA out of range (SCT 0h, SC 80h, DNR)", false},
		{0x4020, "namespace is write protected (SCT 0h, SC 20h, DNR)", false},
		{0x4182, "attempted write to read only range (SCT 1h, SC 82h, DNR)", false},
		{0x0006, "internal error (SCT 0h, SC 06h)", false},
		{0x0082, "namespace not ready (SCT 0h, SC 82h)", false},
		{0x0004, "data transfer error (SCT 0h, SC 04h)", false},
		{0x0371, "command aborted by host (SCT 3h, SC 71h)", false},
		{0x0370, "host pathing error (SCT 3h, SC 70h)", false},
		// And everything nobody has told blkcopy about.
		{0x07c1, "vendor specific status (SCT 7h, SC C1h)", false},
		{0x01c0, "unknown command specific status (SCT 1h, SC C0h)", false},
		{0x0245, "unknown media or data integrity error (SCT 2h, SC 45h)", false},
		{0x0445, "reserved status code type (SCT 4h, SC 45h)", false},
	}
	for _, tt := range tests {
		if got := tt.status.String(); got != tt.str {
			t.Errorf("Status(%#04x).String() = %q, want %q", uint16(tt.status), got, tt.str)
		}
		if got := tt.status.Unsupported(); got != tt.unsupported {
			t.Errorf("Status(%#04x) (%s).Unsupported() = %v, want %v", uint16(tt.status), tt.status.Words(), got, tt.unsupported)
		}
	}
}

func TestStatusFields(t *testing.T) {
	s := Status(0x6281)
	if s.SCT() != SCTMediaError || s.SC() != 0x81 || !s.DNR() || !s.More() {
		t.Errorf("Status(0x6281): SCT %d SC %#x DNR %v More %v; want 2, 0x81, true, true", s.SCT(), s.SC(), s.DNR(), s.More())
	}
	if s := Status(0x0281); s.DNR() || s.More() {
		t.Errorf("Status(0x0281): DNR %v More %v; want false, false", s.DNR(), s.More())
	}
}

// Every classified status has words: the fallback reason and the error a
// user reads must never be a bare number.
func TestEveryUnsupportedStatusHasWords(t *testing.T) {
	for code := range unsupportedStatus {
		if _, ok := statusWords[code]; !ok {
			t.Errorf("status %#03x falls back but has no words", code)
		}
	}
}

func TestErrorMessagesNameDeviceOffsetAndStatus(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Op: "NVMe Copy", Path: "/dev/nvme0n1p1 -> /dev/nvme0n1p2", Offset: 1048576, DstOffset: 2097152, Len: 8388608, Status: 0x4281},
			"NVMe Copy /dev/nvme0n1p1 -> /dev/nvme0n1p2 at offset 1048576 (8388608 bytes to offset 2097152): unrecovered read error (SCT 2h, SC 81h, DNR)"},
		{&Error{Op: "NVMe Copy", Path: "/dev/nvme0n1 -> /dev/nvme0n1", Offset: 0, DstOffset: 4096, Len: 65536, Status: 0x0280, Result: 3},
			"NVMe Copy /dev/nvme0n1 -> /dev/nvme0n1 at offset 0 (65536 bytes to offset 4096): write fault (SCT 2h, SC 80h); the device reports source ranges 0-2 copied"},
		{&Error{Op: "Identify Controller", Path: "/dev/nvme0n1", Offset: -1, Err: errors.New("ioctl(NVME_IOCTL_ADMIN_CMD): permission denied")},
			"Identify Controller /dev/nvme0n1: ioctl(NVME_IOCTL_ADMIN_CMD): permission denied"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() =\n %q\nwant\n %q", got, tt.want)
		}
	}
}

func TestErrnoClassification(t *testing.T) {
	tests := []struct {
		errno unix.Errno
		words string // "" = a real error
	}{
		{unix.ENOTTY, "does not take NVMe passthrough commands"},
		{unix.EACCES, "CAP_SYS_ADMIN"},
		{unix.EPERM, "CAP_SYS_ADMIN"},
		{unix.EINVAL, "refused the passthrough command"},
		{unix.EIO, ""},
		{unix.ENODATA, ""},
		{unix.EINTR, ""}, // the driver cancelled the command (timeout, reset)
		{unix.ENODEV, ""},
		{unix.ENOMEM, ""},
	}
	for _, tt := range tests {
		got := errnoUnavailable(&Error{Op: "NVMe Copy", Err: tt.errno})
		if (tt.words == "") != (got == "") || !strings.Contains(got, tt.words) {
			t.Errorf("errnoUnavailable(%v) = %q, want %q", tt.errno, got, tt.words)
		}
	}
}
