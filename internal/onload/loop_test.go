package onload_test

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
)

// TestCopyLoopDevices copies between real direct-I/O loop devices, including
// a 4096-byte-sector destination fed from a 512-byte-sector source at
// offsets where their block grids disagree.
func TestCopyLoopDevices(t *testing.T) {
	const size = 4 << 20
	tests := []struct {
		name                 string
		srcSector, dstSector int
		srcOff, dstOff, n    int64
	}{
		{"aligned", 512, 512, 1 << 20, 0, 2 << 20},
		{"unaligned head and tail", 512, 512, 1000, 1000, 3<<20 + 77},
		{"phase mismatch", 512, 512, 100, 4097, 1<<20 + 3},
		{"512 to 4096 sectors aligned", 512, 4096, 512, 8192, 1 << 20},
		{"512 to 4096 sectors off grid", 512, 4096, 1536, 4096 + 1024, 1<<20 + 512},
		{"4096 to 512 sectors unaligned", 4096, 512, 3, 5, 2 << 20},
		{"inside one 4096 block", 512, 4096, 0, 4096*100 + 10, 300},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := onloadtest.RandomBytes(size, uint64(i))
			old := onloadtest.RandomBytes(size, uint64(i)+100)
			sl := onloadtest.NewLoop(t, src, tt.srcSector)
			dl := onloadtest.NewLoop(t, old, tt.dstSector)
			se, de := onloadtest.OpenDevice(t, sl.Dev), onloadtest.OpenDevice(t, dl.Dev)
			if se.Align != int64(tt.srcSector) || de.Align != int64(tt.dstSector) {
				t.Fatalf("logical block sizes %d and %d, want %d and %d", se.Align, de.Align, tt.srcSector, tt.dstSector)
			}
			written, err := onload.Copy(t.Context(), de, se, tt.dstOff, tt.srcOff, tt.n, onload.Options{BufSize: 256 << 10})
			if err != nil || written != tt.n {
				t.Fatalf("Copy = %d, %v; want %d, nil", written, err, tt.n)
			}
			c := copyCase{srcOff: tt.srcOff, dstOff: tt.dstOff, n: tt.n}
			if i := onloadtest.FirstDiff(onloadtest.ReadFile(t, dl.Backing), expected(old, src, c)); i >= 0 {
				t.Fatalf("destination device differs from expected at byte %d (range [%d, %d))", i, tt.dstOff, tt.dstOff+tt.n)
			}
		})
	}
}

// BenchmarkCopyLoop copies 512 MiB between two direct-I/O loop devices
// backed by /dev/shm, the setup the dd comparison uses:
//
//	go test -run '^$' -bench CopyLoop -benchtime 5x -count 3 ./internal/onload/
//
// It runs that dd itself first, on the same devices, so one run compares
// both (-count alternates them). Besides MB/s it reports CPU seconds per
// GiB: user+system of the process, or of the dd children.
func BenchmarkCopyLoop(b *testing.B) {
	const size = 512 << 20
	data := onloadtest.RandomBytes(size, 1)
	sl := onloadtest.NewLoop(b, data, 512)
	dl := onloadtest.NewLoop(b, make([]byte, size), 512)
	data = nil
	se, de := onloadtest.OpenDevice(b, sl.Dev), onloadtest.OpenDevice(b, dl.Dev)
	configs := []onload.Options{{}}
	for _, buf := range []int64{2 << 20, 4 << 20, 8 << 20} {
		for _, depth := range []int{1, 2} {
			configs = append(configs, onload.Options{BufSize: buf, Depth: depth})
		}
	}
	b.Run("dd bs=4M direct", func(b *testing.B) {
		if _, err := exec.LookPath("dd"); err != nil {
			b.Skip("no dd to compare with")
		}
		b.SetBytes(size)
		var before, after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &before)
		for b.Loop() {
			dd := exec.Command("dd", "if="+sl.Dev, "of="+dl.Dev, "bs=4M", "iflag=direct", "oflag=direct", "status=none")
			if out, err := dd.CombinedOutput(); err != nil {
				b.Fatalf("dd: %v: %s", err, out)
			}
		}
		_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &after)
		reportCPU(b, before, after, size)
	})
	for _, opt := range configs {
		name := "default"
		if opt.BufSize != 0 {
			name = fmt.Sprintf("buf=%dK/depth=%d", opt.BufSize>>10, opt.Depth)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			for b.Loop() {
				if _, err := onload.Copy(b.Context(), de, se, 0, 0, size, opt); err != nil {
					b.Fatal(err)
				}
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			reportCPU(b, before, after, size)
		})
	}
}

func reportCPU(b *testing.B, before, after syscall.Rusage, size int64) {
	gib := float64(b.N) * float64(size) / (1 << 30)
	usr := float64(after.Utime.Nano()-before.Utime.Nano()) / 1e9
	sys := float64(after.Stime.Nano()-before.Stime.Nano()) / 1e9
	b.ReportMetric((usr+sys)/gib, "cpu-s/GiB")
	b.ReportMetric(usr/gib, "usr-s/GiB")
}
