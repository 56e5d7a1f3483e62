package copier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
	"github.com/blkcopy/blkcopy/internal/sysfs"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

// These tests run the copy on real loop devices. The kernel here has no
// block copy offload, so they prove the onload path with O_DIRECT on real
// block devices, and the refusals that only block devices have.

// loop attaches a 512-byte-sector, direct-I/O loop device over a copy of
// content (args go to losetup: "-r", "-P") and returns its path.
func loop(t *testing.T, content []byte, args ...string) string {
	t.Helper()
	return onloadtest.NewLoop(t, content, 512, args...).Dev
}

var sys = sysfs.Sys{Root: "/"}

func TestLoopDevicesCopyWithEveryOffsetKind(t *testing.T) {
	sysfstest.RequireRoot(t)
	const size = 16 << 20
	data := onloadtest.RandomBytes(size, 7)
	src := loop(t, data)
	dst := loop(t, bytes.Repeat([]byte{sentinel}, size))
	tests := []struct {
		name                string
		srcOff, dstOff, len int64
	}{
		{"aligned", 1 << 20, 2 << 20, 8 << 20},
		{"unaligned head and tail", 1000, 5000, 3<<20 + 7},
		{"source and destination misaligned to each other", 4096, 4097, 1 << 20},
		{"one byte", 12345, 54321, 1},
		{"to the very end", size - 8192, size - 8192, 8192},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Reset the destination to the sentinel through the device.
			if err := os.WriteFile(dst, bytes.Repeat([]byte{sentinel}, size), 0); err != nil {
				t.Fatal(err)
			}
			sum, err := Run(context.Background(), Request{Src: src, Dst: dst, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: tt.len, LenSet: true, Sys: sys, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if sum.OnloadedBytes != tt.len || !sum.Verified || !sum.Synced {
				t.Errorf("summary %+v: want all %d bytes onloaded, verified, synced", sum, tt.len)
			}
			if !strings.Contains(sum.FallbackReason, "different disks") && !strings.Contains(sum.FallbackReason, "kernel lacks") {
				t.Errorf("fallback reason %q does not say why offload was not used", sum.FallbackReason)
			}
			got := onloadtest.ReadFile(t, dst)
			want := bytes.Repeat([]byte{sentinel}, size)
			copy(want[tt.dstOff:], data[tt.srcOff:tt.srcOff+tt.len])
			if i := onloadtest.FirstDiff(got, want); i >= 0 {
				t.Fatalf("destination differs at offset %d (range [%d,%d))", i, tt.dstOff, tt.dstOff+tt.len)
			}
		})
	}
}

func TestPartitionAndItsDiskAreOneDeviceForOverlap(t *testing.T) {
	sysfstest.RequireRoot(t)
	const size = 16 << 20
	const start = 2048 // sectors: the partition starts at 1 MiB
	img := onloadtest.RandomBytes(size, 9)
	disk := loop(t, img, "-P")
	// addpart (BLKPG) instead of a partition table: some minimal kernels,
	// this project's CI host among them, have no partition table parsers.
	part := sysfstest.AddPartition(t, disk, 1, start, size/512-start)
	// Disk offset 1 MiB is partition offset 0; writing the partition at
	// 64 KiB overlaps a read of the disk at 1 MiB: 8 MiB moved up 64 KiB.
	// Judged per device they look independent and a forward copy in 64 KiB
	// steps would read bytes it had already overwritten.
	const n = 8 << 20
	sum, err := Run(context.Background(), Request{Src: disk, Dst: part, SrcOff: 1 << 20, DstOff: 64 << 10, Len: n, LenSet: true, Sys: sys, BufSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Backward {
		t.Error("copy was not run backwards although the destination lies after the source on the same disk")
	}
	got := onloadtest.ReadFile(t, disk)
	want := append([]byte(nil), img...)
	copy(want[1<<20+64<<10:], img[1<<20:1<<20+n])
	if i := onloadtest.FirstDiff(got, want); i >= 0 {
		t.Fatalf("disk differs from the memmove result at offset %d", i)
	}
}

func TestRefusalsOnBlockDevicesWriteNothing(t *testing.T) {
	sysfstest.RequireRoot(t)
	const size = 4 << 20
	data := onloadtest.RandomBytes(size, 11)
	src := loop(t, data)
	dst := loop(t, bytes.Repeat([]byte{sentinel}, size))
	ro := loop(t, bytes.Repeat([]byte{sentinel}, size), "-r")
	tests := []struct {
		name    string
		req     Request
		wantErr error
		wantMsg string
	}{
		{"destination range past its end", Request{Src: src, Dst: dst, DstOff: size - 4096, Len: 8192, LenSet: true}, nil, "past its end"},
		{"destination offset past its end", Request{Src: src, Dst: dst, DstOff: size + 512}, nil, "past its end"},
		{"source range past its end", Request{Src: src, Dst: dst, SrcOff: size - 512, Len: 1024, LenSet: true}, nil, "past its end"},
		{"read-only destination", Request{Src: src, Dst: ro, Len: 4096, LenSet: true}, ErrReadOnly, "read-only"},
		{"offload required but unavailable", Request{Src: src, Dst: dst, Mode: OffloadOnly}, ErrOffloadUnavailable, "offload unavailable"},
		{"offload required, same disk, kernel lacks it", Request{Src: dst, Dst: dst, SrcOff: 0, DstOff: 1 << 20, Len: 1 << 20, LenSet: true, Mode: OffloadOnly}, ErrOffloadUnavailable, "kernel lacks copy offload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Sys = sys
			_, err := Run(context.Background(), tt.req)
			if err == nil {
				t.Fatal("copy was not refused")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to say %q", err, tt.wantMsg)
			}
			for _, d := range []string{dst, ro} {
				if !bytes.Equal(onloadtest.ReadFile(t, d), bytes.Repeat([]byte{sentinel}, size)) {
					t.Fatalf("%s was written", d)
				}
			}
		})
	}
}

func TestMountedDestinationIsRefused(t *testing.T) {
	sysfstest.RequireRoot(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs) to make a file system to mount")
	}
	src := loop(t, onloadtest.RandomBytes(32<<20, 13))
	dst := loop(t, make([]byte, 32<<20))
	// No lazy initialisation: ext4lazyinit would otherwise zero inode
	// tables in the background after mount.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dst).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dst, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	// The mounted file system writes by itself (jbd2 updates its journal
	// superblock after mount): freeze it, which flushes it and holds off its
	// writes, so any change seen below is blkcopy's. It stays mounted and
	// claimed exactly as before.
	if out, err := exec.Command("fsfreeze", "--freeze", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze --freeze: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("fsfreeze", "--unfreeze", mnt).Run() })
	before := onloadtest.ReadFile(t, dst)
	for _, dry := range []bool{false, true} {
		_, err := Run(context.Background(), Request{Src: src, Dst: dst, Len: 1 << 20, LenSet: true, Sys: sys, DryRun: dry})
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), dst) || !strings.Contains(err.Error(), "in use") {
			t.Errorf("dry run %v: err = %v, want the destination refused as in use", dry, err)
		}
	}
	if !bytes.Equal(before, onloadtest.ReadFile(t, dst)) {
		t.Fatal("the mounted destination was written")
	}
	if _, err := os.Stat(filepath.Join(mnt, "lost+found")); err != nil {
		t.Fatalf("file system damaged: %v", err)
	}
}
