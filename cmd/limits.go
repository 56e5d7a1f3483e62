package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/size"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// geteuid is a test seam: tests pretend not to be root without dropping
// privileges.
var geteuid = os.Geteuid

// loopMajor is the block major of loop devices. Unattached ones (size 0, no
// backing file) are hidden from the listing, as lsblk hides them.
const loopMajor = "7:"

// fileVerdict is the BLKCOPY column for a regular file.
const fileVerdict = "file: copies use copy_file_range (reflink where the file system can)"

type limitsOptions struct {
	sysroot string
	json    bool
	all     bool
	setMax  size.Value
}

// NewCmdLimits builds `blkcopy limits`.
func NewCmdLimits(s *Streams) *cobra.Command {
	o := &limitsOptions{}
	c := &cobra.Command{
		Use:   "limits [DEV...]",
		Short: "Show each device's copy offload limits and what blkcopy would do with it",
		Long: `Show, for each block device, the facts blkcopy plans a copy by: size,
logical and physical block size, the largest request (max_sectors_kb), and the
kernel's copy offload limits, with a last column that says in words whether
blkcopy would let the device copy. With no DEV, every device in /sys/block is
shown (whole disks, loop, dm and md devices; not partitions). Empty loop
devices (no backing file) are left out, as lsblk leaves them out; --all shows
them.

DEV is a device path (/dev/nvme0n1, /dev/nvme0n1p2, /dev/dm-0,
/dev/mapper/NAME, /dev/disk/by-id/...) or a regular file. A partition has no
limits of its own: it shows its disk's. A device-mapper or md device has its
own, and the devices under it (its slaves) are shown below it with theirs.

Where the facts come from, under /sys/class/block/NAME (for a partition,
its disk's queue/):
  size                         device size, in 512-byte sectors
  queue/logical_block_size     LOG-SEC: offsets and lengths must be multiples of it
  queue/physical_block_size    PHY-SEC
  queue/max_sectors_kb         MAX-IO: the largest read or write request
  queue/copy_max_hw_bytes      COPY-HW-MAX: the most the driver accepts in one
                               copy request; 0 = the device cannot copy
  queue/copy_max_bytes         COPY-MAX: the most the block layer sends in one
                               copy request (<= copy_max_hw_bytes); writable,
                               0 = offload disabled
Minimum and optimal I/O size, max_hw_sectors_kb, max_segments, dma_alignment,
rotational and read-only are in the --json output.

The BLKCOPY column says:
  offload (max 8 MiB per request)
      The kernel and the device can copy: a copy within this disk is sent to
      the device in requests of at most copy_max_bytes.
  no offload: device cannot copy (copy_max_hw_bytes=0)
      The kernel has copy offload, but the driver or device does not (an
      NVMe controller without the Copy command, a SATA disk, a loop device).
  no offload: disabled (copy_max_bytes=0)
      The device can copy but offload was turned off for it; --set-max turns
      it back on.
  no offload: kernel lacks copy offload
      There are no copy_* attributes: the running kernel does not carry block
      copy offload (no mainline kernel does yet). blkcopy copies through the
      host.
  ` + fileVerdict + `
      DEV is a regular file; the file system type is in the --json output.
A copy between two different disks is never offloaded, whatever the limits
say: blkcopy offloads only when both ends are on the same disk.

--set-max SIZE writes copy_max_bytes of DEV's disk (a partition's limit is its
disk's). The kernel keeps at most copy_max_hw_bytes; blkcopy reads the value
back and prints what the kernel kept. It needs root, and a kernel with copy
offload.

--sysroot DIR reads DIR/sys instead of /sys (as lsblk --sysroot does), to
inspect a tree captured from another machine. DEV is then looked up by name:
/dev/nvme0n1p2 as DIR/sys/class/block/nvme0n1p2.

--json prints a JSON array, one object per device, with the fields path,
name, kind ("disk", "partition" or "file"), maj_min, disk, start, size,
logical_block_size, physical_block_size, min_io_size, optimal_io_size,
max_sectors_kb, max_hw_sectors_kb, max_segments, dma_alignment, rotational,
read_only, kernel_copy_offload, copy_max_bytes, copy_max_hw_bytes, offload,
verdict and slaves (objects of the same form), and fs_type for a file. Sizes
are bytes as integers; max_sectors_kb and max_hw_sectors_kb are KiB, as in
sysfs.

SIZE: ` + size.Help + `.`,
		Example: `  # Every device on this machine
  blkcopy limits

  # One disk and a partition on it
  blkcopy limits /dev/nvme0n1 /dev/nvme0n1p2

  # Why did a copy on an LVM volume not offload? Its slaves are listed too.
  blkcopy limits /dev/mapper/vg-data

  # Disable offload for a disk, then allow requests of up to 8 MiB again
  sudo blkcopy limits /dev/nvme0n1 --set-max 0
  sudo blkcopy limits /dev/nvme0n1 --set-max 8M

  # Copy limits as JSON, for scripts
  blkcopy limits --json | jq '.[] | {name, copy_max_bytes, offload}'

  # Inspect a sysfs tree captured on a customer's machine
  blkcopy limits --sysroot ./capture /dev/nvme0n1`,
		RunE: func(c *cobra.Command, args []string) error {
			return runLimits(o, s, args)
		},
	}
	f := c.Flags()
	f.StringVar(&o.sysroot, "sysroot", "/", "read sysfs under `DIR`/sys instead of /sys")
	f.BoolVar(&o.json, "json", false, "print a JSON array (bytes as integers) instead of the table")
	f.BoolVarP(&o.all, "all", "a", false, "with no DEV, also list empty loop devices")
	f.Var(&o.setMax, "set-max", "write `SIZE` to copy_max_bytes of DEV's disk (root only; 0 disables offload)")
	return c
}

// limitsRow is one device or file as `limits` reports it. The JSON names
// are a contract with scripts (and the VM test rig): add, never rename.
type limitsRow struct {
	Path              string       `json:"path"`
	Name              string       `json:"name"`
	Kind              string       `json:"kind"`
	MajMin            string       `json:"maj_min,omitempty"`
	Disk              string       `json:"disk"`
	Start             int64        `json:"start"`
	Size              int64        `json:"size"`
	LogicalBlockSize  int64        `json:"logical_block_size"`
	PhysicalBlockSize int64        `json:"physical_block_size"`
	MinIOSize         int64        `json:"min_io_size"`
	OptimalIOSize     int64        `json:"optimal_io_size"`
	MaxSectorsKB      int64        `json:"max_sectors_kb"`
	MaxHWSectorsKB    int64        `json:"max_hw_sectors_kb"`
	MaxSegments       int64        `json:"max_segments"`
	DMAAlignment      int64        `json:"dma_alignment"`
	Rotational        bool         `json:"rotational"`
	ReadOnly          bool         `json:"read_only"`
	KernelCopyOffload bool         `json:"kernel_copy_offload"`
	CopyMaxBytes      int64        `json:"copy_max_bytes"`
	CopyMaxHWBytes    int64        `json:"copy_max_hw_bytes"`
	Offload           bool         `json:"offload"`
	Verdict           string       `json:"verdict"`
	Slaves            []*limitsRow `json:"slaves"`
	FSType            string       `json:"fs_type,omitempty"`
}

func deviceRow(d *sysfs.Device) *limitsRow {
	r := &limitsRow{
		Path: d.Path, Name: d.Name, Kind: "disk", MajMin: d.MajMin, Disk: d.Disk,
		Start: d.Start, Size: d.Size,
		LogicalBlockSize: d.LogicalBlockSize, PhysicalBlockSize: d.PhysicalBlockSize,
		MinIOSize: d.MinIOSize, OptimalIOSize: d.OptimalIOSize,
		MaxSectorsKB: d.MaxSectorsKB, MaxHWSectorsKB: d.MaxHWSectorsKB,
		MaxSegments: d.MaxSegments, DMAAlignment: d.DMAAlignment,
		Rotational: d.Rotational, ReadOnly: d.ReadOnly,
		KernelCopyOffload: d.Copy.KernelSupport,
		CopyMaxBytes:      d.Copy.MaxBytes, CopyMaxHWBytes: d.Copy.MaxHWBytes,
		Offload: d.Copy.CanOffload(), Verdict: d.Copy.Verdict(),
		Slaves: []*limitsRow{},
	}
	if d.Partition {
		r.Kind = "partition"
	}
	for _, sl := range d.Slaves {
		r.Slaves = append(r.Slaves, deviceRow(sl))
	}
	return r
}

func runLimits(o *limitsOptions, s *Streams, args []string) error {
	sys := sysfs.Sys{Root: o.sysroot}
	if o.setMax.IsSet {
		if len(args) != 1 {
			return usageErrorf("--set-max needs exactly one DEV, got %d (see 'blkcopy limits --help')", len(args))
		}
		return setCopyMax(o, s, sys, args[0])
	}
	var rows []*limitsRow
	if len(args) == 0 {
		devs, err := sys.List()
		if err != nil {
			return err
		}
		for _, d := range devs {
			if !o.all && d.Size == 0 && strings.HasPrefix(d.MajMin, loopMajor) && d.LoopBackingFile == "" {
				continue
			}
			rows = append(rows, deviceRow(d))
		}
	}
	for _, a := range args {
		r, err := openRow(sys, a)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	return printLimits(o, s, rows)
}

// openRow reports a device, or a regular file as a file: the sysroot only
// moves sysfs, a file argument is always a file on this machine.
func openRow(sys sysfs.Sys, path string) (*limitsRow, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return fileRow(path, fi)
	}
	d, err := sys.Open(path)
	if errors.Is(err, sysfs.ErrNotBlockDevice) {
		return nil, fmt.Errorf("%s: not a block device or regular file", path)
	}
	if err != nil {
		return nil, err
	}
	return deviceRow(d), nil
}

func fileRow(path string, fi fs.FileInfo) (*limitsRow, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return &limitsRow{
		Path: path, Name: fi.Name(), Kind: "file", Size: fi.Size(),
		Verdict: fileVerdict, Slaves: []*limitsRow{}, FSType: fsTypeName(st.Type),
	}, nil
}

// fsTypeName names the file systems people keep disk images on; the rest
// show as statfs's magic number, which `stat -f` users can look up.
func fsTypeName(magic int64) string {
	switch uint32(magic) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/ext3/ext4" // one magic for all three
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC:
		return "cifs"
	case unix.CEPH_SUPER_MAGIC:
		return "ceph"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.MSDOS_SUPER_MAGIC:
		return "vfat"
	case unix.EXFAT_SUPER_MAGIC:
		return "exfat"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("0x%x", uint32(magic))
}

// setCopyMax writes copy_max_bytes. The checks come in the order a user can
// act on: a kernel without the attribute cannot be fixed by sudo.
func setCopyMax(o *limitsOptions, s *Streams, sys sysfs.Sys, path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return fmt.Errorf("%s: --set-max applies to block devices; a regular file has no copy limits", path)
	}
	d, err := sys.Open(path)
	if err != nil {
		return err
	}
	if !d.Copy.KernelSupport {
		return fmt.Errorf("%s: %w", path, sysfs.ErrNoCopyOffload)
	}
	if geteuid() != 0 {
		return fmt.Errorf("%s: setting copy_max_bytes needs root", path)
	}
	if err := sys.SetCopyMaxBytes(d, o.setMax.N); err != nil {
		return fmt.Errorf("set copy_max_bytes of %s: %w", d.Disk, err)
	}
	if !o.json {
		kept := d.Copy.MaxBytes
		fmt.Fprintf(s.Out, "%s: copy_max_bytes of %s is now %s (%d bytes)", path, d.Disk, sysfs.FormatLimit(kept), kept)
		if kept != o.setMax.N {
			fmt.Fprintf(s.Out, "; asked for %d, the kernel kept %d (copy_max_hw_bytes is %d)", o.setMax.N, kept, d.Copy.MaxHWBytes)
		}
		fmt.Fprintln(s.Out)
	}
	return printLimits(o, s, []*limitsRow{deviceRow(d)})
}

func printLimits(o *limitsOptions, s *Streams, rows []*limitsRow) error {
	if o.json {
		if rows == nil {
			rows = []*limitsRow{}
		}
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(s.Out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(s.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSIZE\tLOG-SEC\tPHY-SEC\tMAX-IO\tCOPY-MAX\tCOPY-HW-MAX\tBLKCOPY")
	for _, r := range rows {
		writeRow(tw, r, r.Path, "")
	}
	return tw.Flush()
}

// writeRow prints r and, indented below it as lsblk draws them, its slaves.
func writeRow(w io.Writer, r *limitsRow, label, indent string) {
	if r.Kind == "file" {
		fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t%s\n", label, size.Format(r.Size), r.Verdict)
		return
	}
	copyMax, copyHW := "-", "-"
	if r.KernelCopyOffload {
		copyMax, copyHW = bytesCell(r.CopyMaxBytes), bytesCell(r.CopyMaxHWBytes)
	}
	fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", label, size.Format(r.Size),
		r.LogicalBlockSize, r.PhysicalBlockSize, sysfs.FormatLimit(r.MaxSectorsKB<<10), copyMax, copyHW, r.Verdict)
	for i, sl := range r.Slaves {
		branch, next := "├─", "│ "
		if i == len(r.Slaves)-1 {
			branch, next = "└─", "  "
		}
		writeRow(w, sl, indent+branch+sl.Name, indent+next)
	}
}

func bytesCell(n int64) string {
	if n == 0 {
		return "0"
	}
	return sysfs.FormatLimit(n)
}
