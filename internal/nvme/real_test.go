package nvme

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/ioctl"
	"github.com/blkcopy/blkcopy/internal/pagecache"
	"github.com/blkcopy/blkcopy/internal/sysfs"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

// A loop device is no NVMe namespace: the real NVME_IOCTL_ID says so, and
// Identify turns that into "unavailable" with words, not a failure.
func TestIdentifyOnALoopDeviceIsUnavailable(t *testing.T) {
	dev := sysfstest.Loop(t, 8<<20)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Identify(f)
	if !copypath.IsUnavailable(err) || !strings.Contains(err.Error(), dev+" is not an NVMe namespace") {
		t.Errorf("Identify(%s) = %v; want unavailable, saying why", dev, err)
	}
	t.Logf("Identify(%s): %v", dev, err)
}

// The cache maintenance around a Copy, on a real block device. A loop
// device stands in for the namespace and writing its backing file stands in
// for the Copy: both change the device's blocks without going through the
// device's page cache.
func TestCacheMaintenanceOnARealBlockDevice(t *testing.T) {
	dev := sysfstest.Loop(t, 8<<20)
	d, err := sysfs.Sys{}.Open(dev)
	if err != nil || d.LoopBackingFile == "" {
		t.Fatalf("sysfs: %+v, %v; want the loop device's backing file", d, err)
	}
	buffered, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer buffered.Close()
	direct, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	image, err := os.OpenFile(d.LoopBackingFile, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer image.Close()
	s := &session{views: pagecache.Set{{File: direct, Size: 8 << 20}}, lba: 512}

	t.Run("dirty source pages reach the device before the copy", func(t *testing.T) {
		want := bytes.Repeat([]byte("dirty page "), 373)[:4096]
		if _, err := buffered.WriteAt(want, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := s.writeBack(1<<20, 6<<20, 4096); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		if _, err := image.ReadAt(got, 1<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("the device holds %q..., want the buffered write %q...", got[:16], want[:16])
		}
	})

	t.Run("a buffered read after the copy sees the new blocks", func(t *testing.T) {
		// Cache the old page, change 512 bytes in its middle behind the
		// cache's back, as a Copy command does.
		old := make([]byte, 4096)
		if _, err := buffered.ReadAt(old, 2<<20); err != nil {
			t.Fatal(err)
		}
		copied := bytes.Repeat([]byte{0xc0}, 512)
		if _, err := image.WriteAt(copied, 2<<20+1024); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 512)
		if _, err := buffered.ReadAt(got, 2<<20+1024); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, copied) {
			t.Skip("the page cache already shows the new blocks; nothing to prove on this kernel")
		}
		if err := s.drop(2<<20+1024, 512); err != nil {
			t.Fatal(err)
		}
		if _, err := buffered.ReadAt(got, 2<<20+1024); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, copied) {
			t.Errorf("after drop a buffered read still sees % x..., want the copied % x...", got[:8], copied[:8])
		}
	})
}

// TestRealNamespace copies on a real NVMe namespace (or QEMU's) when
// BLKCOPY_NVME_SCRATCH names one whose contents may be destroyed, e.g. in
// the VM rig: go test -c -o nvme.test ./internal/nvme, then in the guest
// BLKCOPY_NVME_SCRATCH=/dev/nvme0n1 ./nvme.test -test.run RealNamespace -test.v
// It copies 24 MiB (less on a small namespace) within the namespace by
// passthrough, checks the data with O_DIRECT and with buffered reads that
// were cached before the copy, and logs what Identify found.
func TestRealNamespace(t *testing.T) {
	dev := os.Getenv("BLKCOPY_NVME_SCRATCH")
	if dev == "" {
		t.Skip("set BLKCOPY_NVME_SCRATCH to an NVMe namespace whose data may be overwritten")
	}
	d, err := sysfs.Sys{}.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(dev, os.O_RDWR|unix.O_EXCL|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	size, err := ioctl.Size(src)
	if err != nil {
		t.Fatal(err)
	}
	lbs, err := ioctl.LogicalBlockSize(src)
	if err != nil {
		t.Fatal(err)
	}
	info, err := Identify(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %+v", dev, *info)
	ep := func(f *os.File) copypath.Endpoint {
		return copypath.Endpoint{Path: dev, File: f, Block: true, Dev: d, Size: size, LBS: lbs, Disk: "blk:" + d.Disk, Start: d.Start}
	}
	sess, err := Path{}.Open(copypath.Pair{Src: ep(src), Dst: ep(dst)})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	t.Logf("limits: %+v", sess.Limits())

	n := min(int64(24<<20), size/2) / lbs * lbs
	want := bytes.Repeat([]byte("blkcopy nvme passthrough test "), int(n/30)+1)[:n]
	data := alignedBuffer(int(n))
	copy(data, want)
	if _, err := dst.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// Cache the destination's old contents, as a reader before the copy.
	buffered, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer buffered.Close()
	cached := make([]byte, n)
	if _, err := buffered.ReadAt(cached, n); err != nil {
		t.Fatal(err)
	}

	done, err := sess.Copy(context.Background(), n, 0, n, nil)
	if err != nil || done != n {
		t.Fatalf("Copy = %d, %v; want %d", done, err, n)
	}
	t.Logf("%d bytes in %d Copy commands", n, sess.Requests())
	got := alignedBuffer(int(n))
	if _, err := dst.ReadAt(got, n); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("O_DIRECT read of the destination differs from the source")
	}
	if _, err := buffered.ReadAt(cached, n); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cached, want) {
		t.Errorf("buffered read of the destination after the copy differs from the source: stale page cache")
	}
}
