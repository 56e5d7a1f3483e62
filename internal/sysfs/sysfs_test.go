package sysfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

const (
	copyTree     = "testdata/copy-offload"
	mainlineTree = "testdata/mainline"
)

// want is the part of a Device a table row checks; slaves are checked by
// name only and then on their own.
type want struct {
	name, majMin, disk   string
	partition            bool
	start, size          int64
	lbs, pbs, optIO      int64
	maxKB, maxHWKB, segs int64
	ro, rotational       bool
	copy                 CopyLimits
	verdict              string
	slaves               []string
}

func check(t *testing.T, d *Device, w want) {
	t.Helper()
	got := want{
		d.Name, d.MajMin, d.Disk, d.Partition, d.Start, d.Size,
		d.LogicalBlockSize, d.PhysicalBlockSize, d.OptimalIOSize,
		d.MaxSectorsKB, d.MaxHWSectorsKB, d.MaxSegments,
		d.ReadOnly, d.Rotational, d.Copy, d.Copy.Verdict(), nil,
	}
	for _, s := range d.Slaves {
		got.slaves = append(got.slaves, s.Name)
	}
	if !reflect.DeepEqual(got, w) {
		t.Errorf("got  %+v\nwant %+v", got, w)
	}
}

var copy8M = CopyLimits{KernelSupport: true, MaxBytes: 8 << 20, MaxHWBytes: 8 << 20}

func TestOpenCapturedTree(t *testing.T) {
	dm0 := want{
		name: "dm-0", majMin: "253:0", disk: "dm-0", size: 6021120 * 512,
		lbs: 4096, pbs: 4096, maxKB: 128, maxHWKB: 128, segs: 33,
		copy:    CopyLimits{KernelSupport: true},
		verdict: "no offload: device cannot copy (copy_max_hw_bytes=0)",
		slaves:  []string{"nvme0n1p2", "nvme1n1"},
	}
	tests := []struct {
		root, path string
		want       want
	}{
		{copyTree, "/dev/nvme0n1", want{
			name: "nvme0n1", majMin: "259:0", disk: "nvme0n1", size: 1 << 30,
			lbs: 4096, pbs: 4096, maxKB: 128, maxHWKB: 128, segs: 33,
			copy: copy8M, verdict: "offload (max 8 MiB per request)",
		}},
		{copyTree, "/dev/nvme0n1p2", want{
			name: "nvme0n1p2", majMin: "259:2", disk: "nvme0n1", partition: true,
			start: 264192 * 512, size: 1832960 * 512,
			lbs: 4096, pbs: 4096, maxKB: 128, maxHWKB: 128, segs: 33,
			copy: copy8M, verdict: "offload (max 8 MiB per request)",
		}},
		{copyTree, "/dev/nvme1n1", want{
			name: "nvme1n1", majMin: "259:3", disk: "nvme1n1", size: 2 << 30,
			lbs: 512, pbs: 512, maxKB: 128, maxHWKB: 128, segs: 33,
			copy:    CopyLimits{KernelSupport: true},
			verdict: "no offload: device cannot copy (copy_max_hw_bytes=0)",
		}},
		{copyTree, "/dev/nvme2n1", want{
			name: "nvme2n1", majMin: "259:4", disk: "nvme2n1", size: 2 << 30,
			lbs: 512, pbs: 512, optIO: 131072, maxKB: 256, maxHWKB: 256, segs: 127,
			copy:    CopyLimits{KernelSupport: true, MaxHWBytes: 4 << 20},
			verdict: "no offload: disabled (copy_max_bytes=0)",
		}},
		{copyTree, "/dev/dm-0", dm0},
		// A device-mapper name, which is not a kernel name.
		{copyTree, "/dev/mapper/vg-data", dm0},
		{mainlineTree, "/dev/vda", want{
			name: "vda", majMin: "254:0", disk: "vda", size: 256 << 30,
			lbs: 512, pbs: 4096, maxKB: 4096, maxHWKB: 2147483647, segs: 254, rotational: true,
			verdict: "no offload: kernel lacks copy offload",
		}},
		{mainlineTree, "/dev/vda1", want{
			name: "vda1", majMin: "254:1", disk: "vda", partition: true,
			start: 2048 * 512, size: 536866816 * 512,
			lbs: 512, pbs: 4096, maxKB: 4096, maxHWKB: 2147483647, segs: 254, rotational: true,
			verdict: "no offload: kernel lacks copy offload",
		}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.root)+tt.path, func(t *testing.T) {
			d, err := Sys{Root: tt.root}.Open(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if d.Path != tt.path {
				t.Errorf("Path = %q, want the path as given %q", d.Path, tt.path)
			}
			check(t, d, tt.want)
		})
	}
}

func TestDMSlavesCarryTheirOwnLimits(t *testing.T) {
	d, err := Sys{Root: copyTree}.Open("/dev/dm-0")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Slaves) != 2 {
		t.Fatalf("dm-0 has %d slaves, want 2", len(d.Slaves))
	}
	// The dm queue says it cannot copy, yet the partition under it can:
	// each layer's limits must be its own, not the top's.
	p, n := d.Slaves[0], d.Slaves[1]
	if p.Name != "nvme0n1p2" || !p.Partition || p.Disk != "nvme0n1" || p.Copy != copy8M || p.LogicalBlockSize != 4096 {
		t.Errorf("slave 0 = %+v, want partition nvme0n1p2 of nvme0n1 with 8 MiB copy limits", p)
	}
	if n.Name != "nvme1n1" || n.Copy.CanOffload() || n.LogicalBlockSize != 512 {
		t.Errorf("slave 1 = %+v, want nvme1n1, 512-byte blocks, no offload", n)
	}
}

func TestOpenThroughSymlinkUnderSysroot(t *testing.T) {
	// A /dev/disk/by-id link is resolved before taking the name.
	link := filepath.Join(t.TempDir(), "nvme-QEMU_NVMe_Ctrl_1234-part1")
	if err := os.Symlink("/nonexistent/dev/nvme0n1p1", link); err != nil {
		t.Fatal(err)
	}
	// The target does not exist on this machine, so the link's own name is
	// all there is: a clear not-found, not a wrong device.
	if _, err := (Sys{Root: copyTree}).Open(link); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(dangling link) err = %v, want not exist", err)
	}
	real := filepath.Join(t.TempDir(), "nvme0n1p1")
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d, err := Sys{Root: copyTree}.Open(link)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "nvme0n1p1" || d.Start != 2048*512 {
		t.Errorf("Open(link to nvme0n1p1) = %s start %d, want nvme0n1p1 start %d", d.Name, d.Start, 2048*512)
	}
}

func TestByMajMin(t *testing.T) {
	d, err := Sys{Root: copyTree}.ByMajMin(259, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "nvme0n1p1" || d.Disk != "nvme0n1" || d.Path != "/dev/nvme0n1p1" {
		t.Errorf("ByMajMin(259, 1) = %s on %s at %s, want nvme0n1p1 on nvme0n1 at /dev/nvme0n1p1", d.Name, d.Disk, d.Path)
	}
	_, err = Sys{Root: copyTree}.ByMajMin(259, 99)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "sys/dev/block/259:99") {
		t.Errorf("ByMajMin(259, 99) err = %v, want not-exist naming sys/dev/block/259:99", err)
	}
}

func TestListIsSortedAndHasNoPartitions(t *testing.T) {
	devs, err := Sys{Root: copyTree}.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
		if d.Path != "/dev/"+d.Name {
			t.Errorf("%s: Path = %q, want /dev/%s", d.Name, d.Path, d.Name)
		}
	}
	want := []string{"dm-0", "loop0", "nvme0n1", "nvme1n1", "nvme2n1"}
	if !slices.Equal(names, want) {
		t.Errorf("List() = %v, want %v", names, want)
	}
}

func TestLoopBackingFile(t *testing.T) {
	for _, tt := range []struct{ root, want string }{
		{copyTree, ""},
		{mainlineTree, "/var/tmp/disk.img"},
	} {
		d, err := Sys{Root: tt.root}.Open("/dev/loop0")
		if err != nil {
			t.Fatal(err)
		}
		if d.LoopBackingFile != tt.want {
			t.Errorf("%s loop0 backing file = %q, want %q", tt.root, d.LoopBackingFile, tt.want)
		}
	}
}

func TestKernelHasCopyOffload(t *testing.T) {
	for _, tt := range []struct {
		root string
		want bool
	}{{copyTree, true}, {mainlineTree, false}} {
		got, err := Sys{Root: tt.root}.KernelHasCopyOffload()
		if err != nil || got != tt.want {
			t.Errorf("%s: KernelHasCopyOffload() = %v, %v; want %v", tt.root, got, err, tt.want)
		}
	}
	if _, err := (Sys{Root: t.TempDir()}).KernelHasCopyOffload(); err == nil {
		t.Error("KernelHasCopyOffload on a root without sys/block: no error")
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		c       CopyLimits
		offload bool
		want    string
	}{
		{CopyLimits{}, false, "no offload: kernel lacks copy offload"},
		{CopyLimits{KernelSupport: true}, false, "no offload: device cannot copy (copy_max_hw_bytes=0)"},
		{CopyLimits{KernelSupport: true, MaxHWBytes: 1 << 20}, false, "no offload: disabled (copy_max_bytes=0)"},
		{CopyLimits{KernelSupport: true, MaxBytes: 128 << 10, MaxHWBytes: 1 << 20}, true, "offload (max 128 KiB per request)"},
		{CopyLimits{KernelSupport: true, MaxBytes: 1536 << 10, MaxHWBytes: 2 << 20}, true, "offload (max 1536 KiB per request)"},
		{CopyLimits{KernelSupport: true, MaxBytes: 65535 * 4096, MaxHWBytes: 65535 * 4096}, true, "offload (max 262140 KiB per request)"},
		{CopyLimits{KernelSupport: true, MaxBytes: 1 << 30, MaxHWBytes: 1 << 30}, true, "offload (max 1 GiB per request)"},
		{CopyLimits{KernelSupport: true, MaxBytes: 512, MaxHWBytes: 1 << 30}, true, "offload (max 512 B per request)"},
	}
	for _, tt := range tests {
		if got := tt.c.Verdict(); got != tt.want {
			t.Errorf("%+v.Verdict() = %q, want %q", tt.c, got, tt.want)
		}
		if got := tt.c.CanOffload(); got != tt.offload {
			t.Errorf("%+v.CanOffload() = %v, want %v", tt.c, got, tt.offload)
		}
	}
}

func TestSetCopyMaxBytesWritesTheDisksQueue(t *testing.T) {
	root := sysfstest.CopyTree(t, copyTree)
	s := Sys{Root: root}
	d, err := s.Open("/dev/nvme0n1p1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCopyMaxBytes(d, 1<<20); err != nil {
		t.Fatal(err)
	}
	if d.Copy.MaxBytes != 1<<20 {
		t.Errorf("after SetCopyMaxBytes(1 MiB) d.Copy.MaxBytes = %d, want %d", d.Copy.MaxBytes, 1<<20)
	}
	b, err := os.ReadFile(filepath.Join(root, "sys/block/nvme0n1/queue/copy_max_bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != "1048576" {
		t.Errorf("nvme0n1/queue/copy_max_bytes = %q, want 1048576", b)
	}
	// A fresh read sees it too, through the partition.
	again, err := s.Open("/dev/nvme0n1p2")
	if err != nil {
		t.Fatal(err)
	}
	if again.Copy.MaxBytes != 1<<20 {
		t.Errorf("reread copy_max_bytes = %d, want %d", again.Copy.MaxBytes, 1<<20)
	}
}

func TestSetCopyMaxBytesWithoutKernelSupport(t *testing.T) {
	root := sysfstest.CopyTree(t, mainlineTree)
	s := Sys{Root: root}
	d, err := s.Open("/dev/vda")
	if err != nil {
		t.Fatal(err)
	}
	err = s.SetCopyMaxBytes(d, 1<<20)
	if !errors.Is(err, ErrNoCopyOffload) || !strings.Contains(err.Error(), "vda/queue/copy_max_bytes: kernel lacks copy offload (no copy_max_bytes)") {
		t.Errorf("SetCopyMaxBytes on a mainline kernel: err = %v, want ErrNoCopyOffload naming the attribute", err)
	}
	if _, err := os.Stat(filepath.Join(root, "sys/block/vda/queue/copy_max_bytes")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SetCopyMaxBytes created copy_max_bytes where the kernel has none (stat err = %v)", err)
	}
}

func TestBadAttributeNamesItsPath(t *testing.T) {
	root := sysfstest.CopyTree(t, copyTree)
	p := filepath.Join(root, "sys/block/nvme1n1/queue/logical_block_size")
	if err := os.WriteFile(p, []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Sys{Root: root}.Open("/dev/nvme1n1")
	if err == nil || !strings.Contains(err.Error(), "nvme1n1/queue/logical_block_size") {
		t.Errorf("Open with a garbled logical_block_size: err = %v, want one naming the attribute", err)
	}
	if err := os.Remove(filepath.Join(root, "sys/block/nvme2n1/queue/physical_block_size")); err != nil {
		t.Fatal(err)
	}
	_, err = Sys{Root: root}.Open("/dev/nvme2n1")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nvme2n1/queue/physical_block_size") {
		t.Errorf("Open without physical_block_size: err = %v, want not-exist naming the attribute", err)
	}
}

func TestOpenUnknownDevice(t *testing.T) {
	_, err := Sys{Root: copyTree}.Open("/dev/sdz")
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "/dev/sdz: ") {
		t.Errorf("Open(/dev/sdz) under a sysroot: err = %v, want not-exist starting with the path", err)
	}
	_, err = Sys{}.Open("/dev/blkcopy-no-such-device")
	if err == nil || err.Error() != "/dev/blkcopy-no-such-device: no such file or directory" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want \"/dev/blkcopy-no-such-device: no such file or directory\"", err)
	}
	f := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (Sys{}).Open(f); !errors.Is(err, ErrNotBlockDevice) {
		t.Errorf("Open(regular file) err = %v, want ErrNotBlockDevice", err)
	}
}

// On the live system Open goes by device number, so any name for the node
// (a by-id link here) finds the same sysfs entry as the kernel name.
func TestOpenLiveDeviceThroughSymlink(t *testing.T) {
	devs, err := Sys{}.List()
	if err != nil {
		t.Fatal(err)
	}
	var dev *Device
	for _, d := range devs {
		if _, err := os.Stat(d.Path); err == nil && d.Size > 0 {
			dev = d
			break
		}
	}
	if dev == nil {
		t.Skip("no block device with a size and a /dev node on this machine")
	}
	link := filepath.Join(t.TempDir(), "by-id-link")
	if err := os.Symlink(dev.Path, link); err != nil {
		t.Fatal(err)
	}
	d, err := Sys{}.Open(link)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != dev.Name || d.MajMin != dev.MajMin || d.Size != dev.Size || d.Path != link {
		t.Errorf("Open(%s -> %s) = %s %s size %d path %s; want %s %s size %d path %s",
			link, dev.Path, d.Name, d.MajMin, d.Size, d.Path, dev.Name, dev.MajMin, dev.Size, link)
	}
}

func TestStableID(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    Device
		want string
	}{
		{"NVMe namespace", Device{WWID: "eui.0011223344556677"}, "wwid:eui.0011223344556677"},
		{"its partition", Device{WWID: "eui.0011223344556677", Partition: true, Start: 1 << 20}, "wwid:eui.0011223344556677@1048576"},
		{"loop device", Device{LoopBackingFile: "/var/tmp/disk.img"}, "loop:/var/tmp/disk.img"},
		{"LVM volume", Device{DMUUID: "LVM-abc"}, "dm:LVM-abc"},
		{"WWID wins over the rest", Device{WWID: "naa.6001405", DMUUID: "x"}, "wwid:naa.6001405"},
		{"nothing stable", Device{Name: "ram0"}, ""},
	} {
		if got := tt.d.StableID(); got != tt.want {
			t.Errorf("%s: StableID = %q, want %q", tt.name, got, tt.want)
		}
	}
	// Read from a captured tree: loop0 there has a backing file.
	d, err := Sys{Root: mainlineTree}.Open("/dev/loop0")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.StableID(); got != "loop:/var/tmp/disk.img" {
		t.Errorf("captured loop0: StableID = %q", got)
	}
}
