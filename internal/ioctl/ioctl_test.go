package ioctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

func TestLoopDeviceFacts(t *testing.T) {
	tests := []struct {
		name     string
		size     int64
		args     []string
		lbs      int64
		readOnly bool
	}{
		{"512-byte sectors", 8 << 20, nil, 512, false},
		{"4 KiB sectors", 16 << 20, []string{"--sector-size", "4096"}, 4096, false},
		{"read-only", 4 << 20, []string{"--read-only"}, 512, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := sysfstest.Loop(t, tt.size, tt.args...)
			f, err := os.Open(dev)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if n, err := Size(f); err != nil || n != tt.size {
				t.Errorf("Size(%s) = %d, %v; want %d", dev, n, err, tt.size)
			}
			if n, err := LogicalBlockSize(f); err != nil || n != tt.lbs {
				t.Errorf("LogicalBlockSize(%s) = %d, %v; want %d", dev, n, err, tt.lbs)
			}
			// The loop driver reports its logical size as physical too.
			if n, err := PhysicalBlockSize(f); err != nil || n != tt.lbs {
				t.Errorf("PhysicalBlockSize(%s) = %d, %v; want %d", dev, n, err, tt.lbs)
			}
			if _, err := OptimalIOSize(f); err != nil {
				t.Errorf("OptimalIOSize(%s): %v", dev, err)
			}
			if ro, err := ReadOnly(f); err != nil || ro != tt.readOnly {
				t.Errorf("ReadOnly(%s) = %v, %v; want %v", dev, ro, err, tt.readOnly)
			}
		})
	}
}

// A regular file answers none of the block ioctls; the error must say which
// call failed on which path, and keep the errno for errors.Is.
func TestRegularFileErrorsNamePathAndIoctl(t *testing.T) {
	p := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	calls := []struct {
		ioctl string
		call  func(*os.File) error
	}{
		{"BLKGETSIZE64", func(f *os.File) error { _, err := Size(f); return err }},
		{"BLKSSZGET", func(f *os.File) error { _, err := LogicalBlockSize(f); return err }},
		{"BLKPBSZGET", func(f *os.File) error { _, err := PhysicalBlockSize(f); return err }},
		{"BLKIOOPT", func(f *os.File) error { _, err := OptimalIOSize(f); return err }},
		{"BLKROGET", func(f *os.File) error { _, err := ReadOnly(f); return err }},
	}
	for _, c := range calls {
		err := c.call(f)
		if !errors.Is(err, unix.ENOTTY) {
			t.Errorf("%s on a regular file: err = %v, want ENOTTY", c.ioctl, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, p) || !strings.Contains(msg, "ioctl("+c.ioctl+")") {
			t.Errorf("%s error %q does not name the path %s and the ioctl", c.ioctl, msg, p)
		}
	}
}

func TestClosedFile(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Size(f); err == nil || !strings.HasPrefix(err.Error(), "get size "+os.DevNull+": ") {
		t.Errorf("Size(closed file) err = %v, want one starting \"get size %s: \"", err, os.DevNull)
	}
}
