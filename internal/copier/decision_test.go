package copier

import (
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/offload"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// blockAt builds an endpoint for a device of a captured sysfs tree.
func blockAt(t *testing.T, tree, dev string) *endpoint {
	t.Helper()
	d, err := sysfs.Sys{Root: "../sysfs/testdata/" + tree}.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	return &endpoint{path: dev, block: true, dev: d, disk: "blk:" + d.Disk, start: d.Start, lbs: d.LogicalBlockSize}
}

// unit opens the offload paths for a pair and returns the unit of the one
// that serves (0 for none) and the reason when none does.
func unit(t *testing.T, mode Mode, src, dst *endpoint) (int64, string) {
	t.Helper()
	// The kernel's path alone: the NVMe path sends Identify commands,
	// which these captured trees cannot answer (internal/nvme tests it).
	swap(t, &offloadPaths, []copypath.Path{offload.Path{}})
	s, why, err := openPath(mode, "", copypath.Pair{Src: src.ep(), Dst: dst.ep()})
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return 0, why
	}
	return s.Limits().Unit, why
}

func TestOffloadIsOnlyRequestedWhereTheKernelAndDiskCanDoIt(t *testing.T) {
	file := &endpoint{path: "a.img", lbs: 1, disk: "ino:1:2"}
	tests := []struct {
		name     string
		mode     Mode
		src, dst *endpoint
		wantUnit int64
		wantWhy  string
	}{
		{"same disk with copy limits offloads in units of copy_max_bytes", Auto,
			blockAt(t, "copy-offload", "/dev/nvme0n1"), blockAt(t, "copy-offload", "/dev/nvme0n1"), 8 << 20, ""},
		{"two partitions of one disk offload", Auto,
			blockAt(t, "copy-offload", "/dev/nvme0n1p1"), blockAt(t, "copy-offload", "/dev/nvme0n1p2"), 8 << 20, ""},
		{"partition and its disk offload", Auto,
			blockAt(t, "copy-offload", "/dev/nvme0n1"), blockAt(t, "copy-offload", "/dev/nvme0n1p2"), 8 << 20, ""},
		{"different disks are never offloaded (the series misroutes them)", Auto,
			blockAt(t, "copy-offload", "/dev/nvme0n1"), blockAt(t, "copy-offload", "/dev/dm-0"), 0, "device cannot copy"},
		{"device that cannot copy", Auto,
			blockAt(t, "copy-offload", "/dev/nvme1n1"), blockAt(t, "copy-offload", "/dev/nvme1n1"), 0, "device cannot copy (copy_max_hw_bytes=0)"},
		{"offload disabled by the administrator", Auto,
			blockAt(t, "copy-offload", "/dev/nvme2n1"), blockAt(t, "copy-offload", "/dev/nvme2n1"), 0, "disabled (copy_max_bytes=0)"},
		{"kernel without copy offload", Auto,
			blockAt(t, "mainline", "/dev/vda"), blockAt(t, "mainline", "/dev/vda1"), 0, "kernel lacks copy offload"},
		{"onload mode never offloads", OnloadOnly,
			blockAt(t, "copy-offload", "/dev/nvme0n1"), blockAt(t, "copy-offload", "/dev/nvme0n1"), 0, "--mode onload"},
		{"file and block device cannot use copy_file_range", Auto,
			file, blockAt(t, "copy-offload", "/dev/nvme0n1"), 0, "needs two of the same kind"},
		{"two files use copy_file_range", Auto, file, file, 1 << 30, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := unit(t, tt.mode, tt.src, tt.dst)
			if got != tt.wantUnit {
				t.Errorf("offload unit = %d, want %d (reason %q)", got, tt.wantUnit, why)
			}
			if tt.wantWhy == "" && why != "" || !strings.Contains(why, tt.wantWhy) {
				t.Errorf("reason = %q, want it to contain %q", why, tt.wantWhy)
			}
			if strings.HasPrefix(why, "no offload:") {
				t.Errorf("reason %q repeats the \"no offload:\" prefix", why)
			}
		})
	}
}

func TestDifferentDisksWithCopyLimitsAreNotOffloaded(t *testing.T) {
	a := blockAt(t, "copy-offload", "/dev/nvme0n1")
	b := blockAt(t, "copy-offload", "/dev/nvme0n1")
	// The same limits on another disk: a second namespace of the same
	// controller looks exactly like this.
	b.disk, b.dev = "blk:nvme9n1", &sysfs.Device{Disk: "nvme9n1", Copy: a.dev.Copy}
	got, why := unit(t, Auto, a, b)
	if got != 0 || !strings.Contains(why, "different disks") {
		t.Errorf("offload unit %d reason %q; want no offload across disks", got, why)
	}
}
