package offload

import (
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// The limits handed to the copier for block devices: calls of up to
// 128 MiB in whole copy_max_bytes units (at least one), two at once, a
// canary of one unit capped at 64 KiB.
func TestOpenBlockLimits(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	tests := []struct {
		name     string
		copyMax  int64
		lbs      int64
		want     copypath.Limits
		wantFail string
	}{
		{"64 KiB units (seed kernel, mssrl=128): 2048 a call", 64 * kib, 512,
			copypath.Limits{Unit: 64 * kib, Align: 512, Request: 128 * mib, InFlight: 2, Canary: 64 * kib}, ""},
		{"1 MiB units: 128 a call", 1 * mib, 512,
			copypath.Limits{Unit: 1 * mib, Align: 512, Request: 128 * mib, InFlight: 2, Canary: 64 * kib}, ""},
		{"8 MiB units: 16 a call", 8 * mib, 512,
			copypath.Limits{Unit: 8 * mib, Align: 512, Request: 128 * mib, InFlight: 2, Canary: 64 * kib}, ""},
		{"32 MiB - 512 units: capped at 128 MiB in whole units", 32*mib - 512, 512,
			copypath.Limits{Unit: 32*mib - 512, Align: 512, Request: 4 * (32*mib - 512), InFlight: 2, Canary: 64 * kib}, ""},
		{"a unit beyond the cap: one unit a call", 256 * mib, 4096,
			copypath.Limits{Unit: 256 * mib, Align: 4096, Request: 256 * mib, InFlight: 2, Canary: 64 * kib}, ""},
		{"a limit that is not whole blocks is rounded down", 96*kib + 512, 4096,
			copypath.Limits{Unit: 96 * kib, Align: 4096, Request: 1365 * 96 * kib, InFlight: 2, Canary: 64 * kib}, ""},
		{"a limit below one block", 2048, 4096, copypath.Limits{}, "smaller than the 4096-byte block size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := &sysfs.Device{Disk: "nvme0n1", Copy: sysfs.CopyLimits{KernelSupport: true, MaxBytes: tt.copyMax, MaxHWBytes: tt.copyMax}}
			end := copypath.Endpoint{Path: "/dev/nvme0n1", Block: true, Dev: dev, LBS: tt.lbs, Disk: "blk:nvme0n1", Size: 1 << 40}
			s, err := Path{}.Open(copypath.Pair{Src: end, Dst: end})
			if tt.wantFail != "" {
				if err == nil || !copypath.IsUnavailable(err) || !strings.Contains(err.Error(), tt.wantFail) {
					t.Fatalf("Open = %v, want unavailable: %s", err, tt.wantFail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Limits(); got != tt.want {
				t.Errorf("Limits() = %+v\nwant       %+v", got, tt.want)
			}
		})
	}
}
