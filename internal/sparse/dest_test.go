package sparse_test

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
	"github.com/blkcopy/blkcopy/internal/sparse"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

const sentinel = 0xA5

// openDest opens a block device as a Dest with write-zeroes on, closed
// when the test ends.
func openDest(t *testing.T, dev string, probe bool) *sparse.Dest {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d, err := sparse.NewDest(sparse.DestConfig{File: f, Block: true, Align: 512, WriteZeroes: true, Probe: probe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// zeroOnLoop zeroes [off, off+n) of a loop device full of the sentinel and
// checks the device: zeroes there, the sentinel everywhere else.
func zeroOnLoop(t *testing.T, probe bool, off, n int64) *sparse.Dest {
	t.Helper()
	const size = 8 << 20
	dev := onloadtest.NewLoop(t, bytes.Repeat([]byte{sentinel}, size), 512).Dev
	d := openDest(t, dev, probe)
	if err := d.Zero(off, n); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{sentinel}, size)
	clear(want[off : off+n])
	if got := onloadtest.ReadFile(t, dev); !bytes.Equal(got, want) {
		t.Fatalf("device differs from the sentinel with [%d,%d) zeroed at offset %d", off, off+n, onloadtest.FirstDiff(got, want))
	}
	return d
}

func TestZeroOnABlockDeviceChangesOnlyTheRange(t *testing.T) {
	for _, c := range []struct {
		name   string
		off, n int64
	}{
		{"aligned", 4096, 3 << 20},
		{"partial blocks at both edges", 1000, 3<<20 + 77},
		{"inside one block", 5000, 10},
	} {
		t.Run(c.name, func(t *testing.T) { zeroOnLoop(t, false, c.off, c.n) })
	}
}

// A device whose write-zeroes is slower than plain writes: auto's probe
// notices on the first long run and writes zeroes as data from then on.
func TestProbeDropsWriteZeroesWhereItIsSlower(t *testing.T) {
	real := *sparse.ZeroOut
	t.Cleanup(func() { *sparse.ZeroOut = real })
	*sparse.ZeroOut = func(f *os.File, off, n int64) error {
		time.Sleep(time.Duration(n>>20) * 50 * time.Millisecond) // 20 MiB/s
		return real(f, off, n)
	}
	d := zeroOnLoop(t, true, 4096, 5<<20)
	if !d.Slower() || d.WriteZeroes() {
		t.Errorf("Slower() = %v, WriteZeroes() = %v after a write-zeroes at 20 MiB/s; want the probe to drop it", d.Slower(), d.WriteZeroes())
	}
}

// Where write-zeroes is the fast way (a loop device on ext4, where it
// becomes an fallocate ZERO_RANGE of the backing file: about a thousand
// times faster than writing), the probe keeps it.
func TestProbeKeepsWriteZeroesWhereItIsFaster(t *testing.T) {
	dev := sysfstest.Loop(t, 8<<20, "--direct-io=on")
	if err := os.WriteFile(dev, bytes.Repeat([]byte{sentinel}, 8<<20), 0); err != nil {
		t.Fatal(err)
	}
	d := openDest(t, dev, true)
	if err := d.Zero(1<<20, 6<<20); err != nil {
		t.Fatal(err)
	}
	if d.Slower() || !d.WriteZeroes() {
		t.Errorf("Slower() = %v, WriteZeroes() = %v on a loop device on a file system; want write-zeroes kept", d.Slower(), d.WriteZeroes())
	}
	want := bytes.Repeat([]byte{sentinel}, 8<<20)
	clear(want[1<<20 : 7<<20])
	if got := onloadtest.ReadFile(t, dev); !bytes.Equal(got, want) {
		t.Fatalf("device differs at offset %d", onloadtest.FirstDiff(got, want))
	}
}
