// Package ioctl asks a block device about itself through the kernel's block
// ioctls: size, logical and physical block size, optimal I/O size and the
// read-only flag. sysfs tells the same facts by device name; these answer for
// the descriptor blkcopy actually copies through, which is what counts when a
// device was resized or remapped between the look-up and the open.
package ioctl

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Size returns the device size in bytes (BLKGETSIZE64). Unlike
// Stat().Size(), which is 0 for a block device, this is the real capacity.
func Size(f *os.File) (int64, error) {
	var n uint64
	err := control(f, "get size", "BLKGETSIZE64", func(fd int) (err error) {
		n, err = unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
		return err
	})
	return int64(n), err
}

// LogicalBlockSize returns the smallest unit the device addresses
// (BLKSSZGET): O_DIRECT offsets and lengths, and copy_file_range offsets on
// a block device, must be multiples of it.
func LogicalBlockSize(f *os.File) (int64, error) {
	return getUint32(f, "get logical block size", "BLKSSZGET", unix.BLKSSZGET)
}

// PhysicalBlockSize returns the unit the device writes without a
// read-modify-write (BLKPBSZGET).
func PhysicalBlockSize(f *os.File) (int64, error) {
	return getUint32(f, "get physical block size", "BLKPBSZGET", unix.BLKPBSZGET)
}

// OptimalIOSize returns the device's preferred request size in bytes
// (BLKIOOPT); 0 means the device states none.
func OptimalIOSize(f *os.File) (int64, error) {
	return getUint32(f, "get optimal I/O size", "BLKIOOPT", unix.BLKIOOPT)
}

// ReadOnly reports whether the kernel marks the device read-only
// (BLKROGET): writes would fail with EPERM/EROFS after the copy started, so
// blkcopy refuses such a destination up front.
func ReadOnly(f *os.File) (bool, error) {
	n, err := getUint32(f, "get read-only flag", "BLKROGET", unix.BLKROGET)
	return n != 0, err
}

// getUint32 reads an ioctl whose kernel side stores a 32-bit int or uint.
// unix.IoctlGetInt would hand the kernel a pointer to a 64-bit int, which is
// only right by accident on little-endian machines.
func getUint32(f *os.File, op, name string, req uint) (int64, error) {
	var n uint32
	err := control(f, op, name, func(fd int) (err error) {
		n, err = unix.IoctlGetUint32(fd, req)
		return err
	})
	return int64(n), err
}

// control runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode, and wraps a failure with the operation and path:
// "get size /dev/sda: ioctl(BLKGETSIZE64): inappropriate ioctl for device".
func control(f *os.File, op, name string, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: err}
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = fn(int(fd)) }); err != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: err}
	}
	if ioErr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: os.NewSyscallError("ioctl("+name+")", ioErr)}
	}
	return nil
}

// ZeroOut makes n bytes at off read as zeroes (BLKZEROOUT): the kernel
// sends the device one "write zeroes" request per its limit (NVMe Write
// Zeroes, SCSI WRITE SAME, a loop device's fallocate) and, where the device
// has none, writes zero pages itself. off and n must be multiples of the
// logical block size. The ioctl is in every kernel since 3.7, unlike
// fallocate(FALLOC_FL_ZERO_RANGE) on a block device (4.9).
func ZeroOut(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	return control(f, fmt.Sprintf("write zeroes at offset %d (%d bytes)", off, n), "BLKZEROOUT", func(fd int) error {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if errno != 0 {
			return errno
		}
		return nil
	})
}
