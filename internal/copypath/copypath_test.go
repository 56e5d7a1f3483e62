package copypath

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// A device command never overlaps itself on one disk, never leaves the
// ranges the user named, and is whole blocks; between two disks the same
// offsets are no overlap.
func TestCheckRequest(t *testing.T) {
	a := Endpoint{Path: "/dev/sda1", Disk: "blk:sda", Start: 1 << 20, Size: 64 << 20}
	b := Endpoint{Path: "/dev/sda2", Disk: "blk:sda", Start: 1<<20 + 2<<20, Size: 64 << 20}
	other := Endpoint{Path: "/dev/sdb", Disk: "blk:sdb", Size: 64 << 20}
	tests := []struct {
		name              string
		src, dst          Endpoint
		dstOff, srcOff, n int64
		want              string
	}{
		{"fine", a, b, 0, 0, 1 << 20, ""},
		{"partitions overlap on the disk", a, b, 0, 2<<20 + 512, 1 << 20, "overlap within one request"},
		{"same offsets on two disks", a, other, 1 << 20, 0, 1 << 20, ""},
		{"adjacent", a, a, 1 << 20, 0, 1 << 20, ""},
		{"past the source", a, other, 0, 63 << 20, 2 << 20, "reach past the end of /dev/sda1"},
		{"past the destination", a, other, 63 << 20, 0, 2 << 20, "reach past the end of /dev/sdb"},
		{"not whole blocks", a, other, 0, 0, 1000, "not whole 512-byte blocks"},
		{"negative", a, other, -512, 0, 512, "negative"},
	}
	for _, tt := range tests {
		err := CheckRequest("EXTENDED COPY", tt.src, tt.dst, 512, tt.dstOff, tt.srcOff, tt.n)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// Commands finish in any order; ok hears of the successes in order, up to
// the first failure, which is the error; nothing is sent after it.
func TestInOrder(t *testing.T) {
	var mu sync.Mutex
	sent := map[int]bool{}
	release := make(chan struct{})
	boom := errors.New("boom")
	var okd []int
	err := InOrder(context.Background(), 10, 3, func(i int) error {
		mu.Lock()
		sent[i] = true
		mu.Unlock()
		if i == 0 {
			<-release // the first finishes last of the first three
		}
		if i == 1 {
			close(release)
		}
		if i == 4 {
			return boom
		}
		return nil
	}, func(i int) { okd = append(okd, i) })
	if !errors.Is(err, boom) || len(okd) != 4 || okd[3] != 3 {
		t.Errorf("InOrder = %v, ok heard %v; want boom after 0-3", err, okd)
	}
	// How many were sent after 4 depends on when 4's result is read
	// (5 and 6 may finish first and free their slots): below.

	// Nothing is sent once a failure is seen. 0 and 2 hold their slots
	// until 1's failure has had 50 ms to be read, so no slot frees
	// before it is.
	gate := make(chan struct{})
	time.AfterFunc(50*time.Millisecond, func() { close(gate) })
	sent = map[int]bool{}
	err = InOrder(context.Background(), 10, 3, func(i int) error {
		mu.Lock()
		sent[i] = true
		mu.Unlock()
		if i == 1 {
			return boom
		}
		<-gate
		return nil
	}, func(int) {})
	if !errors.Is(err, boom) || len(sent) != 3 {
		t.Errorf("InOrder = %v after %d commands sent; want boom after 0-2 only", err, len(sent))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := InOrder(ctx, 2, 1, func(int) error { return nil }, func(int) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestCanaryFor(t *testing.T) {
	tests := []struct {
		name        string
		unit, align int64
		want        int64
	}{
		{"a small unit is the canary", 64 << 10, 512, 64 << 10},
		{"a large unit is capped at 64 KiB", 8 << 20, 512, 64 << 10},
		{"capped in whole blocks", 256 << 20, 3 * 4096, 5 * 3 * 4096},
		{"never below one block", 512, 4096, 4096},
		{"files (align 1)", 1 << 30, 1, 64 << 10},
	}
	for _, tt := range tests {
		if got := CanaryFor(tt.unit, tt.align); got != tt.want {
			t.Errorf("%s: CanaryFor(%d, %d) = %d, want %d", tt.name, tt.unit, tt.align, got, tt.want)
		}
	}
}
