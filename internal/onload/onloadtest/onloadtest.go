// Package onloadtest makes the real files and loop devices that the tests of
// onload and verify copy between.
package onloadtest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
	"golang.org/x/sys/unix"
)

// RandomBytes returns n bytes from a generator seeded with seed, so a
// failure reproduces.
func RandomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 1})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// DirectDir returns a temporary directory on a file system that accepts
// O_DIRECT, or skips: tmpfs refuses O_DIRECT at open with EINVAL.
func DirectDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Skipf("temporary directory %s does not support O_DIRECT: %v", dir, err)
	}
	f.Close()
	os.Remove(p)
	return dir
}

// WriteFile creates path holding data.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Open opens path for reading and writing, with O_DIRECT when direct, and
// closes it when the test ends. align is the Endpoint's alignment.
func Open(t testing.TB, path string, direct bool, align int64) onload.Endpoint {
	t.Helper()
	flag := os.O_RDWR
	if direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return onload.Endpoint{File: f, Direct: direct, Align: align}
}

// Loop is a loop device attached by a test.
type Loop struct {
	Dev     string // /dev/loopN
	Backing string // the file in /dev/shm behind it
}

// NewLoop attaches a direct-I/O loop device with the given logical sector
// size over a /dev/shm file holding data, and detaches it (and only it) when
// the test ends; args go to losetup too ("-r", "-P"). It skips when not
// root (attaching needs CAP_SYS_ADMIN) or without losetup.
func NewLoop(t testing.TB, data []byte, sectorSize int, args ...string) Loop {
	t.Helper()
	sysfstest.RequireRoot(t)
	f, err := os.CreateTemp("/dev/shm", "blkcopy-test-")
	if err != nil {
		t.Skipf("no /dev/shm for loop device backing files: %v", err)
	}
	backing := f.Name()
	t.Cleanup(func() { os.Remove(backing) })
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	argv := append([]string{"--direct-io=on", "--sector-size", strconv.Itoa(sectorSize)}, args...)
	return Loop{Dev: sysfstest.Attach(t, backing, argv...), Backing: backing}
}

// OpenDevice opens a block device with O_DIRECT, read-write, with its
// logical block size as alignment.
func OpenDevice(t testing.TB, dev string) onload.Endpoint {
	t.Helper()
	e := Open(t, dev, true, 0)
	sz, err := unix.IoctlGetInt(int(e.File.Fd()), unix.BLKSSZGET)
	if err != nil {
		t.Fatalf("BLKSSZGET %s: %v", dev, err)
	}
	e.Align = int64(sz)
	return e
}

// ReadFile returns the contents of path.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FirstDiff returns the index of the first byte where a and b differ, or
// -1; a length difference counts as a difference at the shorter length.
func FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
