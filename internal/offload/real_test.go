package offload

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// randomFile writes size bytes of seeded random data to path.
func randomFile(t *testing.T, path string, size int, seed uint64) []byte {
	t.Helper()
	data := make([]byte, size)
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	key[2] = byte(seed >> 16)
	_, _ = rand.NewChaCha8(key).Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func fsType(t *testing.T, dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	}
	return "unknown"
}

// copyBetween copies n bytes at unaligned offsets from a random source in
// srcDir to a destination in dstDir that already holds other data, and
// returns Copy's answer plus what the destination should and does hold.
func copyBetween(t *testing.T, srcDir, dstDir string) (copied int64, want, got []byte, err error) {
	t.Helper()
	const size = 3<<20 + 777
	const srcOff, dstOff, n = 12345, 54321, 2<<20 + 999
	srcData := randomFile(t, filepath.Join(srcDir, "src"), size, 1)
	want = randomFile(t, filepath.Join(dstDir, "dst"), size, 2)
	copy(want[dstOff:dstOff+n], srcData[srcOff:srcOff+n])

	src, err := os.Open(filepath.Join(srcDir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dstDir, "dst"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()

	var reported int64
	copied, err = Copy(context.Background(), dst, src, dstOff, srcOff, n, func(d int64) { reported += d })
	if reported != copied {
		t.Errorf("progress reported %d bytes, Copy returned %d", reported, copied)
	}
	// Explicit offsets: neither file position may have moved.
	for _, f := range []*os.File{src, dst} {
		if pos, _ := f.Seek(0, 1); pos != 0 {
			t.Errorf("%s: file position moved to %d", f.Name(), pos)
		}
	}
	got, rerr := os.ReadFile(filepath.Join(dstDir, "dst"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	return copied, want, got, err
}

func TestRealCopyOnOneFileSystem(t *testing.T) {
	dir := t.TempDir()
	t.Logf("file system: %s", fsType(t, dir))
	copied, want, got, err := copyBetween(t, dir, dir)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if copied != 2<<20+999 {
		t.Errorf("copied %d, want %d", copied, 2<<20+999)
	}
	if !bytes.Equal(got, want) {
		t.Error("destination differs from source range (or bytes outside the range changed)")
	}
}

// ext4 to tmpfs: older kernels answer EXDEV, newer ones copy. Either is
// fine; a wrong copy or a real error is not.
func TestRealCopyAcrossFileSystemsCopiesOrIsUnavailable(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "offload-test-")
	if err != nil {
		t.Skipf("no /dev/shm to copy across file systems: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := t.TempDir()
	if fsType(t, dir) == fsType(t, shm) {
		t.Skipf("%s and %s are the same kind of file system", dir, shm)
	}
	copied, want, got, err := copyBetween(t, dir, shm)
	switch {
	case err == nil:
		t.Logf("kernel copied %s -> tmpfs (%d bytes)", fsType(t, dir), copied)
		if !bytes.Equal(got, want) {
			t.Error("destination differs from source range")
		}
	case Unavailable(err):
		t.Logf("kernel refused: %v", err)
		if copied != 0 {
			t.Errorf("unavailable after %d bytes copied", copied)
		}
	default:
		t.Fatalf("Copy: %v, want success or an Unavailable error", err)
	}
}

// attachLoop makes a loop device over a new file of size bytes and
// detaches it (only it) when the test ends.
func attachLoop(t *testing.T, size int) string {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "backing")
	randomFile(t, backing, size, uint64(size))
	out, err := exec.Command("losetup", "-f", "--show", backing).Output()
	if err != nil {
		t.Skipf("cannot attach a loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// This kernel has no block copy offload: copy_file_range between block
// devices must come back as "fall back", whatever the open flags.
func TestRealLoopDevicesAreUnavailableOnThisKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach loop devices")
	}
	if _, err := os.Stat("/sys/block/loop0/queue/copy_max_bytes"); err == nil {
		t.Skip("this kernel has block copy offload; the fallback cannot be proven here")
	}
	srcDev, dstDev := attachLoop(t, 4<<20), attachLoop(t, 4<<20)
	for _, tt := range []struct {
		name             string
		srcFlag, dstFlag int
	}{
		{"buffered", 0, 0},
		{"O_DIRECT", unix.O_DIRECT, unix.O_DIRECT},
		{"O_DIRECT on source only", unix.O_DIRECT, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, err := os.OpenFile(srcDev, os.O_RDONLY|tt.srcFlag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			dst, err := os.OpenFile(dstDev, os.O_RDWR|unix.O_EXCL|tt.dstFlag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			copied, err := Copy(context.Background(), dst, src, 1<<20, 0, 1<<20, nil)
			if err == nil {
				t.Fatalf("copy_file_range between %s and %s succeeded on a kernel without copy offload", srcDev, dstDev)
			}
			t.Logf("%v", err)
			if !Unavailable(err) {
				t.Errorf("Unavailable(%v) = false, want true", err)
			}
			if copied != 0 {
				t.Errorf("copied %d, want 0", copied)
			}
		})
	}
}
