// Package sysfs reads what the kernel says about a block device under
// /sys: its size, block sizes, request limits and the copy offload limits
// blkcopy plans its chunks by. It reads from a root directory that is "/"
// on a live system and a captured tree in tests and support cases (the
// meaning of lsblk's --sysroot).
package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotBlockDevice is returned by Open for paths that exist but are not
// block devices; callers treat regular files separately.
var ErrNotBlockDevice = errors.New("not a block device")

// ErrNoCopyOffload is returned by SetCopyMaxBytes when the kernel has no
// copy_max_bytes attribute to write.
var ErrNoCopyOffload = errors.New("kernel lacks copy offload (no copy_max_bytes)")

// Device is one block device as sysfs describes it.
type Device struct {
	Path   string // path as given (or /dev/<name> for listed devices)
	Name   string // kernel name ("nvme0n1p2")
	MajMin string // "259:3"
	// Disk is the whole-disk kernel name ("nvme0n1"); Name for a disk.
	Disk      string
	Partition bool
	// Start is the partition's first byte on its disk, 0 for a disk. The
	// overlap check between a partition and its disk needs it.
	Start int64
	Size  int64 // bytes

	LogicalBlockSize, PhysicalBlockSize, MinIOSize, OptimalIOSize int64
	MaxSectorsKB, MaxHWSectorsKB, MaxSegments, DMAAlignment       int64
	Rotational, ReadOnly                                          bool

	// LoopBackingFile is the file behind a loop device, "" for an
	// unattached loop device or any other device.
	LoopBackingFile string
	// WWID is the disk's world-wide identifier (an NVMe namespace's
	// EUI-64, NGUID or serial and namespace ID; a SCSI disk's VPD 0x83
	// name), "" when the kernel shows none. Unlike the device name and
	// number, it stays the same across reboots.
	WWID string
	// DMUUID is a device-mapper device's UUID (LVM's carries the LV's).
	DMUUID string

	// Copy comes from the disk's queue/: a partition has none of its own.
	Copy CopyLimits
	// Slaves are the devices under a device-mapper or md device, each with
	// its own limits (a copy offloads only if every layer passes it down).
	Slaves []*Device
}

// CopyLimits are the kernel's copy offload limits of one request queue.
type CopyLimits struct {
	// KernelSupport: the copy attributes exist. Mainline kernels have
	// none; that is the common case, not an error.
	KernelSupport bool
	// MaxBytes (copy_max_bytes) is what the block layer sends in one copy
	// request; 0 means an administrator disabled offload. MaxHWBytes
	// (copy_max_hw_bytes) is what the driver accepts; 0 means the device
	// cannot copy.
	MaxBytes, MaxHWBytes int64
}

// StableID names the device in a way that survives a reboot, for a record
// of a copy that resumes after one (the device number and /dev name may
// change: NVMe and SCSI disks are numbered in the order their probes
// finish): the disk's WWID, a loop device's backing file or a dm UUID,
// with a partition's start on its disk. "" when there is none.
func (d *Device) StableID() string {
	var id string
	switch {
	case d.WWID != "":
		id = "wwid:" + d.WWID
	case d.LoopBackingFile != "":
		id = "loop:" + d.LoopBackingFile
	case d.DMUUID != "":
		id = "dm:" + d.DMUUID
	default:
		return ""
	}
	if d.Partition {
		id += fmt.Sprintf("@%d", d.Start)
	}
	return id
}

// CanOffload reports whether the kernel would send copy requests to the
// device at all.
func (c CopyLimits) CanOffload() bool {
	return c.KernelSupport && c.MaxBytes > 0 && c.MaxHWBytes > 0
}

// Verdict says in words what blkcopy will do with this queue. The phrases
// are documented in the limits man page; keep them stable.
func (c CopyLimits) Verdict() string {
	switch {
	case !c.KernelSupport:
		return "no offload: kernel lacks copy offload"
	case c.MaxHWBytes == 0:
		return "no offload: device cannot copy (copy_max_hw_bytes=0)"
	case c.MaxBytes == 0:
		return "no offload: disabled (copy_max_bytes=0)"
	default:
		return fmt.Sprintf("offload (max %s per request)", FormatLimit(c.MaxBytes))
	}
}

// FormatLimit prints a limit exactly, in the largest binary unit that
// divides it: "8 MiB", "1280 KiB", "262140 KiB" (65535 4-KiB blocks, which
// a rounding "256 MiB" would overstate), "512 B". Sizes of devices may be
// rounded for reading; request limits are what a user tunes and compares.
func FormatLimit(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d %s", n/u.mult, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// Sys reads sysfs below Root.
type Sys struct{ Root string }

func (s Sys) root() string {
	if s.Root == "" {
		return "/"
	}
	return s.Root
}

func (s Sys) live() bool { return filepath.Clean(s.root()) == "/" }

func (s Sys) path(elem ...string) string {
	return filepath.Join(append([]string{s.root(), "sys"}, elem...)...)
}

// Open finds the sysfs node of the device at path. On the live system it
// goes by the device number of the node (so /dev/mapper/x, /dev/disk/by-id
// links and renamed nodes all work); under another root, where the device
// nodes do not exist, it goes by the name the path ends in.
func (s Sys) Open(path string) (*Device, error) {
	if s.live() {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return nil, fmt.Errorf("%s: %w", path, ErrNotBlockDevice)
		}
		d, err := s.ByMajMin(unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		d.Path = path
		return d, nil
	}
	name := filepath.Base(path)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		name = filepath.Base(real)
	}
	dir := s.path("class", "block", name)
	if _, err := os.Stat(dir); err != nil {
		// /dev/mapper/<name> is a device-mapper name, not a kernel name.
		dm, dmErr := s.byDMName(name)
		if dmErr != nil || dm == "" {
			return nil, &notFoundError{path, filepath.Dir(dir)}
		}
		dir = s.path("class", "block", dm)
	}
	d, err := s.read(dir, 0)
	if err != nil {
		return nil, err
	}
	d.Path = path
	return d, nil
}

// notFoundError is a device missing from a captured tree. It matches
// fs.ErrNotExist without repeating "file does not exist" after the message.
type notFoundError struct{ path, dir string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("%s: no such block device in %s", e.path, e.dir)
}

func (e *notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

func (s Sys) byDMName(name string) (string, error) {
	names, err := filepath.Glob(s.path("block", "*", "dm", "name"))
	if err != nil {
		return "", err
	}
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Base(filepath.Dir(filepath.Dir(p))), nil
		}
	}
	return "", nil
}

// ByMajMin reads the device with the given device number through
// /sys/dev/block/MAJ:MIN, the kernel's index of every block device and
// partition.
func (s Sys) ByMajMin(major, minor uint32) (*Device, error) {
	d, err := s.read(s.path("dev", "block", fmt.Sprintf("%d:%d", major, minor)), 0)
	if err != nil {
		return nil, err
	}
	d.Path = "/dev/" + d.Name
	return d, nil
}

// List returns every entry of /sys/block (whole disks, dm and md devices,
// loop devices; not partitions), sorted by name.
func (s Sys) List() ([]*Device, error) {
	entries, err := os.ReadDir(s.path("block"))
	if err != nil {
		return nil, err
	}
	var devs []*Device
	for _, e := range entries {
		dir := s.path("block", e.Name())
		d, err := s.read(dir, 0)
		if _, lerr := os.Lstat(dir); err != nil && errors.Is(lerr, fs.ErrNotExist) {
			// Removed while we read it (a dm device torn down, a loop
			// partition dropped): it is no longer there to list.
			continue
		}
		if err != nil {
			return nil, err
		}
		d.Path = "/dev/" + d.Name
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b *Device) int { return strings.Compare(a.Name, b.Name) })
	return devs, nil
}

// KernelHasCopyOffload reports whether any block device has the copy
// attributes: the kernel adds them to every queue or to none.
func (s Sys) KernelHasCopyOffload() (bool, error) {
	if _, err := os.ReadDir(s.path("block")); err != nil {
		return false, err
	}
	found, err := filepath.Glob(s.path("block", "*", "queue", "copy_max_bytes"))
	return len(found) > 0, err
}

// SetCopyMaxBytes writes copy_max_bytes of d's disk (the attribute belongs
// to the request queue, which a partition shares with its disk) and reads
// back what the kernel kept into d.Copy: values above copy_max_hw_bytes are
// clamped, so the caller must not assume its own value.
func (s Sys) SetCopyMaxBytes(d *Device, n int64) error {
	p := s.path("class", "block", d.Disk, "queue", "copy_max_bytes")
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", p, ErrNoCopyOffload)
	}
	// The error already names the operation and the attribute: "open
	// .../copy_max_bytes: permission denied" when not root, "write
	// .../copy_max_bytes: invalid argument" when the kernel refuses the value.
	if err := os.WriteFile(p, []byte(strconv.FormatInt(n, 10)+"\n"), 0); err != nil {
		return err
	}
	c, err := s.copyLimits(s.path("class", "block", d.Disk, "queue"))
	if err != nil {
		return err
	}
	d.Copy = c
	return nil
}
