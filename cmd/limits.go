package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copier"
	"github.com/blkcopy/blkcopy/internal/nvme"
	"github.com/blkcopy/blkcopy/internal/offload"
	"github.com/blkcopy/blkcopy/internal/size"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// geteuid is a test seam: tests pretend not to be root without dropping
// privileges.
var geteuid = os.Geteuid

// loopMajor is the block major of loop devices. Unattached ones (size 0, no
// backing file) are hidden from the listing, as lsblk hides them.
const loopMajor = "7:"

// fileVerdict is the KERNEL column for a regular file.
const fileVerdict = "file: copies use copy_file_range (reflink where the file system can)"

// Test seams: the live device's answers, which tests give because no NVMe
// device is at hand.
var (
	// identifyNVMe asks the NVMe namespace at path what its controller
	// says about Copy. An *fs.PathError from opening it means the device
	// could not be asked at all.
	identifyNVMe = identifyReadOnly
	// pathFor asks the offload paths themselves which one a copy within
	// the device would take, so that limits gives the reasons a copy
	// gives.
	pathFor = copier.PathFor
)

// noLiveDevice is why a captured sysfs tree has no NVMe facts: they come
// from Identify commands sent to the device.
const noLiveDevice = "NVMe facts need the live device (--sysroot reads only sysfs)"

// identifyReadOnly sends Identify on path opened read-only and without
// O_EXCL: asking must not disturb a device in use (mounted, held by dm),
// and the NVMe driver takes Identify on a read-only descriptor (from
// CAP_SYS_ADMIN; since Linux 6.2 Identify Controller and Namespace from
// anyone who may open the device).
func identifyReadOnly(path string) (*nvme.Info, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return nvme.Identify(f)
}

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
logical and physical block size, the largest request (max_sectors_kb), the
kernel's copy offload limits and, for an NVMe namespace, whether its
controller supports the NVMe Copy command; then the way a copy within the
device would go (COPY-PATH) and, in the last column, what the kernel's copy
offload makes of the device. With no DEV, every device in /sys/block is
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

NVME-COPY comes from the device itself (Identify Controller, ONCS bit 8):
  yes, no   the controller does or does not support the NVMe Copy command
  n/a       DEV is not an NVMe namespace or a partition of one
  unknown   the device could not be asked: Identify needs the live device
            (not a --sysroot tree), opened read-only, and CAP_SYS_ADMIN (or,
            since Linux 6.2, permission to open it); the reason is shown
            below the table

COPY-PATH is the way a copy within the device (both ranges on it) would go.
blkcopy tries the ways in this order and takes the first that serves:
  copy_file_range   the kernel's copy offload, where copy_max_bytes > 0: it
                    keeps the block layer in charge
  nvme              NVMe Copy commands sent by passthrough: on every kernel,
                    within an NVMe namespace whose controller supports Copy
                    with non-zero limits; needs CAP_SYS_ADMIN
  scsi-xcopy        SCSI EXTENDED COPY (LID1) sent by SG_IO: on every kernel,
                    within a SCSI LU, or between two LUs its copy manager
                    reaches, when the LUs announce third-party copy (3PC),
                    have an NAA designator and the copy manager implements
                    descriptors E4h and 02h; needs CAP_SYS_RAWIO
  onload            none of them: blkcopy copies through the host
The kernel's copy offload and nvme offload only when both ends are on the
same disk (for nvme, the same namespace); scsi-xcopy also between two LUs
of one array or target, and falls back to onload when its copy manager
cannot reach the other LU. --mode onload forbids every path.

The KERNEL column says what the kernel's copy offload does with the device:
  offload (max 8 MiB per request)
      The kernel and the device can copy: a copy within this disk is sent to
      the device in requests of at most copy_max_bytes.
  no offload: device cannot copy (copy_max_hw_bytes=0)
      The kernel has copy offload, but the driver or device does not (an
      NVMe controller without the Copy command, a SATA disk, a loop device).
  no offload: disabled (copy_max_bytes=0)
      The device can copy but offload was turned off for it; --set-max turns
      it back on. The nvme path may still serve.
  no offload: kernel lacks copy offload
      There are no copy_* attributes: the running kernel does not carry block
      copy offload (no mainline kernel does yet). An NVMe namespace whose
      controller supports Copy still offloads by the nvme path; anything
      else is copied through the host.
  ` + fileVerdict + `
      DEV is a regular file; the file system type is in the --json output.

Below the table, each NVMe namespace (or partition of one) that could be
asked gets a few lines: its namespace ID, controller model and block size;
whether Copy is supported and which copy descriptor formats the controller
offers (OCFS: 0h, 1h, ...); MSSRL, the most blocks in one source range, MCL,
the most blocks in one Copy command, each in blocks and bytes, and the most
source ranges in one command (MSRC + 1: the device counts from 0); and the
copy path with, in parentheses, why each path before it could not serve, in
the words a copy gives as fallback_reason. Without the device's answer the
copy path is what sysfs alone tells.

Each SCSI disk (or partition of one) gets the same: vendor and product,
block size, the 3PC bit of INQUIRY, its NAA designator (VPD page 83h; a LU
without one cannot be named in an EXTENDED COPY), its copy manager's
operating parameters (RECEIVE COPY RESULTS: CSCD and segment descriptors per
command, the longest descriptor list and segment, the descriptor codes it
implements) and the copy path.

--set-max SIZE writes copy_max_bytes of DEV's disk (a partition's limit is its
disk's). The kernel keeps at most copy_max_hw_bytes; blkcopy reads the value
back and prints what the kernel kept. It needs root, and a kernel with copy
offload.

--sysroot DIR reads DIR/sys instead of /sys (as lsblk --sysroot does), to
inspect a tree captured from another machine. DEV is then looked up by name:
/dev/nvme0n1p2 as DIR/sys/class/block/nvme0n1p2. No device is asked: NVMe
facts need the live device.

--json prints a JSON array, one object per device, with the fields path,
name, kind ("disk", "partition" or "file"), maj_min, disk, start, size,
logical_block_size, physical_block_size, min_io_size, optimal_io_size,
max_sectors_kb, max_hw_sectors_kb, max_segments, dma_alignment, rotational,
read_only, kernel_copy_offload, copy_max_bytes, copy_max_hw_bytes, offload,
verdict, offload_path, path_reason, nvme_copy and slaves (objects of the
same form), and fs_type for a file. Sizes are bytes as integers;
max_sectors_kb and max_hw_sectors_kb are KiB, as in sysfs.
  offload        true when a copy within the device would be offloaded, by
                 any path; false for a regular file, whose copy_file_range
                 the file system serves
  verdict        the KERNEL column's words
  offload_path   "copy_file_range", "nvme", "scsi-xcopy" or "" (onload): COPY-PATH, named
                 as a copy's --json names it
  path_reason    why each path tried before offload_path (every path, when
                 it is "") could not serve: "PATH: reason", joined by "; "
  nvme_copy      null unless DEV is an NVMe namespace or a partition of
                 one; else identified (the device answered Identify), reason
                 (why it did not), model, namespace_id, lba_size, supported
                 (ONCS bit 8), mssrl_blocks, mssrl_bytes, mcl_blocks,
                 mcl_bytes, msrc_ranges (MSRC + 1) and formats (["0h", ...])
  scsi_xcopy     null unless DEV is a SCSI disk or a partition of one;
                 else identified, reason, vendor, product, third_party_copy
                 (INQUIRY 3PC), designator (NAA, hex; "" = none),
                 block_size, operating_parameters (reported or not),
                 operating_parameters_reason, max_cscd_descriptors,
                 max_segment_descriptors, max_descriptor_list_length,
                 max_segment_length (bytes, 0 = not limited) and
                 descriptor_codes (["02h", "E4h", ...])

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
  blkcopy limits --json | jq '.[] | {name, copy_max_bytes, offload, offload_path}'

  # Which way would a copy within this namespace go, and why?
  sudo blkcopy limits --json /dev/nvme0n1 | jq '.[] | {offload_path, path_reason, nvme_copy}'

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
	Path              string `json:"path"`
	Name              string `json:"name"`
	Kind              string `json:"kind"`
	MajMin            string `json:"maj_min,omitempty"`
	Disk              string `json:"disk"`
	Start             int64  `json:"start"`
	Size              int64  `json:"size"`
	LogicalBlockSize  int64  `json:"logical_block_size"`
	PhysicalBlockSize int64  `json:"physical_block_size"`
	MinIOSize         int64  `json:"min_io_size"`
	OptimalIOSize     int64  `json:"optimal_io_size"`
	MaxSectorsKB      int64  `json:"max_sectors_kb"`
	MaxHWSectorsKB    int64  `json:"max_hw_sectors_kb"`
	MaxSegments       int64  `json:"max_segments"`
	DMAAlignment      int64  `json:"dma_alignment"`
	Rotational        bool   `json:"rotational"`
	ReadOnly          bool   `json:"read_only"`
	KernelCopyOffload bool   `json:"kernel_copy_offload"`
	CopyMaxBytes      int64  `json:"copy_max_bytes"`
	CopyMaxHWBytes    int64  `json:"copy_max_hw_bytes"`
	// Offload: a copy within the device would be offloaded, by the path
	// OffloadPath names. Verdict is the kernel's side only.
	Offload bool   `json:"offload"`
	Verdict string `json:"verdict"`
	// OffloadPath is the path a copy within the device would take
	// ("copy_file_range", "nvme"; "" = onload), as a copy's JSON names it;
	// PathReason says, "name: reason" joined by "; ", why each path tried
	// before it could not serve.
	OffloadPath string `json:"offload_path"`
	PathReason  string `json:"path_reason"`
	// NVMeCopy is nil unless the device is an NVMe namespace or a
	// partition of one.
	NVMeCopy *nvmeCopyRow `json:"nvme_copy"`
	// SCSIXCopy is nil unless the device is a SCSI disk or a partition
	// of one.
	SCSIXCopy *scsiXCopyRow `json:"scsi_xcopy"`
	Slaves    []*limitsRow  `json:"slaves"`
	FSType    string        `json:"fs_type,omitempty"`
}

// nvmeCopyRow is what an NVMe namespace's controller says about the Copy
// command (Identify Controller and Identify Namespace). Block counts are in
// the namespace's formatted blocks; bytes are blocks x lba_size.
type nvmeCopyRow struct {
	// Identified: the device answered Identify; otherwise Reason says why
	// not and the other fields are zero.
	Identified  bool     `json:"identified"`
	Reason      string   `json:"reason"`
	Model       string   `json:"model"`
	NamespaceID uint32   `json:"namespace_id"`
	LBASize     int64    `json:"lba_size"`
	Supported   bool     `json:"supported"` // ONCS bit 8
	MSSRLBlocks int64    `json:"mssrl_blocks"`
	MSSRLBytes  int64    `json:"mssrl_bytes"`
	MCLBlocks   int64    `json:"mcl_blocks"`
	MCLBytes    int64    `json:"mcl_bytes"`
	MSRCRanges  int      `json:"msrc_ranges"` // MSRC + 1: the device counts from 0
	Formats     []string `json:"formats"`     // copy descriptor formats (OCFS): "0h", "1h", ...
}

func nvmeCopyOf(info *nvme.Info) *nvmeCopyRow {
	c, n := info.Controller, info.Namespace
	formats := c.Formats()
	if formats == nil {
		formats = []string{}
	}
	return &nvmeCopyRow{
		Identified: true, Model: c.Model, NamespaceID: n.ID, LBASize: n.LBASize, Supported: c.Copy(),
		MSSRLBlocks: int64(n.MSSRL), MSSRLBytes: int64(n.MSSRL) * n.LBASize,
		MCLBlocks: int64(n.MCL), MCLBytes: int64(n.MCL) * n.LBASize,
		MSRCRanges: n.MaxRanges(), Formats: formats,
	}
}

// deviceRow reports d and its slaves. live: d is on this machine (no
// --sysroot), so an NVMe namespace can be asked about Copy and the paths
// can open it.
func deviceRow(d *sysfs.Device, sys sysfs.Sys, live bool) *limitsRow {
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
		Verdict: d.Copy.Verdict(),
		Slaves:  []*limitsRow{},
	}
	if d.Partition {
		r.Kind = "partition"
	}
	r.choosePath(d, sys, live)
	for _, sl := range d.Slaves {
		r.Slaves = append(r.Slaves, deviceRow(sl, sys, live))
	}
	return r
}

// isNVMe says whether the NVMe path could serve d at all, by the test
// nvme.Path makes: an NVMe namespace or a partition of one, not a stacked
// device (dm passes ioctls to the device underneath, at its LBAs).
func isNVMe(d *sysfs.Device) bool { return nvme.IsNamespace(d.Disk) && len(d.Slaves) == 0 }

// choosePath fills in the NVMe Copy facts and the offload path of a copy
// within d. Only an NVMe namespace is opened (sr0 or fd0 may block on an
// open; no other path needs more than sysfs today), and only on the live
// system. What the device cannot be asked is a reason, not a failure.
func (r *limitsRow) choosePath(d *sysfs.Device, sys sysfs.Sys, live bool) {
	nvmeName := nvme.Path{}.Name()
	switch {
	case isSCSI(d):
		r.chooseSCSIPath(d, sys, live)
		return
	case !isNVMe(d):
		r.pathFromSysfs(d, nvmeName+": not an NVMe namespace or a partition of one")
		return
	case !live:
		r.NVMeCopy = &nvmeCopyRow{Reason: noLiveDevice, Formats: []string{}}
		r.pathFromSysfs(d, nvmeName+": "+noLiveDevice)
		return
	}
	info, err := identifyNVMe(r.Path)
	if err != nil {
		r.NVMeCopy = &nvmeCopyRow{Reason: err.Error(), Formats: []string{}}
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Op == "open" {
			// Not even opened (no permission, gone): the paths cannot
			// open it either.
			r.pathFromSysfs(d, nvmeName+": "+err.Error())
			return
		}
	} else {
		r.NVMeCopy = nvmeCopyOf(info)
	}
	r.pathFromPaths(sys)
}

// pathFromPaths asks the offload paths themselves which one a copy within
// the device would take, so that limits gives the reasons a copy gives.
func (r *limitsRow) pathFromPaths(sys sysfs.Sys) {
	name, passed, err := pathFor(sys, r.Path)
	if err != nil {
		// A path failed for real; a copy would stop with this error.
		name, passed = "", append(passed, err.Error())
	}
	r.OffloadPath, r.PathReason, r.Offload = name, strings.Join(passed, "; "), name != ""
}

// pathFromSysfs decides the path by what sysfs says, where the device is
// not asked: the kernel's copy offload needs nothing more (copy_file_range
// serves a copy within one disk exactly when its limits allow, in the
// words of the verdict), and nvmeWhy says why the NVMe path cannot be
// tried.
func (r *limitsRow) pathFromSysfs(d *sysfs.Device, nvmeWhy string) {
	kernel := offload.Path{}.Name()
	if d.Copy.CanOffload() {
		r.OffloadPath, r.PathReason, r.Offload = kernel, "", true
		return
	}
	r.OffloadPath, r.Offload = "", false
	r.PathReason = kernel + ": " + strings.TrimPrefix(d.Copy.Verdict(), "no offload: ") + "; " + nvmeWhy
}

func runLimits(o *limitsOptions, s *Streams, args []string) error {
	sys := sysfs.Sys{Root: o.sysroot}
	live := o.sysroot == "" || filepath.Clean(o.sysroot) == "/"
	if o.setMax.IsSet {
		if len(args) != 1 {
			return usageErrorf("--set-max needs exactly one DEV, got %d (see 'blkcopy limits --help')", len(args))
		}
		return setCopyMax(o, s, sys, live, args[0])
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
			rows = append(rows, deviceRow(d, sys, live))
		}
	}
	for _, a := range args {
		r, err := openRow(sys, live, a)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	return printLimits(o, s, rows)
}

// openRow reports a device, or a regular file as a file: the sysroot only
// moves sysfs, a file argument is always a file on this machine.
func openRow(sys sysfs.Sys, live bool, path string) (*limitsRow, error) {
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
	return deviceRow(d, sys, live), nil
}

func fileRow(path string, fi fs.FileInfo) (*limitsRow, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return &limitsRow{
		Path: path, Name: fi.Name(), Kind: "file", Size: fi.Size(),
		Verdict: fileVerdict, Slaves: []*limitsRow{}, FSType: fsTypeName(st.Type),
		// copy_file_range serves every pair of regular files; it is the
		// file system's copy (a reflink, or the kernel's own), not the
		// storage's, so offload stays false.
		OffloadPath: offload.Path{}.Name(),
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
func setCopyMax(o *limitsOptions, s *Streams, sys sysfs.Sys, live bool, path string) error {
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
	return printLimits(o, s, []*limitsRow{deviceRow(d, sys, live)})
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
	fmt.Fprintln(tw, "DEVICE\tSIZE\tLOG-SEC\tPHY-SEC\tMAX-IO\tCOPY-MAX\tCOPY-HW-MAX\tNVME-COPY\tCOPY-PATH\tKERNEL")
	for _, r := range rows {
		writeRow(tw, r, r.Path, "")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The NVMe facts take more than a cell: a few lines per namespace
	// below the table, which keeps its columns aligned.
	notes := &nvmeNotes{w: s.Out, done: map[string]bool{}}
	for _, r := range rows {
		notes.add(r)
	}
	if notes.noLive {
		fmt.Fprintf(s.Out, "\nNVME-COPY unknown: %s.\n", noLiveDevice)
	}
	if notes.noLiveSCSI {
		fmt.Fprintf(s.Out, "\nSCSI EXTENDED COPY unknown: %s.\n", noLiveSCSI)
	}
	return nil
}

// writeRow prints r and, indented below it as lsblk draws them, its slaves.
func writeRow(w io.Writer, r *limitsRow, label, indent string) {
	if r.Kind == "file" {
		fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t%s\t%s\t%s\n", label, size.Format(r.Size), nvmeCell(r), pathCell(r), r.Verdict)
		return
	}
	copyMax, copyHW := "-", "-"
	if r.KernelCopyOffload {
		copyMax, copyHW = bytesCell(r.CopyMaxBytes), bytesCell(r.CopyMaxHWBytes)
	}
	fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", label, size.Format(r.Size),
		r.LogicalBlockSize, r.PhysicalBlockSize, sysfs.FormatLimit(r.MaxSectorsKB<<10), copyMax, copyHW,
		nvmeCell(r), pathCell(r), r.Verdict)
	for i, sl := range r.Slaves {
		branch, next := "├─", "│ "
		if i == len(r.Slaves)-1 {
			branch, next = "└─", "  "
		}
		writeRow(w, sl, indent+branch+sl.Name, indent+next)
	}
}

// nvmeCell is the NVME-COPY column: does the controller support Copy.
func nvmeCell(r *limitsRow) string {
	switch n := r.NVMeCopy; {
	case n == nil:
		return "n/a"
	case !n.Identified:
		return "unknown"
	case n.Supported:
		return "yes"
	}
	return "no"
}

// pathCell is the COPY-PATH column: the path's name, or onload.
func pathCell(r *limitsRow) string {
	if r.OffloadPath == "" {
		return "onload"
	}
	return r.OffloadPath
}

// nvmeNotes prints, below the table, what the controller of each NVMe
// namespace says about Copy and why a copy within it takes its path.
type nvmeNotes struct {
	w    io.Writer
	done map[string]bool // once per device: a namespace may be listed and be a slave too
	// noLive: a namespace had no facts because of --sysroot; one line
	// after the notes says so for all.
	noLive bool
	// noLiveSCSI: the same for a SCSI disk.
	noLiveSCSI bool
}

// add notes r and its slaves.
func (notes *nvmeNotes) add(r *limitsRow) {
	w := notes.w
	if r.SCSIXCopy != nil && !notes.done[r.Path] {
		if r.SCSIXCopy.Reason == noLiveSCSI {
			notes.noLiveSCSI = true
		} else {
			if len(notes.done) == 0 {
				fmt.Fprintln(w)
			}
			notes.done[r.Path] = true
			scsiNote(w, r)
		}
	}
	switch n := r.NVMeCopy; {
	case n == nil || notes.done[r.Path]:
	case n.Reason == noLiveDevice:
		notes.noLive = true
	default:
		if len(notes.done) == 0 {
			fmt.Fprintln(w)
		}
		notes.done[r.Path] = true
		switch {
		case !n.Identified:
			fmt.Fprintf(w, "%s: NVMe namespace; Copy support unknown: %s\n", r.Path, n.Reason)
		case !n.Supported:
			fmt.Fprintf(w, "%s: NVMe namespace %d of %q, %d-byte blocks: Copy not supported (ONCS bit 8 clear)\n",
				r.Path, n.NamespaceID, n.Model, n.LBASize)
		default:
			formats := "formats " + strings.Join(n.Formats, " ")
			if len(n.Formats) == 0 {
				formats = "no formats listed (OCFS 0)"
			}
			fmt.Fprintf(w, "%s: NVMe namespace %d of %q, %d-byte blocks: Copy supported, %s\n",
				r.Path, n.NamespaceID, n.Model, n.LBASize, formats)
			ranges := "ranges"
			if n.MSRCRanges == 1 {
				ranges = "range"
			}
			fmt.Fprintf(w, "  MSSRL %d blocks (%s) per range, MCL %d blocks (%s) per command, %d %s per command (MSRC %d)\n",
				n.MSSRLBlocks, sysfs.FormatLimit(n.MSSRLBytes), n.MCLBlocks, sysfs.FormatLimit(n.MCLBytes), n.MSRCRanges, ranges, n.MSRCRanges-1)
		}
		fmt.Fprintf(w, "  copy path: %s", pathCell(r))
		if r.PathReason != "" {
			fmt.Fprintf(w, " (%s)", r.PathReason)
		}
		fmt.Fprintln(w)
	}
	for _, sl := range r.Slaves {
		notes.add(sl)
	}
}

func bytesCell(n int64) string {
	if n == 0 {
		return "0"
	}
	return sysfs.FormatLimit(n)
}
