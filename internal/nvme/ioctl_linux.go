package nvme

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// passthruCmd is struct nvme_passthru_cmd from <linux/nvme_ioctl.h> (also
// struct nvme_admin_cmd): the 64-byte submission queue entry minus what the
// driver fills in (command ID, data pointers), plus timeout and result.
type passthruCmd struct {
	opcode      uint8
	flags       uint8
	rsvd1       uint16
	nsid        uint32
	cdw2, cdw3  uint32
	metadata    uint64 // user address of the metadata buffer
	addr        uint64 // user address of the data buffer
	metadataLen uint32
	dataLen     uint32
	cdw10       uint32
	cdw11       uint32
	cdw12       uint32
	cdw13       uint32
	cdw14       uint32
	cdw15       uint32
	timeoutMS   uint32 // 0: the driver's default (nvme_core.io_timeout, 30 s)
	result      uint32 // Dword 0 of the completion, filled in by the driver
}

// The ioctl's struct size is part of its number: fail the build, not the
// ioctl, if the layout above drifts from the kernel's 72 bytes.
var _ [72]byte = [unsafe.Sizeof(passthruCmd{})]byte{}

// ioctl numbers from <linux/nvme_ioctl.h>.
const (
	ioctlID       = 0x4e40     // _IO('N', 0x40): the namespace ID, as the return value
	ioctlAdminCmd = 0xc0484e41 // _IOWR('N', 0x41, struct nvme_admin_cmd)
	ioctlIOCmd    = 0xc0484e43 // _IOWR('N', 0x43, struct nvme_passthru_cmd)
)

// command is one NVMe command as blkcopy sends it. data is the one data
// buffer: controller to host for Identify, host to controller for Copy (the
// opcode's low two bits give the direction, NVM Command Set 1.2 Figure 21).
type command struct {
	admin  bool // NVME_IOCTL_ADMIN_CMD, else NVME_IOCTL_IO_CMD
	opcode uint8
	nsid   uint32
	cdw10  uint32
	cdw11  uint32
	cdw12  uint32
	cdw13  uint32
	cdw14  uint32
	cdw15  uint32
	data   []byte
}

// passthru sends c through f and returns Dword 0 of the completion and its
// status, or the ioctl's error. A test seam: fakes record commands and
// answer with statuses real devices do not give on demand.
var passthru = sendCommand

// namespaceID asks the driver which namespace f is (NVME_IOCTL_ID). A test
// seam like passthru.
var namespaceID = getNamespaceID

func (c *command) passthruCmd() passthruCmd {
	p := passthruCmd{
		opcode: c.opcode,
		nsid:   c.nsid,
		cdw10:  c.cdw10,
		cdw11:  c.cdw11,
		cdw12:  c.cdw12,
		cdw13:  c.cdw13,
		cdw14:  c.cdw14,
		cdw15:  c.cdw15,
	}
	if len(c.data) > 0 {
		p.addr = uint64(uintptr(unsafe.Pointer(&c.data[0])))
		p.dataLen = uint32(len(c.data))
	}
	return p
}

func sendCommand(f *os.File, c *command) (result uint32, status Status, err error) {
	req, name := uintptr(ioctlIOCmd), "NVME_IOCTL_IO_CMD"
	if c.admin {
		req, name = ioctlAdminCmd, "NVME_IOCTL_ADMIN_CMD"
	}
	p := c.passthruCmd()
	var ret uintptr
	var errno unix.Errno
	err = control(f, func(fd uintptr) {
		ret, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&p)))
	})
	// Only p.addr points at the buffer while the driver reads or fills it.
	runtime.KeepAlive(c.data)
	switch {
	case err != nil:
		return 0, 0, err
	case errno != 0:
		return 0, 0, os.NewSyscallError("ioctl("+name+")", errno)
	case ret > 0x7fff:
		return 0, 0, fmt.Errorf("ioctl(%s): unexpected return value %#x", name, ret)
	}
	// A positive return is the NVMe status the command completed with;
	// zero is success. Either way the driver copied Dword 0 back.
	return p.result, Status(ret), nil
}

func getNamespaceID(f *os.File) (uint32, error) {
	var ret uintptr
	var errno unix.Errno
	err := control(f, func(fd uintptr) {
		ret, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, ioctlID, 0)
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("ioctl(NVME_IOCTL_ID)", errno)
	case ret == 0 || ret > 0xfffffffe:
		return 0, fmt.Errorf("ioctl(NVME_IOCTL_ID): invalid namespace ID %#x", ret)
	}
	return uint32(ret), nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode and could let the descriptor be closed under a
// command in flight.
func control(f *os.File, fn func(fd uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

// pageSize aligns passthrough buffers. The driver maps a user buffer for
// DMA directly when it meets the queue's DMA alignment and copies through
// a bounce buffer otherwise; a page-aligned buffer of at most a few pages
// always maps directly and in as few PRP entries as possible.
var pageSize = os.Getpagesize()

// alignedBuffer returns n zeroed bytes that start on a page boundary. The
// slice keeps its whole backing array alive, and Go's collector does not
// move heap objects, so the address handed to the kernel stays valid for as
// long as the slice is reachable.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+pageSize)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & uintptr(pageSize-1))
	return b[off : off+n : off+n]
}
