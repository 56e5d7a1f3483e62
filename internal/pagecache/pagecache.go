// Package pagecache keeps a block device's page cache coherent around
// commands that bypass it. Passthrough commands (NVMe Copy, SCSI EXTENDED
// COPY) read and write the medium directly: a dirty cached page of the
// source is not what they copy, a dirty cached page of the destination
// written back afterwards would overwrite what they copied, and a clean
// cached page of the destination would hide it from buffered readers. So
// an offload path writes back both ranges before each command and drops
// the destination range after it, in every device node that may cache the
// blocks (each node, a partition and its whole disk alike, has its own
// cache).
package pagecache

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// View is one block device node whose page cache may hold blocks of a
// disk: Start and Size say where the node's bytes lie on Disk.
type View struct {
	File        *os.File
	Disk        string
	Start, Size int64
}

// local returns the part of the disk byte range [off, off+n) that v
// covers, in v's own offsets.
func (v View) local(off, n int64) (int64, int64, bool) {
	lo, hi := max(off, v.Start), min(off+n, v.Start+v.Size)
	if lo >= hi {
		return 0, 0, false
	}
	return lo - v.Start, hi - lo, true
}

// RangeFunc acts on n bytes of f's cache from off. Paths keep their own
// variables of this type as test seams and pass them in.
type RangeFunc func(f *os.File, off, n int64) error

// Set is every view of the disks one copy touches.
type Set []View

// Add appends v unless a view of the same node (same File) is already
// there.
func (s Set) Add(v View) Set {
	for _, w := range s {
		if w.File == v.File {
			return s
		}
	}
	return append(s, v)
}

// WriteBack writes back dirty cached pages of [off, off+n) of disk in
// every view of it, with sync (WriteBackRange outside tests); op names the
// command in the error ("NVMe Copy").
func (s Set) WriteBack(sync RangeFunc, op, disk string, off, n int64) error {
	for _, v := range s {
		if v.Disk != disk {
			continue
		}
		lo, l, ok := v.local(off, n)
		if !ok {
			continue
		}
		if err := sync(v.File, lo, l); err != nil {
			return fmt.Errorf("write back cached pages of %s at offset %d (%d bytes) before %s: %w", v.File.Name(), lo, l, op, err)
		}
	}
	return nil
}

// Drop drops cached pages of [off, off+n) of disk in every view of it,
// with drop (DropRange outside tests). POSIX_FADV_DONTNEED invalidates only
// whole pages inside the range it is given, so the range is widened to
// page boundaries: the pages that straddle its ends also hold destination
// blocks, and the clean pages beside them that go too are simply read
// again. Dirty pages (none in the range after WriteBack, unless someone
// writes it during the copy) and mapped pages are not dropped; that race
// with a concurrent writer is the same for every O_DIRECT copy.
func (s Set) Drop(drop RangeFunc, op, disk string, off, n int64) error {
	ps := int64(os.Getpagesize())
	for _, v := range s {
		if v.Disk != disk {
			continue
		}
		o, l, ok := v.local(off, n)
		if !ok {
			continue
		}
		lo, hi := o&^(ps-1), (o+l+ps-1)&^(ps-1)
		if err := drop(v.File, lo, hi-lo); err != nil {
			return fmt.Errorf("drop cached pages of %s at offset %d (%d bytes) after %s: %w", v.File.Name(), lo, hi-lo, op, err)
		}
	}
	return nil
}

// WriteBackRange writes back f's dirty cached pages in [off, off+n) and
// waits for them. sync_file_range on the block device writes back only
// these pages (no whole-device flush, no BLKFLSBUF, which would also drop
// every other cached page of the device); WAIT_BEFORE waits for writeback
// already under way, WAIT_AFTER for ours.
func WriteBackRange(f *os.File, off, n int64) error {
	var err error
	if cerr := control(f, func(fd uintptr) {
		err = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	}); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("sync_file_range", err)
}

// DropRange drops f's clean cached pages in [off, off+n).
func DropRange(f *os.File, off, n int64) error {
	var err error
	if cerr := control(f, func(fd uintptr) {
		err = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
	}); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("posix_fadvise(POSIX_FADV_DONTNEED)", err)
}

// control runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode.
func control(f *os.File, fn func(fd uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}
