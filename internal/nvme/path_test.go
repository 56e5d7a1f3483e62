package nvme

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// partitions returns two partitions of nvme0n1 (4 GiB of 4 KiB blocks, the
// fake's default namespace): p1 at 1 MiB and p2 at 2 GiB, 1 GiB each.
func partitions(d *fakeDevice) copypath.Pair {
	return copypath.Pair{
		Src: endpoint("nvme0n1p1", "nvme0n1", d.file("p1"), true, 1*mib, 1*gib, 4096),
		Dst: endpoint("nvme0n1p2", "nvme0n1", d.file("p2"), true, 2*gib, 1*gib, 4096),
	}
}

func open(t *testing.T, p Path, pair copypath.Pair) *session {
	t.Helper()
	s, err := p.Open(pair)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*session)
}

func TestOpenRefusesInWords(t *testing.T) {
	tests := []struct {
		name  string
		setup func(d *fakeDevice, p *copypath.Pair)
		words string
		real  bool // a real error rather than "unavailable"
	}{
		{"regular files", func(d *fakeDevice, p *copypath.Pair) { p.Src.Block, p.Dst.Block = false, false },
			"NVMe Copy works between block devices only", false},
		{"no sysfs entry", func(d *fakeDevice, p *copypath.Pair) { p.Dst.Dev = nil },
			"cannot tell whether /dev/nvme0n1p2 is an NVMe namespace (no sysfs entry)", false},
		{"loop device", func(d *fakeDevice, p *copypath.Pair) {
			p.Src = endpoint("loop0", "loop0", d.file("loop0"), false, 0, 1*gib, 4096)
		}, "/dev/loop0 is not an NVMe namespace or a partition of one", false},
		{"device-mapper over a namespace", func(d *fakeDevice, p *copypath.Pair) {
			p.Dst = endpoint("dm-0", "dm-0", d.file("dm-0"), false, 0, 1*gib, 4096)
			p.Dst.Dev.Slaves = []*sysfs.Device{{Name: "nvme0n1p2", Disk: "nvme0n1"}}
		}, "/dev/dm-0 is not an NVMe namespace or a partition of one", false},
		{"different namespaces", func(d *fakeDevice, p *copypath.Pair) {
			p.Dst = endpoint("nvme0n2", "nvme0n2", d.file("n2"), false, 0, 1*gib, 4096)
		}, "source and destination are different NVMe namespaces (nvme0n1, nvme0n2)", false},
		{"namespace IDs differ", func(d *fakeDevice, p *copypath.Pair) { d.nsidOf = map[*os.File]uint32{p.Dst.File: 2} },
			"different NVMe namespaces (IDs 1 and 2)", false},
		{"not NVMe after all", func(d *fakeDevice, p *copypath.Pair) {
			d.nsidErr = os.NewSyscallError("ioctl(NVME_IOCTL_ID)", unix.ENOTTY)
		}, "not an NVMe namespace", false},
		{"not root", func(d *fakeDevice, p *copypath.Pair) {
			d.idErr = map[uint8]error{1: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EACCES)}
		}, "NVMe passthrough needs CAP_SYS_ADMIN (run as root)", false},
		{"no Copy", func(d *fakeDevice, p *copypath.Pair) { d.ctrl = idCtrl("QEMU NVMe Ctrl", 0x5d, 1, 0) },
			"does not support the NVMe Copy command (ONCS bit 8 clear)", false},
		{"mssrl=0", func(d *fakeDevice, p *copypath.Pair) { d.ns = idNs(1<<20, 12, 0, 2048, 127) },
			"namespace 1 reports no Copy limits (MSSRL 0)", false},
		{"mcl=0", func(d *fakeDevice, p *copypath.Pair) { d.ns = idNs(1<<20, 12, 128, 0, 127) },
			"namespace 1 reports no Copy limits (MCL 0)", false},
		{"protection information", func(d *fakeDevice, p *copypath.Pair) { d.ns[29] = 2 },
			"end-to-end protection information (type 2)", false},
		{"block size differs", func(d *fakeDevice, p *copypath.Pair) { d.ns = idNs(8<<20, 9, 128, 2048, 127) },
			"namespace 1 is formatted with 512-byte blocks but the kernel reports 4096-byte blocks for /dev/nvme0n1p1", false},
		{"partition off the block grid", func(d *fakeDevice, p *copypath.Pair) { p.Dst.Start = 2*gib + 512 },
			"/dev/nvme0n1p2 starts at byte 2147484160 of namespace 1, not on a 4096-byte block boundary", false},
		{"partition past the namespace", func(d *fakeDevice, p *copypath.Pair) { p.Dst.Size = 3 * gib },
			"/dev/nvme0n1p2 (3221225472 bytes from byte 2147483648) extends past the end of namespace 1 (1048576 blocks)", false},
		{"Identify fails with EIO", func(d *fakeDevice, p *copypath.Pair) {
			d.idErr = map[uint8]error{0: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EIO)}
		}, "input/output error", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			pair := partitions(d)
			tt.setup(d, &pair)
			s, err := Path{}.Open(pair)
			if err == nil {
				s.Close()
				t.Fatalf("Open served the pair, want %q", tt.words)
			}
			if copypath.IsUnavailable(err) == tt.real {
				t.Errorf("IsUnavailable(%v) = %v, want %v", err, !tt.real, !tt.real)
			}
			if !strings.Contains(err.Error(), tt.words) {
				t.Errorf("Open error %q does not say %q", err, tt.words)
			}
			if got := d.copied(); len(got) > 0 {
				t.Errorf("Open sent %d Copy commands", len(got))
			}
		})
	}
}

func TestOpenLimits(t *testing.T) {
	tests := []struct {
		name string
		path Path
		lbs  int64
		ns   []byte
		want copypath.Limits
	}{
		{"rig: mssrl=128,mcl=2048,msrc=127, 4 KiB blocks: 8 commands of 16 ranges a call", Path{}, 4096,
			idNs(1<<20, 12, 128, 2048, 127),
			copypath.Limits{Unit: 512 * kib, Align: 4096, Request: 64 * mib, Command: 8 * mib, InFlight: 4, Canary: 64 * kib}},
		{"QEMU defaults, 512-byte blocks: one range per command", Path{}, 512,
			idNs(8<<20, 9, 128, 128, 127),
			copypath.Limits{Unit: 64 * kib, Align: 512, Request: 64 * mib, InFlight: 4, Canary: 64 * kib}},
		{"a command of 3 ranges does not divide the request: whole commands", Path{}, 4096,
			idNs(1<<20, 12, 100, 300, 2),
			copypath.Limits{Unit: 400 * kib, Align: 4096, Request: 54 * 1200 * kib, Command: 1200 * kib, InFlight: 4, Canary: 64 * kib}},
		{"huge MCL: whole ranges", Path{}, 4096,
			idNs(1<<20, 12, 4096, 1<<30, 255),
			copypath.Limits{Unit: 16 * mib, Align: 4096, Request: 64 * mib, InFlight: 4, Canary: 64 * kib}},
		{"a range beyond the cap: one range a call", Path{}, 4096,
			idNs(1<<20, 12, 65535, 1<<30, 255),
			copypath.Limits{Unit: 65535 * 4096, Align: 4096, Request: 65535 * 4096, InFlight: 4, Canary: 64 * kib}},
		{"settings", Path{Request: 16 * mib, InFlight: 2, Depth: 1}, 4096,
			idNs(1<<20, 12, 128, 2048, 127),
			copypath.Limits{Unit: 512 * kib, Align: 4096, Request: 16 * mib, Command: 8 * mib, InFlight: 2, Canary: 64 * kib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			d.ns = tt.ns
			pair := partitions(d)
			pair.Src.LBS, pair.Dst.LBS = tt.lbs, tt.lbs
			s := open(t, tt.path, pair)
			if got := s.Limits(); got != tt.want {
				t.Errorf("Limits() = %+v\nwant       %+v", got, tt.want)
			}
		})
	}
}

// Offsets are the partitions' own; commands address namespace LBAs: the
// partition's start plus the offset, in blocks.
func TestCopyTranslatesPartitionOffsetsToNamespaceLBAs(t *testing.T) {
	d := newFake(t)
	pair := partitions(d)
	s := open(t, Path{}, pair)
	srcOff, dstOff := int64(8*kib), int64(64*mib)
	n := int64(20 * mib) // 2.5 commands of 8 MiB
	var progressed int64
	done, err := s.Copy(context.Background(), dstOff, srcOff, n, func(b int64) { progressed += b })
	if err != nil || done != n || progressed != n {
		t.Fatalf("Copy = %d, %v (progress %d); want %d, nil", done, err, progressed, n)
	}
	got := d.copied()
	slices.SortFunc(got, func(a, b sentCopy) int { return int(a.sdlba - b.sdlba) })
	if len(got) != 3 || s.Requests() != 3 {
		t.Fatalf("%d commands (Requests %d), want 3", len(got), s.Requests())
	}
	srcLBA := uint64((1*mib + srcOff) / 4096)
	dstLBA := uint64((2*gib + dstOff) / 4096)
	var blocks uint64
	for i, c := range got {
		if c.file != pair.Dst.File || c.nsid != 1 || c.cdw12>>8 != 0 {
			t.Errorf("command %d went through %s with nsid %d, CDW12 %#x; want the destination's descriptor, nsid 1, format 0h, nothing else", i, d.names[c.file], c.nsid, c.cdw12)
		}
		if c.sdlba != dstLBA+blocks {
			t.Errorf("command %d SDLBA %d, want %d", i, c.sdlba, dstLBA+blocks)
		}
		for _, r := range c.ranges {
			if r.slba != srcLBA+blocks || r.blocks > 128 {
				t.Errorf("command %d range at LBA %d of %d blocks; want LBA %d, at most 128 blocks", i, r.slba, r.blocks, srcLBA+blocks)
			}
			blocks += uint64(r.blocks)
		}
	}
	if blocks != uint64(n/4096) {
		t.Errorf("commands copy %d blocks, want %d", blocks, n/4096)
	}
	// Every command stays inside the partitions the user named.
	for _, c := range got {
		var n uint64
		for _, r := range c.ranges {
			n += uint64(r.blocks)
		}
		first, last := c.ranges[0].slba, c.ranges[len(c.ranges)-1].slba+uint64(c.ranges[len(c.ranges)-1].blocks)
		if c.sdlba < uint64(2*gib/4096) || c.sdlba+n > uint64(3*gib/4096) || first < uint64(1*mib/4096) || last > uint64((1*mib+1*gib)/4096) {
			t.Errorf("command at SDLBA %d from LBA %d leaves its partitions", c.sdlba, first)
		}
	}
}

// A later command that completes before an earlier one fails is not
// counted: the bytes done are a prefix, so a fallback resumes at the first
// byte the failed command should have copied.
func TestCopyCountsOnlyTheInOrderPrefix(t *testing.T) {
	d := newFake(t)
	pair := partitions(d)
	s := open(t, Path{Depth: 4}, pair)
	later := make(chan struct{})
	var once sync.Once
	d.answer = func(i int, c sentCopy) (uint32, Status, error) {
		switch c.sdlba - uint64(2*gib/4096) {
		case 2048: // the second command: fails, but only after the third succeeded
			<-later
			return 5, 0x4281, nil // unrecovered read error; ranges 0-4 copied
		case 4096:
			once.Do(func() { close(later) })
		}
		return 0, 0, nil
	}
	var progressed int64
	done, err := s.Copy(context.Background(), 0, 0, 32*mib, func(b int64) { progressed += b })
	if done != 8*mib || progressed != 8*mib {
		t.Errorf("Copy = %d bytes (progress %d), want 8 MiB: the first command only", done, progressed)
	}
	var e *Error
	if !errors.As(err, &e) || copypath.IsUnavailable(err) {
		t.Fatalf("Copy error %v: want a real *Error", err)
	}
	if e.Offset != 8*mib || e.DstOffset != 8*mib || e.Len != 8*mib || e.Status.SC() != 0x81 {
		t.Errorf("error at offset %d to %d (%d bytes), status %v; want the second command's 8 MiB at 8 MiB, unrecovered read error", e.Offset, e.DstOffset, e.Len, e.Status)
	}
	for _, w := range []string{"/dev/nvme0n1p1 -> /dev/nvme0n1p2 at offset 8388608", "unrecovered read error", "source ranges 0-4 copied"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestCopyFallsBackOnlyWhereTheDeviceRefusesCopy(t *testing.T) {
	tests := []struct {
		name        string
		status      Status
		err         error
		unavailable bool
	}{
		{"invalid opcode", 0x4001, nil, true},
		{"invalid field", 0x4002, nil, true},
		{"invalid namespace or format", 0x400b, nil, true},
		{"command size limit exceeded", 0x4183, nil, true},
		{"permission", 0, os.NewSyscallError("ioctl(NVME_IOCTL_IO_CMD)", unix.EACCES), true},
		{"medium error", 0x4281, nil, false},
		{"write fault", 0x0280, nil, false},
		{"guard check", 0x4282, nil, false},
		{"LBA out of range", 0x4080, nil, false},
		{"cancelled by a controller reset", 0, os.NewSyscallError("ioctl(NVME_IOCTL_IO_CMD)", unix.EINTR), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			s := open(t, Path{Depth: 1}, partitions(d))
			d.answer = func(i int, c sentCopy) (uint32, Status, error) {
				if i == 1 {
					return 0, tt.status, tt.err
				}
				return 0, 0, nil
			}
			done, err := s.Copy(context.Background(), 0, 0, 64*mib, nil)
			if done != 8*mib {
				t.Errorf("Copy = %d bytes, want 8 MiB (the first command)", done)
			}
			if err == nil || copypath.IsUnavailable(err) != tt.unavailable {
				t.Errorf("Copy error %v: unavailable %v, want %v", err, copypath.IsUnavailable(err), tt.unavailable)
			}
			if tt.err != nil && !errors.Is(err, tt.err.(*os.SyscallError).Err) {
				t.Errorf("Copy error %v does not keep %v", err, tt.err)
			}
			// Nothing is retried, and nothing after a failure is sent.
			if n := len(d.copied()); n != 2 || s.Requests() != 2 {
				t.Errorf("%d commands sent (Requests %d), want 2", n, s.Requests())
			}
		})
	}
}

func TestCopyStopsAtCancel(t *testing.T) {
	d := newFake(t)
	s := open(t, Path{Depth: 1}, partitions(d))
	ctx, cancel := context.WithCancel(context.Background())
	d.answer = func(i int, c sentCopy) (uint32, Status, error) {
		if i == 2 {
			cancel()
		}
		return 0, 0, nil
	}
	done, err := s.Copy(ctx, 0, 0, 64*mib, nil)
	if done != 24*mib || !errors.Is(err, context.Canceled) {
		t.Errorf("Copy = %d, %v; want 24 MiB (three commands), context.Canceled", done, err)
	}
	if len(d.copied()) != 3 {
		t.Errorf("%d commands sent after cancel at the third, want 3", len(d.copied()))
	}
}

// Passthrough bypasses the page cache: dirty pages of both ranges are
// written back before the first command, cached pages of the destination
// are dropped after the last, in every node that may cache them.
func TestCopyKeepsThePageCacheCoherent(t *testing.T) {
	d := newFake(t)
	d.disk = d.file("disk")
	d.size = 4 * gib
	pair := partitions(d)
	s := open(t, Path{Depth: 1}, pair)
	if len(s.views) != 3 {
		t.Fatalf("%d cache views, want source, destination and whole disk", len(s.views))
	}
	d.events = nil
	done, err := s.Copy(context.Background(), 64*mib, 4*kib, 12*mib, nil)
	if err != nil || done != 12*mib {
		t.Fatalf("Copy = %d, %v", done, err)
	}
	want := []string{
		"writeback p1 4096+12582912",         // source range, source node
		"writeback disk 1052672+12582912",    // source range, whole disk
		"writeback p2 67108864+12582912",     // destination range, destination node
		"writeback disk 2214592512+12582912", // destination range, whole disk
		"copy 540672",                        // (2 GiB + 64 MiB) / 4096
		"copy 542720",
		"drop p2 67108864+12582912",
		"drop disk 2214592512+12582912",
	}
	if !sameEvents(d.events, want) {
		t.Errorf("events:\n%s\nwant (writebacks in any order, then copies, then drops):\n%s", strings.Join(d.events, "\n"), strings.Join(want, "\n"))
	}
}

// sameEvents compares writebacks and drops as sets within their phase and
// copies in order.
func sameEvents(got, want []string) bool {
	phase := func(e string) int {
		switch {
		case strings.HasPrefix(e, "writeback"):
			return 0
		case strings.HasPrefix(e, "copy"):
			return 1
		}
		return 2
	}
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if phase(got[i]) != phase(want[i]) {
			return false
		}
	}
	g, w := slices.Clone(got), slices.Clone(want)
	slices.SortStableFunc(g, func(a, b string) int { return phase(a) - phase(b) })
	for p := range 3 {
		var gp, wp []string
		for _, e := range g {
			if phase(e) == p {
				gp = append(gp, e)
			}
		}
		for _, e := range w {
			if phase(e) == p {
				wp = append(wp, e)
			}
		}
		if p != 1 {
			slices.Sort(gp)
			slices.Sort(wp)
		}
		if !slices.Equal(gp, wp) {
			return false
		}
	}
	return true
}

// With 512-byte blocks a destination range may begin and end inside a
// page; the drop covers those pages whole, or their stale halves would
// stay cached. And it happens after a failure too: a failed command may
// have written part of its range.
func TestCopyDropsWholePagesEvenAfterAFailure(t *testing.T) {
	d := newFake(t)
	d.ns = idNs(8<<20, 9, 128, 128, 127)
	pair := copypath.Pair{
		Src: endpoint("nvme0n1", "nvme0n1", d.file("n1"), false, 0, 4*gib, 512),
	}
	pair.Dst = pair.Src // the same node, opened once for each side
	pair.Dst.File = d.file("n1 again")
	s := open(t, Path{}, pair)
	if len(s.views) != 1 {
		t.Fatalf("%d cache views, want 1: both ends are the same node", len(s.views))
	}
	d.answer = func(int, sentCopy) (uint32, Status, error) { return 0, 0x4281, nil }
	d.events = nil
	_, err := s.Copy(context.Background(), 1*mib+1536, 512, 3*kib, nil)
	if err == nil {
		t.Fatal("Copy succeeded, want the medium error")
	}
	if last := d.events[len(d.events)-1]; last != "drop n1 1048576+8192" {
		t.Errorf("last event %q, want the destination 1 MiB+1536..+3 KiB widened to pages: drop n1 1048576+8192", last)
	}
}

func TestOpenUsesTheWholeDiskOnlyIfItIsTheNamespace(t *testing.T) {
	tests := []struct {
		name  string
		setup func(d *fakeDevice)
		views int
	}{
		{"it is", func(d *fakeDevice) { d.disk, d.size = d.file("disk"), 4*gib }, 3},
		{"cannot open", func(d *fakeDevice) {}, 2},
		{"another namespace", func(d *fakeDevice) {
			d.disk, d.size = d.file("disk"), 4*gib
			d.nsidOf = map[*os.File]uint32{d.disk: 2}
		}, 2},
		{"another size", func(d *fakeDevice) { d.disk, d.size = d.file("disk"), 8*gib }, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			tt.setup(d)
			s := open(t, Path{}, partitions(d))
			if len(s.views) != tt.views {
				t.Errorf("%d cache views, want %d", len(s.views), tt.views)
			}
			if !slices.Contains(d.events, "open /dev/nvme0n1") {
				t.Errorf("events %q: the whole disk was not looked for at /dev/nvme0n1", d.events)
			}
		})
	}
}

func TestCopyRefusesRequestsOutsideTheContract(t *testing.T) {
	tests := []struct {
		name                string
		dstOff, srcOff, len int64
		words               string
	}{
		{"misaligned", 0, 512, 4096, "not whole 4096-byte blocks"},
		{"past the source partition", 0, 1*gib - 4096, 8192, "reach past the end of /dev/nvme0n1p1"},
		{"past the destination partition", 1 * gib, 0, 4096, "reach past the end of /dev/nvme0n1p2"},
		{"negative", -4096, 0, 4096, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			s := open(t, Path{}, partitions(d))
			d.events = nil
			done, err := s.Copy(context.Background(), tt.dstOff, tt.srcOff, tt.len, nil)
			if done != 0 || err == nil || copypath.IsUnavailable(err) || !strings.Contains(err.Error(), tt.words) {
				t.Errorf("Copy = %d, %v; want 0 and a real error saying %q", done, err, tt.words)
			}
			if len(d.copied()) != 0 || len(d.events) != 0 {
				t.Errorf("sent %d commands, events %q; want none", len(d.copied()), d.events)
			}
		})
	}
	// Within one namespace, ranges closer than the request overlap.
	d := newFake(t)
	pair := copypath.Pair{Src: endpoint("nvme0n1", "nvme0n1", d.file("n1"), false, 0, 4*gib, 4096)}
	pair.Dst = pair.Src
	s := open(t, Path{}, pair)
	if _, err := s.Copy(context.Background(), 4096, 0, 8192, nil); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("overlapping request: err %v, want a refusal", err)
	}
	if done, err := s.Copy(context.Background(), 8192, 0, 8192, nil); err != nil || done != 8192 {
		t.Errorf("adjacent request: %d, %v; want it copied", done, err)
	}
}

// The copier calls Copy from several goroutines on disjoint ranges.
func TestCopyIsSafeForConcurrentCalls(t *testing.T) {
	d := newFake(t)
	s := open(t, Path{}, partitions(d))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total, progressed int64
	for i := range 8 {
		wg.Go(func() {
			off := int64(i) * 32 * mib
			n, err := s.Copy(context.Background(), off, off, 32*mib, func(b int64) {
				mu.Lock()
				progressed += b
				mu.Unlock()
			})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != 256*mib || progressed != total || s.Requests() != 32 {
		t.Errorf("copied %d, progress %d, Requests %d; want 256 MiB, the same, 32", total, progressed, s.Requests())
	}
}
