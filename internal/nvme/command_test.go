package nvme

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// unhex decodes hex with spaces and newlines for readability.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The expected bytes below are worked out by hand from NVM Command Set
// Specification 1.2, 3.3.2: CDW10/11 SDLBA low/high, CDW12 NR (0-based) in
// bits 7:0 and DESFMT in bits 11:8; source range entries with SLBA at
// bytes 15:08 and NLB (0-based) at 17:16, little endian, 32 bytes each in
// format 0h (Figure 39) and 40 in format 1h (Figure 40).
func TestCopyCommandMatchesTheSpecBytes(t *testing.T) {
	c := copyCmd{
		sdlba: 0x0000_0001_2345_6789,
		ranges: []srcRange{
			{slba: 0x1122_3344_5566_7788, blocks: 256},
			{slba: 5, blocks: 1},
		},
	}
	tests := []struct {
		name   string
		format uint8
		cdw12  uint32
		data   string
	}{
		{"format 0h", 0, 0x0000_0001, `
			0000000000000000 8877665544332211 ff000000 0000 0000 00000000 0000 0000
			0000000000000000 0500000000000000 00000000 0000 0000 00000000 0000 0000`},
		{"format 1h", 1, 0x0000_0101, `
			0000000000000000 8877665544332211 ff000000 0000 0000 0000 00000000000000000000 0000 0000
			0000000000000000 0500000000000000 00000000 0000 0000 0000 00000000000000000000 0000 0000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := c.command(7, tt.format)
			if cmd.admin || cmd.opcode != 0x19 || cmd.nsid != 7 {
				t.Errorf("admin %v opcode %#x nsid %d; want an I/O command, opcode 0x19, nsid 7", cmd.admin, cmd.opcode, cmd.nsid)
			}
			if cmd.cdw10 != 0x2345_6789 || cmd.cdw11 != 0x0000_0001 {
				t.Errorf("CDW10/11 = %#08x %#08x; want SDLBA split as 0x23456789 0x00000001", cmd.cdw10, cmd.cdw11)
			}
			if cmd.cdw12 != tt.cdw12 {
				t.Errorf("CDW12 = %#08x; want %#08x (NR 1 = two ranges, DESFMT %d, nothing else)", cmd.cdw12, tt.cdw12, tt.format)
			}
			if cmd.cdw13 != 0 || cmd.cdw14 != 0 || cmd.cdw15 != 0 {
				t.Errorf("CDW13-15 = %#x %#x %#x; want 0", cmd.cdw13, cmd.cdw14, cmd.cdw15)
			}
			if want := unhex(t, tt.data); !bytes.Equal(cmd.data, want) {
				t.Errorf("source range list:\n got %x\nwant %x", cmd.data, want)
			}
			if addr := uintptr(unsafe.Pointer(&cmd.data[0])); addr%uintptr(pageSize) != 0 {
				t.Errorf("range list at %#x is not page-aligned", addr)
			}
		})
	}
}

func TestCopyCDW12NumberOfRangesIsZeroBased(t *testing.T) {
	tests := []struct {
		nr     int
		format uint8
		want   uint32
	}{
		{1, 0, 0x000},
		{128, 0, 0x07f}, // QEMU's default MSRC 127
		{256, 0, 0x0ff}, // the most NR can say
		{256, 1, 0x1ff},
	}
	for _, tt := range tests {
		if got := copyCDW12(tt.nr, tt.format); got != tt.want {
			t.Errorf("copyCDW12(%d ranges, format %d) = %#x, want %#x", tt.nr, tt.format, got, tt.want)
		}
	}
}

// The field offsets of struct nvme_passthru_cmd in <linux/nvme_ioctl.h>.
func TestPassthruStructHasTheKernelLayout(t *testing.T) {
	var p passthruCmd
	offsets := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"opcode", unsafe.Offsetof(p.opcode), 0},
		{"flags", unsafe.Offsetof(p.flags), 1},
		{"nsid", unsafe.Offsetof(p.nsid), 4},
		{"cdw2", unsafe.Offsetof(p.cdw2), 8},
		{"metadata", unsafe.Offsetof(p.metadata), 16},
		{"addr", unsafe.Offsetof(p.addr), 24},
		{"metadata_len", unsafe.Offsetof(p.metadataLen), 32},
		{"data_len", unsafe.Offsetof(p.dataLen), 36},
		{"cdw10", unsafe.Offsetof(p.cdw10), 40},
		{"cdw15", unsafe.Offsetof(p.cdw15), 60},
		{"timeout_ms", unsafe.Offsetof(p.timeoutMS), 64},
		{"result", unsafe.Offsetof(p.result), 68},
	}
	for _, o := range offsets {
		if o.got != o.want {
			t.Errorf("offset of %s = %d, want %d", o.name, o.got, o.want)
		}
	}
	c := (&command{opcode: 0x19, nsid: 3, cdw10: 10, cdw11: 11, cdw12: 12, cdw13: 13, cdw14: 14, cdw15: 15, data: make([]byte, 64)}).passthruCmd()
	if c.opcode != 0x19 || c.nsid != 3 || c.cdw10 != 10 || c.cdw11 != 11 || c.cdw12 != 12 || c.cdw13 != 13 || c.cdw14 != 14 || c.cdw15 != 15 {
		t.Errorf("passthruCmd() = %+v: fields not carried over", c)
	}
	if c.dataLen != 64 || c.addr == 0 || c.metadata != 0 || c.metadataLen != 0 || c.timeoutMS != 0 {
		t.Errorf("passthruCmd() = %+v: want data_len 64, an address, no metadata, default timeout", c)
	}
}

func TestSplitCopyFollowsMSSRLMSRCAndMCL(t *testing.T) {
	tests := []struct {
		name   string
		ns     Namespace
		blocks int64
		want   [][]int64 // blocks of each range, per command
	}{
		{"QEMU defaults: MCL = MSSRL, one range per command",
			Namespace{MSSRL: 128, MCL: 128, MSRC: 127}, 300,
			[][]int64{{128}, {128}, {44}}},
		{"rig: 16 ranges of MSSRL per MCL command",
			Namespace{MSSRL: 128, MCL: 2048, MSRC: 127}, 5000,
			[][]int64{
				{128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128},
				{128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128},
				{128, 128, 128, 128, 128, 128, 128, 8},
			}},
		{"MSRC 0: one range per command",
			Namespace{MSSRL: 100, MCL: 1000, MSRC: 0}, 250,
			[][]int64{{100}, {100}, {50}}},
		{"MSRC limits before MCL",
			Namespace{MSSRL: 10, MCL: 1000, MSRC: 2}, 70,
			[][]int64{{10, 10, 10}, {10, 10, 10}, {10}}},
		{"MCL not a multiple of MSSRL",
			Namespace{MSSRL: 128, MCL: 200, MSRC: 3}, 450,
			[][]int64{{128, 72}, {128, 72}, {50}}},
		{"MCL below MSSRL caps the range",
			Namespace{MSSRL: 1000, MCL: 300, MSRC: 7}, 700,
			[][]int64{{300}, {300}, {100}}},
		{"one block", Namespace{MSSRL: 128, MCL: 2048, MSRC: 127}, 1, [][]int64{{1}}},
		{"nothing", Namespace{MSSRL: 128, MCL: 2048, MSRC: 127}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds := splitCopy(1000, 50000, tt.blocks, shapeOf(tt.ns))
			var got [][]int64
			for _, c := range cmds {
				var r []int64
				for _, x := range c.ranges {
					r = append(r, x.blocks)
				}
				got = append(got, r)
			}
			if !slices.EqualFunc(got, tt.want, slices.Equal[[]int64]) {
				t.Errorf("ranges per command = %v, want %v", got, tt.want)
			}
			checkTiling(t, cmds, 1000, 50000, tt.blocks, shapeOf(tt.ns))
		})
	}
}

func TestSplitCopyInvariantsOnRandomShapes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		ns := Namespace{
			MSSRL: uint16(1 + r.IntN(300)),
			MCL:   uint32(1 + r.IntN(5000)),
			MSRC:  uint8(r.IntN(256)),
		}
		blocks := int64(r.IntN(20000))
		src, dst := r.Uint64N(1<<40), r.Uint64N(1<<40)
		cmds := splitCopy(src, dst, blocks, shapeOf(ns))
		if !checkTiling(t, cmds, src, dst, blocks, shapeOf(ns)) {
			t.Fatalf("namespace %+v, %d blocks", ns, blocks)
		}
	}
}

// checkTiling checks that cmds copy exactly blocks from src to dst in
// order, within the namespace's limits, and that every command but the
// last is full.
func checkTiling(t *testing.T, cmds []copyCmd, src, dst uint64, blocks int64, s copyShape) bool {
	t.Helper()
	ok := true
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		ok = false
	}
	var done int64
	for i, c := range cmds {
		if c.first != done || c.sdlba != dst+uint64(done) {
			fail("command %d: first %d sdlba %d; want %d, %d", i, c.first, c.sdlba, done, dst+uint64(done))
		}
		if len(c.ranges) == 0 || len(c.ranges) > s.maxRanges {
			fail("command %d has %d ranges; want 1..%d (MSRC+1)", i, len(c.ranges), s.maxRanges)
		}
		var sum int64
		for j, r := range c.ranges {
			if r.blocks < 1 || r.blocks > s.rangeBlocks || r.blocks > 1<<16 {
				fail("command %d range %d has %d blocks; want 1..%d (MSSRL)", i, j, r.blocks, s.rangeBlocks)
			}
			if r.slba != src+uint64(done+sum) {
				fail("command %d range %d starts at LBA %d, want %d", i, j, r.slba, src+uint64(done+sum))
			}
			sum += r.blocks
		}
		if sum != c.blocks || sum > s.cmdBlocks {
			fail("command %d carries %d blocks (says %d); want at most %d (MCL)", i, sum, c.blocks, s.cmdBlocks)
		}
		if i < len(cmds)-1 && sum != s.cmdBlocks {
			fail("command %d carries %d blocks; only the last may carry fewer than %d", i, sum, s.cmdBlocks)
		}
		done += sum
	}
	if done != blocks {
		fail("commands copy %d blocks, want %d", done, blocks)
	}
	return ok
}
