package scsi

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

const mib = 1 << 20

// lu is a fake SCSI LU: what it answers to discovery.
type lu struct {
	threePC bool
	naa     []byte // nil: no NAA designator
	blocks  uint64
	lbs     uint32
	params  []byte // operating parameters; nil: RECEIVE COPY RESULTS is an invalid opcode
}

// fakeTarget answers SCSI commands for LUs by file and records what
// happens to the data and the cache, in order.
type fakeTarget struct {
	mu     sync.Mutex // commands may come from several goroutines
	t      *testing.T
	lus    map[*os.File]*lu
	names  map[*os.File]string
	events []string
	// xcopy answers the n-th EXTENDED COPY (from 0); nil or a zero
	// response is GOOD.
	xcopy func(n int) response
	sent  int
}

func newTarget(t *testing.T) *fakeTarget {
	tg := &fakeTarget{t: t, lus: map[*os.File]*lu{}, names: map[*os.File]string{}}
	ex, sr, dr, od, ds, id := execute, syncRange, dropRange, openDisk, deviceSize, identify
	t.Cleanup(func() { execute, syncRange, dropRange, openDisk, deviceSize, identify = ex, sr, dr, od, ds, id })
	execute = tg.execute
	syncRange = func(f *os.File, off, n int64) error { tg.event("writeback %s %d+%d", tg.names[f], off, n); return nil }
	dropRange = func(f *os.File, off, n int64) error { tg.event("drop %s %d+%d", tg.names[f], off, n); return nil }
	openDisk = func(string) (*os.File, error) { return nil, os.ErrNotExist }
	return tg
}

func (tg *fakeTarget) event(format string, args ...any) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.events = append(tg.events, fmt.Sprintf(format, args...))
}

// file makes a stand-in for a device node answering as l.
func (tg *fakeTarget) file(name string, l *lu) *os.File {
	f, err := os.Create(filepath.Join(tg.t.TempDir(), name))
	if err != nil {
		tg.t.Fatal(err)
	}
	tg.t.Cleanup(func() { f.Close() })
	tg.lus[f], tg.names[f] = l, name
	return f
}

var lioParams = []byte{
	0, 0, 0, 0x2a, 1, 0, 0, 0, 0, 2, 0, 1, 0, 0, 4, 0, 0x10, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9, 0, 0, 0, 0, 0, 2, 0x02, 0xe4,
}

func lio(naa byte) *lu {
	return &lu{threePC: true, naa: []byte{0x60, 0x01, 0x40, naa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, blocks: 1 << 21, lbs: 512, params: lioParams}
}

var checkCondition = func(sense string) response {
	return response{status: statusCheckCondition, driverStatus: driverSense, sense: hexBytes(sense)}
}

func hexBytes(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func (tg *fakeTarget) execute(f *os.File, req *request) (response, error) {
	l := tg.lus[f]
	if l == nil {
		return response{}, fmt.Errorf("fake: unknown file %s", f.Name())
	}
	fill := func(b []byte) response {
		n := copy(req.data, b)
		return response{resid: len(req.data) - n}
	}
	switch cdb := req.cdb; {
	case cdb[0] == opInquiry && cdb[1] == 0:
		std := make([]byte, 36)
		copy(std[8:], "LIO-ORG ")
		copy(std[16:], "fake            ")
		if l.threePC {
			std[5] = 0x08
		}
		return fill(std), nil
	case cdb[0] == opInquiry && cdb[2] == vpdDeviceID:
		page := []byte{0, 0x83, 0, 0}
		if l.naa != nil {
			page = append(page, 1, 3, 0, byte(len(l.naa)))
			page = append(page, l.naa...)
		}
		page = append(page, 2, 1, 0, 8)
		page = append(page, "LIO-ORG "...)
		binary.BigEndian.PutUint16(page[2:], uint16(len(page)-4))
		return fill(page), nil
	case cdb[0] == opServiceActionIn16:
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, l.blocks-1)
		binary.BigEndian.PutUint32(b[8:], l.lbs)
		return fill(b), nil
	case cdb[0] == opReceiveCopyResults:
		if l.params == nil {
			return checkCondition("70 00 05 00000000 0a 00000000 20 00 00 000000"), nil
		}
		return fill(l.params), nil
	case cdb[0] == opExtendedCopy:
		if req.dir != dirOut || int(binary.BigEndian.Uint32(cdb[10:])) != len(req.data) {
			tg.t.Errorf("EXTENDED COPY: direction %d, CDB length %d, data %d", req.dir, binary.BigEndian.Uint32(cdb[10:]), len(req.data))
		}
		p := req.data
		cl := int(binary.BigEndian.Uint16(p[2:]))
		seg := p[16+cl:]
		tg.event("xcopy via %s: %d cscd, blocks %d from %d to %d, ids %d->%d", tg.names[f], cl/32,
			binary.BigEndian.Uint16(seg[10:]), binary.BigEndian.Uint64(seg[12:]), binary.BigEndian.Uint64(seg[20:]),
			binary.BigEndian.Uint16(seg[4:]), binary.BigEndian.Uint16(seg[6:]))
		tg.mu.Lock()
		n := tg.sent
		tg.sent++
		tg.mu.Unlock()
		if tg.xcopy != nil {
			return tg.xcopy(n), nil
		}
		return response{}, nil
	}
	return checkCondition("70 00 05 00000000 0a 00000000 20 00 00 000000"), nil
}

// endpoint is a device as the copier opens it.
func endpoint(f *os.File, disk string, part bool, start, size int64) copypath.Endpoint {
	name := disk
	if part {
		name = disk + "1"
	}
	return copypath.Endpoint{Path: "/dev/" + name, File: f, Block: true, Size: size, LBS: 512, Disk: "blk:" + disk, Start: start,
		Dev: &sysfs.Device{Name: name, Disk: disk, Partition: part, Start: start, Size: size}}
}

func openPair(t *testing.T, src, dst copypath.Endpoint) *session {
	t.Helper()
	// One command at a time: the fake's record is then in command order.
	s, err := Path{Depth: 1}.Open(copypath.Pair{Src: src, Dst: dst})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*session)
}

// Within one LU, through partitions: one CSCD naming the LU, segments of
// 31 MiB at LU block addresses (partition starts added), sent through the
// destination; the page cache written back before and dropped after.
func TestCopyWithinOneLUThroughPartitions(t *testing.T) {
	tg := newTarget(t)
	l := lio(0xaa)
	p1, p2 := tg.file("sda1", l), tg.file("sda2", l)
	src := endpoint(p1, "sda", true, 1*mib, 100*mib)
	dst := endpoint(p2, "sda", true, 200*mib, 100*mib)
	s := openPair(t, src, dst)
	lim := s.Limits()
	if lim.Unit != 8*mib || lim.Align != 512 || lim.Canary != 64<<10 || lim.Request != 124*mib || lim.InFlight != DefaultInFlight {
		t.Errorf("limits %+v; want 8 MiB units, a 64 KiB canary, 124 MiB requests (four 31 MiB segments)", lim)
	}
	if lim.Command != 31*mib {
		t.Errorf("Command = %d, want one 31 MiB segment: requests past one command are whole commands", lim.Command)
	}
	tg.events = nil
	done, err := s.Copy(context.Background(), 4*mib, 0, 70*mib, nil)
	if err != nil || done != 70*mib {
		t.Fatalf("Copy = %d, %v; want 70 MiB", done, err)
	}
	want := []string{
		"writeback sda1 0+73400320",
		"writeback sda2 4194304+73400320",
		"xcopy via sda2: 1 cscd, blocks 63488 from 2048 to 417792, ids 0->0",
		"xcopy via sda2: 1 cscd, blocks 63488 from 65536 to 481280, ids 0->0",
		"xcopy via sda2: 1 cscd, blocks 16384 from 129024 to 544768, ids 0->0",
		"drop sda2 4194304+73400320",
	}
	if strings.Join(tg.events, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(tg.events, "\n"), strings.Join(want, "\n"))
	}
	if s.Requests() != 3 {
		t.Errorf("Requests() = %d, want 3", s.Requests())
	}
}

// Between two LUs: two CSCDs, source first, segment from 0 to 1.
func TestCopyBetweenTwoLUs(t *testing.T) {
	tg := newTarget(t)
	a, b := tg.file("sda", lio(0xaa)), tg.file("sdb", lio(0xbb))
	s := openPair(t, endpoint(a, "sda", false, 0, 1<<30), endpoint(b, "sdb", false, 0, 1<<30))
	tg.events = nil
	if done, err := s.Copy(context.Background(), 8*mib, 2*mib, mib, nil); err != nil || done != mib {
		t.Fatalf("Copy = %d, %v", done, err)
	}
	if got := tg.events[2]; got != "xcopy via sdb: 2 cscd, blocks 2048 from 4096 to 16384, ids 0->1" {
		t.Errorf("command %q", got)
	}
}

// Why a pair cannot be served, in words, as "unavailable".
func TestOpenUnavailable(t *testing.T) {
	tests := []struct {
		name     string
		src, dst *lu
		dm       bool
		want     string
	}{
		{"no 3PC", &lu{naa: lio(1).naa, blocks: 1 << 21, lbs: 512, params: lioParams}, nil, false, "does not announce third-party copy"},
		{"no NAA designator", &lu{threePC: true, blocks: 1 << 21, lbs: 512, params: lioParams}, nil, false, "has no NAA designator"},
		{"no operating parameters", &lu{threePC: true, naa: lio(1).naa, blocks: 1 << 21, lbs: 512}, nil, false, "does not report its copy operating parameters"},
		{"other LU lacks NAA", lio(1), &lu{threePC: true, blocks: 1 << 21, lbs: 512, params: lioParams}, false, "sdb has no NAA designator"},
		{"same LU through two paths", lio(1), lio(1), false, "same SCSI LU"},
		{"different block sizes", lio(1), &lu{threePC: true, naa: lio(2).naa, blocks: 1 << 18, lbs: 4096, params: lioParams}, false, "reports 4096-byte blocks"},
		{"device-mapper", lio(1), nil, true, "is not a SCSI disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t)
			src := endpoint(tg.file("sda", tt.src), "sda", false, 0, 1<<30)
			dst := src
			if tt.dst != nil {
				dst = endpoint(tg.file("sdb", tt.dst), "sdb", false, 0, 1<<30)
			}
			if tt.dm {
				dst.Dev = &sysfs.Device{Name: "dm-0", Disk: "dm-0", Slaves: []*sysfs.Device{src.Dev}}
			}
			_, err := Path{}.Open(copypath.Pair{Src: src, Dst: dst})
			if !copypath.IsUnavailable(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v; want unavailable saying %q", err, tt.want)
			}
		})
	}
}

// A copy manager that cannot reach the other LU aborts the copy: the path
// is unavailable from that command on, the commands before it count.
func TestUnreachableTargetFallsBackAtTheExactByte(t *testing.T) {
	tg := newTarget(t)
	tg.xcopy = func(n int) response {
		if n == 1 {
			return checkCondition("70 00 0a 00000000 0a 00000000 0d 02 00 000000")
		}
		return response{}
	}
	a, b := tg.file("sda", lio(0xaa)), tg.file("sdb", lio(0xbb))
	s := openPair(t, endpoint(a, "sda", false, 0, 1<<30), endpoint(b, "sdb", false, 0, 1<<30))
	done, err := s.Copy(context.Background(), 0, 0, 62*mib, nil)
	if done != 31*mib || !copypath.IsUnavailable(err) || !strings.Contains(err.Error(), "copy target device not reachable") {
		t.Errorf("Copy = %d, %v; want 31 MiB done and unavailable, saying the target is not reachable", done, err)
	}
}

// A medium error is real: it names both devices, the offsets and the
// error, and stops the copy.
func TestMediumErrorIsReal(t *testing.T) {
	tg := newTarget(t)
	tg.xcopy = func(int) response { return checkCondition("72 03 11 00 00000000") }
	a := tg.file("sda", lio(0xaa))
	s := openPair(t, endpoint(a, "sda", false, 0, 1<<30), endpoint(a, "sda", false, 0, 1<<30))
	done, err := s.Copy(context.Background(), 512*mib, 8*mib, mib, nil)
	want := "EXTENDED COPY /dev/sda -> /dev/sda at offset 8388608 (1048576 bytes to offset 536870912): medium error: unrecovered read error"
	if done != 0 || err == nil || copypath.IsUnavailable(err) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Copy = %d, %v; want 0 and a real error starting %q", done, err, want)
	}
}

// A UNIT ATTENTION is answered by sending the command once more; a second
// one in a row is a real error.
func TestUnitAttentionIsRetriedOnce(t *testing.T) {
	ua := checkCondition("70 00 06 00000000 0a 00000000 3f 0e 00 000000")
	tg := newTarget(t)
	tg.xcopy = func(n int) response {
		if n == 0 {
			return ua
		}
		return response{}
	}
	a := tg.file("sda", lio(0xaa))
	s := openPair(t, endpoint(a, "sda", false, 0, 1<<30), endpoint(a, "sda", false, 0, 1<<30))
	if done, err := s.Copy(context.Background(), 64*mib, 0, mib, nil); err != nil || done != mib || s.Requests() != 2 {
		t.Errorf("Copy = %d, %v, %d commands; want 1 MiB after a retry (2 commands)", done, err, s.Requests())
	}
	tg.xcopy = func(int) response { return ua }
	if _, err := s.Copy(context.Background(), 64*mib, 0, mib, nil); err == nil || copypath.IsUnavailable(err) {
		t.Errorf("two UNIT ATTENTIONs in a row: %v; want a real error", err)
	}
}

// Requests outside the contract are refused before any command: a
// request whose own ranges overlap on one LU (LIO copies forward in pieces
// and would read what it wrote), past either end, or misaligned.
func TestCheckRefusesBeforeSending(t *testing.T) {
	tg := newTarget(t)
	a := tg.file("sda", lio(0xaa))
	s := openPair(t, endpoint(a, "sda", false, 0, 64*mib), endpoint(a, "sda", false, 0, 64*mib))
	tests := []struct {
		name        string
		dst, src, n int64
		want        string
	}{
		{"overlap forward", mib + 512, mib, mib, "overlap within one request"},
		{"overlap backward", mib, mib + 512, mib, "overlap within one request"},
		{"past the source end", 0, 63 * mib, 2 * mib, "past the end of /dev/sda"},
		{"past the destination end", 63 * mib, 0, 2 * mib, "reach past the end"},
		{"misaligned", 100, 0, mib, "not whole 512-byte blocks"},
	}
	for _, tt := range tests {
		tg.events = nil
		_, err := s.Copy(context.Background(), tt.dst, tt.src, tt.n, nil)
		if err == nil || copypath.IsUnavailable(err) || !strings.Contains(err.Error(), tt.want) || len(tg.events) != 0 {
			t.Errorf("%s: %v, events %v; want a real error saying %q and nothing sent", tt.name, err, tg.events, tt.want)
		}
	}
	// Exactly the distance apart is no overlap.
	if _, err := s.Copy(context.Background(), 2*mib, mib, mib, nil); err != nil {
		t.Errorf("adjacent ranges: %v", err)
	}
}

// A cancelled context stops between commands; the commands done count.
func TestCancelStopsBetweenCommands(t *testing.T) {
	tg := newTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	tg.xcopy = func(n int) response {
		if n == 0 {
			cancel()
		}
		return response{}
	}
	a, b := tg.file("sda", lio(0xaa)), tg.file("sdb", lio(0xbb))
	s := openPair(t, endpoint(a, "sda", false, 0, 1<<30), endpoint(b, "sdb", false, 0, 1<<30))
	done, err := s.Copy(ctx, 0, 0, 93*mib, nil)
	if done != 31*mib || err != context.Canceled || s.Requests() != 1 {
		t.Errorf("Copy = %d, %v after %d commands; want 31 MiB, context.Canceled, 1", done, err, s.Requests())
	}
}

// Several commands of one call run at once; what is counted done is still
// the prefix before the first failure, in order, whatever finished later.
func TestCommandsInFlightCountOnlyTheInOrderPrefix(t *testing.T) {
	tg := newTarget(t)
	tg.xcopy = func(int) response { return response{} }
	a, b := tg.file("sda", lio(0xaa)), tg.file("sdb", lio(0xbb))
	s, err := Path{Depth: 4}.Open(copypath.Pair{Src: endpoint(a, "sda", false, 0, 1<<30), Dst: endpoint(b, "sdb", false, 0, 1<<30)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The second command by LBA fails; the others succeed.
	tg.xcopy = nil
	fail := checkCondition("70 00 0a 00000000 0a 00000000 0d 02 00 000000")
	execOK := execute
	execute = func(f *os.File, req *request) (response, error) {
		if req.cdb[0] == opExtendedCopy && binary.BigEndian.Uint64(req.data[16+64+12:]) == 31*2048 {
			return fail, nil
		}
		return execOK(f, req)
	}
	done, err := s.Copy(context.Background(), 0, 0, 124*mib, nil)
	if done != 31*mib || !copypath.IsUnavailable(err) {
		t.Errorf("Copy = %d, %v; want 31 MiB (the first command) and unavailable", done, err)
	}
	if s.Requests() != 4 {
		t.Errorf("%d commands sent, want all 4 (sent at once)", s.Requests())
	}
}
