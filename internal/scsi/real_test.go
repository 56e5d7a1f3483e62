package scsi

import (
	"os"
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

// A loop device takes no SCSI commands: the real SG_IO ioctl says so, and
// Identify turns that into "unavailable" with words, not a failure.
func TestIdentifyOnALoopDeviceIsUnavailable(t *testing.T) {
	dev := sysfstest.Loop(t, 8<<20)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Identify(f)
	if !copypath.IsUnavailable(err) || !strings.Contains(err.Error(), "does not take SCSI commands") {
		t.Errorf("Identify(%s) = %v; want unavailable, saying why", dev, err)
	}
	t.Logf("Identify(%s): %v", dev, err)
}
