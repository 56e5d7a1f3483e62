package copier

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/ioctl"
	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// endpoint is one opened side of a copy with the facts the plan needs.
type endpoint struct {
	path  string
	file  *os.File
	block bool          // block device (else regular file)
	dev   *sysfs.Device // block devices only; nil if sysfs could not tell
	size  int64
	lbs   int64 // logical block size; 1 for regular files
	// direct is set when file was opened with O_DIRECT: the kernel only
	// offloads copy_file_range between block devices opened that way, and
	// it keeps the onload copy out of the page cache.
	direct bool
	// disk identifies the whole disk (block) or the inode (file) so that
	// overlap is judged on what is really shared; start shifts partition
	// offsets to whole-disk offsets.
	disk  string
	start int64
	// Identity for a --state record: the device number of a block device;
	// the file system's device and the inode of a regular file.
	rdev, devno, ino uint64
}

func (e *endpoint) onload() onload.Endpoint {
	return onload.Endpoint{File: e.file, Direct: e.direct, Align: e.lbs}
}

// ep is the endpoint as an offload path sees it.
func (e *endpoint) ep() copypath.Endpoint {
	return copypath.Endpoint{Path: e.path, File: e.file, Block: e.block, Dev: e.dev, Size: e.size, LBS: e.lbs, Disk: e.disk, Start: e.start}
}

func (e *endpoint) close() error {
	if e == nil || e.file == nil {
		return nil
	}
	return e.file.Close()
}

// openSource opens the source read-only. The source may be in use (mounted,
// held by dm): reading a live device is the caller's choice, like dd's.
func openSource(sys sysfs.Sys, path string) (*endpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			return nil, err
		}
		return blockEndpoint(sys, path, f)
	case st.Mode().IsRegular():
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return fileEndpoint(path, f)
	default:
		return nil, fmt.Errorf("%s: not a block device or regular file (%s)", path, st.Mode().Type())
	}
}

// ErrInUse and ErrReadOnly are the refusals to write a destination.
var (
	ErrInUse    = errors.New("in use (mounted, or held by device-mapper, md or another exclusive opener); refusing to write")
	ErrReadOnly = errors.New("read-only; refusing to write")
)

// openDest opens the destination for reading and writing. A block device is
// opened with O_EXCL: the kernel then fails with EBUSY while a file system
// is mounted on it or dm/md holds it, which is how we refuse to write under
// a live file system. With readOnly (dry runs) the same exclusive claim is
// taken read-only, so a dry run reports the same refusals and writes
// nothing. A missing regular file is created unless readOnly.
func openDest(sys sysfs.Sys, path string, readOnly bool) (*endpoint, bool, error) {
	st, err := os.Stat(path)
	created := false
	switch {
	case errors.Is(err, os.ErrNotExist) && !readOnly:
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if err != nil {
			return nil, false, err
		}
		created = true
		ep, err := fileEndpoint(path, f)
		return ep, created, err
	case errors.Is(err, os.ErrNotExist):
		// A dry run of a copy to a file that does not exist yet.
		return &endpoint{path: path, lbs: 1, disk: "new:" + path}, false, nil
	case err != nil:
		return nil, false, err
	}
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		f, err := os.OpenFile(path, mode|os.O_EXCL|unix.O_DIRECT, 0)
		if err != nil {
			return nil, false, destOpenError(path, err)
		}
		ro, err := ioctl.ReadOnly(f)
		if err != nil {
			f.Close()
			return nil, false, err
		}
		if ro {
			f.Close()
			return nil, false, fmt.Errorf("destination %s: %w (the kernel marks it read-only: BLKROGET)", path, ErrReadOnly)
		}
		ep, err := blockEndpoint(sys, path, f)
		return ep, false, err
	case st.Mode().IsRegular():
		f, err := os.OpenFile(path, mode, 0)
		if err != nil {
			return nil, false, destOpenError(path, err)
		}
		ep, err := fileEndpoint(path, f)
		return ep, false, err
	default:
		return nil, false, fmt.Errorf("%s: not a block device or regular file (%s)", path, st.Mode().Type())
	}
}

func destOpenError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("destination %s: %w", path, ErrInUse)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("destination %s: %w (read-only file system or device)", path, ErrReadOnly)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("destination %s: %w (no write permission)", path, ErrReadOnly)
	}
	return err
}

func blockEndpoint(sys sysfs.Sys, path string, f *os.File) (*endpoint, error) {
	ep := &endpoint{path: path, file: f, block: true, direct: true}
	var err error
	if ep.size, err = ioctl.Size(f); err != nil {
		f.Close()
		return nil, err
	}
	if ep.lbs, err = ioctl.LogicalBlockSize(f); err != nil {
		f.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	ep.rdev = st.Rdev
	// The ioctls above are the truth for this open file; sysfs adds the
	// copy limits and where a partition sits on its disk. Without sysfs
	// (a container without /sys) the copy still works, by onload.
	if d, err := sys.ByMajMin(unix.Major(st.Rdev), unix.Minor(st.Rdev)); err == nil {
		ep.dev = d
		ep.disk = "blk:" + d.Disk
		ep.start = d.Start
	} else {
		ep.disk = fmt.Sprintf("dev:%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return ep, nil
}

func fileEndpoint(path string, f *os.File) (*endpoint, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	return &endpoint{
		path: path, file: f, size: st.Size, lbs: 1,
		disk:  fmt.Sprintf("ino:%d:%d", st.Dev, st.Ino),
		devno: st.Dev, ino: st.Ino,
	}, nil
}
