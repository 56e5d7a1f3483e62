package sysfs

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxStack bounds the walk down slaves/: real stacks are a few layers deep
// (dm-crypt on LVM on md on disks); a captured tree with a loop must not
// hang the command.
const maxStack = 16

// sectorSize is the unit of the size and start attributes, whatever the
// device's logical block size (the kernel's sector_t is always 512 bytes).
const sectorSize = 512

// read builds a Device from the sysfs directory dir, which may be a symlink
// such as /sys/dev/block/7:0. Error messages keep dir as given, since that
// is the path a reader can look at.
func (s Sys) read(dir string, depth int) (*Device, error) {
	if depth > maxStack {
		return nil, fmt.Errorf("%s: slaves nested more than %d deep", dir, maxStack)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	d := &Device{Name: filepath.Base(real)}
	r := attrReader{dir: dir}
	d.MajMin = r.str("dev")
	d.Size = r.int("size") * sectorSize
	d.ReadOnly = r.int("ro") != 0
	d.Disk = d.Name
	queue := filepath.Join(dir, "queue")
	// A partition is a subdirectory of its disk's node and has a
	// "partition" attribute (its number); it has no queue/ of its own.
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		d.Partition = true
		d.Start = r.int("start") * sectorSize
		d.Disk = filepath.Base(filepath.Dir(real))
		queue = s.path("class", "block", d.Disk, "queue")
	}
	diskDir := dir
	if d.Partition {
		diskDir = filepath.Dir(real)
	}
	d.LoopBackingFile = optionalStr(diskDir, "loop/backing_file")
	// NVMe namespaces show wwid on the disk, SCSI disks on the device.
	d.WWID = cmp.Or(optionalStr(diskDir, "wwid"), optionalStr(diskDir, "device/wwid"))
	d.DMUUID = optionalStr(diskDir, "dm/uuid")
	q := attrReader{dir: queue}
	d.LogicalBlockSize = q.int("logical_block_size")
	d.PhysicalBlockSize = q.int("physical_block_size")
	d.MinIOSize = q.int("minimum_io_size")
	d.OptimalIOSize = q.int("optimal_io_size")
	d.MaxSectorsKB = q.int("max_sectors_kb")
	d.MaxHWSectorsKB = q.int("max_hw_sectors_kb")
	d.MaxSegments = q.int("max_segments")
	d.Rotational = q.int("rotational") != 0
	// dma_alignment appeared in Linux 6.1; older kernels align to 512.
	d.DMAAlignment = q.optionalInt("dma_alignment")
	if err := errors.Join(r.err, q.err); err != nil {
		return nil, err
	}
	if d.Copy, err = s.copyLimits(queue); err != nil {
		return nil, err
	}
	if d.Slaves, err = s.slaves(dir, depth); err != nil {
		return nil, err
	}
	return d, nil
}

// optionalStr reads an attribute that not every device has: "" when
// absent or unreadable.
func optionalStr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// copyLimits reads the copy attributes of one queue directory. Their
// absence means a kernel without copy offload, which is every mainline
// kernel so far: not an error.
func (s Sys) copyLimits(queue string) (CopyLimits, error) {
	if _, err := os.Stat(filepath.Join(queue, "copy_max_bytes")); errors.Is(err, fs.ErrNotExist) {
		return CopyLimits{}, nil
	}
	q := attrReader{dir: queue}
	c := CopyLimits{
		KernelSupport: true,
		MaxBytes:      q.int("copy_max_bytes"),
		MaxHWBytes:    q.int("copy_max_hw_bytes"),
	}
	return c, q.err
}

// slaves reads the devices listed in dir/slaves (device-mapper and md
// members). Partitions and plain disks have an empty or no slaves/.
func (s Sys) slaves(dir string, depth int) ([]*Device, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "slaves"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Device
	for _, e := range entries {
		d, err := s.read(filepath.Join(dir, "slaves", e.Name()), depth+1)
		if err != nil {
			return nil, err
		}
		d.Path = "/dev/" + d.Name
		out = append(out, d)
	}
	return out, nil
}

// attrReader reads integer attributes of one sysfs directory and keeps the
// first error, so read can list the attributes without an if per line.
type attrReader struct {
	dir string
	err error
}

func (r *attrReader) str(name string) string {
	if r.err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(r.dir, name))
	if err != nil {
		r.err = err
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (r *attrReader) int(name string) int64 {
	v := r.str(name)
	if r.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		r.err = fmt.Errorf("read %s: %w", filepath.Join(r.dir, name), err)
	}
	return n
}

func (r *attrReader) optionalInt(name string) int64 {
	if _, err := os.Stat(filepath.Join(r.dir, name)); errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	return r.int(name)
}
