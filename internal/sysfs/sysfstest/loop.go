// Package sysfstest makes real block devices for tests: loop devices over
// sparse image files, with partitions when asked. Tests that use it skip
// unless run as root, since only root may attach loop devices.
package sysfstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips the test, saying why, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: attaching loop devices needs root (run the tests as root, as CI does)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("skipping: losetup (util-linux) is not installed")
	}
}

// Loop attaches a loop device over a new sparse image of size bytes and
// returns its path ("/dev/loop3"). args go to losetup before the image,
// e.g. "--sector-size", "4096" or "-P" (needed for AddPartition). The
// device is detached when the test ends; only this one, never others.
func Loop(t testing.TB, size int64, args ...string) string {
	t.Helper()
	RequireRoot(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return Attach(t, img, args...)
}

// Attach attaches a loop device over the file backing (args go to losetup
// before it) and returns its path; the device, and only it, is detached
// when the test ends. Every test helper that makes loop devices comes
// through here.
func Attach(t testing.TB, backing string, args ...string) string {
	t.Helper()
	RequireRoot(t)
	cmd := append([]string{"--find", "--show"}, args...)
	out, err := exec.Command("losetup", append(cmd, backing)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s %s: %v\n%s", strings.Join(cmd, " "), backing, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v\n%s", dev, err, out)
		}
	})
	return dev
}

// AddPartition adds partition n to dev (a loop device attached with -P)
// from startSector for sectors 512-byte sectors and returns its path
// ("/dev/loop3p1"). It uses the BLKPG ioctl (addpart) instead of a
// partition table, so it works on kernels built without partition table
// parsers too.
func AddPartition(t testing.TB, dev string, n int, startSector, sectors int64) string {
	t.Helper()
	if _, err := exec.LookPath("addpart"); err != nil {
		t.Skip("skipping: addpart (util-linux) is not installed")
	}
	args := []string{dev, strconv.Itoa(n), strconv.FormatInt(startSector, 10), strconv.FormatInt(sectors, 10)}
	if out, err := exec.Command("addpart", args...).CombinedOutput(); err != nil {
		t.Fatalf("addpart %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	p := dev + "p" + strconv.Itoa(n)
	// devtmpfs creates the node as the kernel registers the partition; on
	// a system where udev does it, give it a moment.
	for range 100 {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("addpart %s: no device node %s appeared", strings.Join(args, " "), p)
	return ""
}

// CopyTree copies a captured sysfs tree (testdata) with its symlinks into
// a temporary directory, so a test can change attributes (--set-max) without
// touching the fixture. It returns the copy's root, for sysfs.Sys{Root}.
func CopyTree(t testing.TB, tree string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", tree+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s: %v\n%s", tree, err, out)
	}
	return dst
}
