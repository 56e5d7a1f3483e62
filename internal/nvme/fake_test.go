package nvme

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// Identify data built at the byte offsets of the specifications, written
// out here as numbers rather than taken from the package's constants, so
// that a wrong constant fails a test.

func pad(s string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
	return b
}

// idCtrl is an Identify Controller data structure (NVMe Base 2.0).
func idCtrl(model string, oncs, ocfs uint16, ctratt uint32) []byte {
	b := make([]byte, 4096)
	copy(b[4:24], pad("SN-1234", 20))             // SN, bytes 23:04
	copy(b[24:64], pad(model, 40))                // MN, bytes 63:24
	copy(b[64:72], pad("8.0.0", 8))               // FR, bytes 71:64
	binary.LittleEndian.PutUint32(b[96:], ctratt) // CTRATT, bytes 99:96
	binary.LittleEndian.PutUint16(b[520:], oncs)  // ONCS, bytes 521:520
	binary.LittleEndian.PutUint16(b[534:], ocfs)  // OCFS, bytes 535:534
	return b
}

// idNs is an Identify Namespace data structure (NVM Command Set 1.2,
// Figures 114 and 115) with two LBA formats, 512 bytes (index 0) and
// 2^lbads bytes (index 1), formatted with index 1.
func idNs(nsze uint64, lbads uint8, mssrl uint16, mcl uint32, msrc uint8) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint64(b[0:], nsze)                // NSZE
	b[25] = 1                                                 // NLBAF: two formats, 0-based
	b[26] = 1                                                 // FLBAS: format 1
	binary.LittleEndian.PutUint16(b[74:], mssrl)              // MSSRL
	binary.LittleEndian.PutUint32(b[76:], mcl)                // MCL
	b[80] = msrc                                              // MSRC
	binary.LittleEndian.PutUint32(b[128:], 9<<16)             // LBAF0: 512 bytes
	binary.LittleEndian.PutUint32(b[132:], uint32(lbads)<<16) // LBAF1
	return b
}

// sentCopy is a Copy command as the fake device decoded it.
type sentCopy struct {
	file   *os.File
	nsid   uint32
	cdw12  uint32
	sdlba  uint64
	ranges []srcRange
}

// fakeDevice stands in for the kernel and an NVMe namespace behind the
// package's seams.
type fakeDevice struct {
	t        *testing.T
	ctrl, ns []byte
	nvmNS    []byte // CNS 05h answer
	nsid     uint32
	nsidOf   map[*os.File]uint32 // per descriptor, else nsid
	nsidErr  error
	idErr    map[uint8]error  // ioctl error per CNS
	idStatus map[uint8]Status // completion status per CNS
	// answer decides each Copy command's outcome (nil: success). It may
	// block to order completions.
	answer func(i int, c sentCopy) (uint32, Status, error)
	names  map[*os.File]string // labels for events
	disk   *os.File            // what openDisk returns, or nil for an error
	size   int64               // what deviceSize says of the disk

	mu     sync.Mutex
	admin  []*command
	copies []sentCopy
	events []string
}

func newFake(t *testing.T) *fakeDevice {
	d := &fakeDevice{
		t:     t,
		ctrl:  idCtrl("QEMU NVMe Ctrl", 0x015d, 0x0003, 0),
		ns:    idNs(1<<20, 12, 128, 2048, 127),
		nsid:  1,
		names: map[*os.File]string{},
	}
	p, id, sr, dr, od, ds := passthru, namespaceID, syncRange, dropRange, openDisk, deviceSize
	t.Cleanup(func() {
		passthru, namespaceID, syncRange, dropRange, openDisk, deviceSize = p, id, sr, dr, od, ds
	})
	passthru = d.passthru
	namespaceID = func(f *os.File) (uint32, error) {
		if d.nsidErr != nil {
			return 0, d.nsidErr
		}
		if id, ok := d.nsidOf[f]; ok {
			return id, nil
		}
		return d.nsid, nil
	}
	syncRange = func(f *os.File, off, n int64) error { d.event("writeback %s %d+%d", d.names[f], off, n); return nil }
	dropRange = func(f *os.File, off, n int64) error { d.event("drop %s %d+%d", d.names[f], off, n); return nil }
	openDisk = func(path string) (*os.File, error) {
		d.event("open %s", path)
		if d.disk == nil {
			return nil, os.ErrNotExist
		}
		return d.disk, nil
	}
	deviceSize = func(*os.File) (int64, error) { return d.size, nil }
	return d
}

func (d *fakeDevice) event(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, fmt.Sprintf(format, args...))
}

func (d *fakeDevice) passthru(f *os.File, c *command) (uint32, Status, error) {
	if len(c.data) > 0 && uintptr(unsafe.Pointer(&c.data[0]))%uintptr(pageSize) != 0 {
		d.t.Errorf("command %#x: data buffer not page-aligned", c.opcode)
	}
	if c.admin {
		return d.identify(c)
	}
	if c.opcode != 0x19 {
		d.t.Errorf("I/O command opcode %#x, want Copy (0x19)", c.opcode)
	}
	// Decode independently of encodeRanges: entries of 32 bytes (format
	// 0h) or 40 (1h), SLBA at 8, NLB 0-based at 16.
	size := 32
	if c.cdw12>>8&0xf == 1 {
		size = 40
	}
	nr := int(c.cdw12&0xff) + 1
	if len(c.data) != nr*size {
		d.t.Errorf("Copy with NR %d has %d bytes of ranges, want %d", nr-1, len(c.data), nr*size)
	}
	sc := sentCopy{file: f, nsid: c.nsid, cdw12: c.cdw12, sdlba: uint64(c.cdw11)<<32 | uint64(c.cdw10)}
	for i := 0; i+size <= len(c.data); i += size {
		e := c.data[i : i+size]
		sc.ranges = append(sc.ranges, srcRange{
			slba:   binary.LittleEndian.Uint64(e[8:]),
			blocks: int64(binary.LittleEndian.Uint16(e[16:])) + 1,
		})
	}
	d.mu.Lock()
	i := len(d.copies)
	d.copies = append(d.copies, sc)
	d.events = append(d.events, fmt.Sprintf("copy %d", sc.sdlba))
	d.mu.Unlock()
	if d.answer != nil {
		return d.answer(i, sc)
	}
	return 0, 0, nil
}

func (d *fakeDevice) identify(c *command) (uint32, Status, error) {
	d.mu.Lock()
	d.admin = append(d.admin, c)
	d.mu.Unlock()
	if c.opcode != 0x06 || len(c.data) != 4096 {
		d.t.Errorf("admin command %#x with %d bytes, want Identify (0x06) with 4096", c.opcode, len(c.data))
	}
	cns := uint8(c.cdw10)
	if err := d.idErr[cns]; err != nil {
		return 0, 0, err
	}
	if s := d.idStatus[cns]; s != 0 {
		return 0, s, nil
	}
	switch {
	case cns == 0x01 && c.nsid == 0:
		copy(c.data, d.ctrl)
	case cns == 0x00 && c.nsid == d.nsid:
		copy(c.data, d.ns)
	case cns == 0x05 && c.nsid == d.nsid && c.cdw11>>24 == 0 && d.nvmNS != nil:
		copy(c.data, d.nvmNS)
	default:
		return 0, 0x4002, nil // invalid field in command
	}
	return 0, 0, nil
}

// copied returns the Copy commands sent so far.
func (d *fakeDevice) copied() []sentCopy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]sentCopy(nil), d.copies...)
}

// file makes an *os.File to stand for a device node (the fakes never do
// I/O on it) and labels it for events.
func (d *fakeDevice) file(label string) *os.File {
	f, err := os.Create(filepath.Join(d.t.TempDir(), label))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { f.Close() })
	d.names[f] = label
	return f
}

// endpoint is a block device endpoint on namespace disk; a partition when
// start > 0 or partition is set.
func endpoint(name, disk string, f *os.File, partition bool, start, size, lbs int64) copypath.Endpoint {
	return copypath.Endpoint{
		Path: "/dev/" + name, File: f, Block: true,
		Dev:  &sysfs.Device{Name: name, Disk: disk, Partition: partition, Start: start, Size: size, LogicalBlockSize: lbs},
		Size: size, LBS: lbs, Disk: "blk:" + disk, Start: start,
	}
}
