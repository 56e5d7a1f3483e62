// Command nvmecopy sends one NVMe Copy command to a namespace through the
// kernel's passthrough ioctl, with no block-layer copy support involved. The
// VM suite runs it once so that QEMU's pci_nvme_copy trace is known to work:
// without it, "zero Copy commands traced" on a kernel without offload would
// also pass with a broken trace setup.
//
// It encodes the command itself rather than through internal/nvme on
// purpose: an independent encoding, checked by QEMU, is what tells a broken
// trace from a broken blkcopy.
//
//	nvmecopy DEV SRC_LBA DST_LBA BLOCKS
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// passthruCmd is struct nvme_passthru_cmd from <linux/nvme_ioctl.h>.
type passthruCmd struct {
	opcode      uint8
	flags       uint8
	rsvd1       uint16
	nsid        uint32
	cdw2, cdw3  uint32
	metadata    uint64
	addr        uint64
	metadataLen uint32
	dataLen     uint32
	cdw10       uint32
	cdw11       uint32
	cdw12       uint32
	cdw13       uint32
	cdw14       uint32
	cdw15       uint32
	timeoutMS   uint32
	result      uint32
}

// The ioctl's struct size is part of its number: fail the build, not the
// ioctl, if the layout above drifts from the kernel's 72 bytes.
var _ [72]byte = [unsafe.Sizeof(passthruCmd{})]byte{}

const (
	nvmeIoctlID    = 0x4e40     // _IO('N', 0x40): the namespace ID
	nvmeIoctlIOCmd = 0xc0484e43 // _IOWR('N', 0x43, struct nvme_passthru_cmd)
	opCopy         = 0x19       // NVM command set: Copy
	rangeSize      = 32         // one format 0h source range entry
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: nvmecopy DEV SRC_LBA DST_LBA BLOCKS")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintf(os.Stderr, "nvmecopy: %v\n", err)
		os.Exit(1)
	}
}

func run(dev, srcArg, dstArg, nArg string) error {
	var nums [3]uint64
	for i, s := range []string{srcArg, dstArg, nArg} {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			return err
		}
		nums[i] = v
	}
	src, dst, blocks := nums[0], nums[1], nums[2]
	if blocks == 0 || blocks > 1<<16 {
		return fmt.Errorf("BLOCKS must be 1..65536, got %d", blocks)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	nsid, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlID, 0)
	if errno != 0 {
		return fmt.Errorf("NVME_IOCTL_ID %s: %w", dev, errno)
	}

	// One source range: SLBA at bytes 8-15, NLB (0-based) at 16-17.
	ranges := make([]byte, rangeSize)
	binary.LittleEndian.PutUint64(ranges[8:], src)
	binary.LittleEndian.PutUint16(ranges[16:], uint16(blocks-1))
	cmd := passthruCmd{
		opcode:  opCopy,
		nsid:    uint32(nsid),
		addr:    uint64(uintptr(unsafe.Pointer(&ranges[0]))),
		dataLen: rangeSize,
		cdw10:   uint32(dst),       // SDLBA, low half
		cdw11:   uint32(dst >> 32), // SDLBA, high half
		cdw12:   0,                 // NR = 0 (one range), descriptor format 0h
	}
	// A negative return is an errno; a positive one is the NVMe status
	// the controller completed the command with.
	status, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlIOCmd, uintptr(unsafe.Pointer(&cmd)))
	runtime.KeepAlive(ranges) // only cmd.addr points at it during the call
	if errno != 0 {
		return fmt.Errorf("NVMe Copy on %s: %w", dev, errno)
	}
	if status != 0 {
		return fmt.Errorf("NVMe Copy on %s: controller status %#x", dev, status)
	}
	return nil
}
