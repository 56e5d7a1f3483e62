package scsi

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"unsafe"
)

// unhex reads hex with spaces and newlines for readability.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The CDBs, byte for byte, as the tables of SPC-4 and SBC-3 lay them out.
func TestCDBsMatchTheSpec(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		// SPC-4 6.6.1 Table 142: EVPD 0, page 0, allocation 96 (0060h).
		{"standard INQUIRY", inquiryCDB(false, 0, 96), "12 00 00 0060 00"},
		// EVPD 1 in byte 1 bit 0, page 83h in byte 2.
		{"INQUIRY VPD 83h", inquiryCDB(true, 0x83, 512), "12 01 83 0200 00"},
		// SBC-3 5.16 Table 64: 9Eh, SA 10h, allocation in bytes 10-13.
		{"READ CAPACITY(16)", readCapacity16CDB(32), "9e 10 0000000000000000 00000020 00 00"},
		// SPC-4 6.18.1 Table 245: 84h, SA 03h, allocation in bytes 10-13.
		{"RECEIVE COPY OPERATING PARAMETERS", operatingParamsCDB(1024), "84 03 00 00000000000000 00000400 00 00"},
		// SPC-4 6.3.1 Table 103: 83h, SA 00h (LID1), parameter list
		// length in bytes 10-13.
		{"EXTENDED COPY(LID1)", extendedCopyCDB(76), "83 00 0000000000000000 0000004c 00 00"},
	}
	for _, tt := range tests {
		if want := unhex(t, tt.want); !bytes.Equal(tt.got, want) {
			t.Errorf("%s: CDB % x, want % x", tt.name, tt.got, want)
		}
	}
}

var (
	naaA = Designator{CodeSet: 1, Association: 0, Type: 3, Value: []byte{0x60, 0x01, 0x40, 0x5d, 0xc7, 0x74, 0xa7, 0x91, 0xed, 0x34, 0xb7, 0xa8, 0x9b, 0x10, 0x48, 0x53}}
	naaB = Designator{CodeSet: 1, Association: 0, Type: 3, Value: []byte{0x60, 0x01, 0x40, 0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc}}
)

// The parameter list of a copy within one LU: header (SPC-4 6.4.2 Table
// 105), one identification CSCD (6.4.5.2 Table 112 + 6.4.5.4 Table 119)
// and one block-to-block segment (6.4.6.5 Table 137), worked out by hand.
func TestParameterListWithinOneLU(t *testing.T) {
	got := parameterList([]cscd{{designator: naaA, blockLen: 512}},
		[]segment{{src: 0x1000, dst: 0x2_0000_0000, blocks: 0xffff}})
	want := unhex(t, `
		00 10 0020 00000000 0000001c 00000000
		e4 00 0000 01 03 00 10 6001405dc774a791ed34b7a89b104853 00000000 00 000200
		02 00 0018 0000 0000 0000 ffff 0000000000001000 0000000200000000`)
	if !bytes.Equal(got, want) {
		t.Errorf("parameter list\n got % x\nwant % x", got, want)
	}
}

// Between two LUs: two CSCDs, source first; the segment names CSCD 0 as
// source and CSCD 1 as destination; two segments follow one another.
func TestParameterListBetweenTwoLUs(t *testing.T) {
	got := parameterList([]cscd{{designator: naaA, blockLen: 4096}, {designator: naaB, blockLen: 4096}},
		[]segment{{src: 8, dst: 16, blocks: 2}, {src: 10, dst: 18, blocks: 1}})
	want := unhex(t, `
		00 10 0040 00000000 00000038 00000000
		e4 00 0000 01 03 00 10 6001405dc774a791ed34b7a89b104853 00000000 00 001000
		e4 00 0000 01 03 00 10 6001405a112233445566778899aabbcc 00000000 00 001000
		02 00 0018 0000 0001 0000 0002 0000000000000008 0000000000000010
		02 00 0018 0000 0001 0000 0001 000000000000000a 0000000000000012`)
	if !bytes.Equal(got, want) {
		t.Errorf("parameter list\n got % x\nwant % x", got, want)
	}
}

// An 8-byte NAA 5 designator (arrays have them) is padded to the 20 bytes
// of the DESIGNATOR field; the block length still sits in bytes 29-31.
func TestCSCDPadsShortDesignators(t *testing.T) {
	b := make([]byte, cscdLen)
	cscd{designator: Designator{CodeSet: 1, Type: 3, Value: []byte{0x50, 1, 2, 3, 4, 5, 6, 7}}, blockLen: 512}.encode(b)
	want := unhex(t, "e4 00 0000 01 03 00 08 5001020304050607 000000000000000000000000 00 000200")
	if !bytes.Equal(b, want) {
		t.Errorf("CSCD\n got % x\nwant % x", b, want)
	}
}

// struct sg_io_hdr's layout on 64-bit Linux (<scsi/sg.h>): the offsets the
// kernel reads the pointers and writes the status at.
func TestSGIOHeaderLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("offsets checked for 64-bit Linux only")
	}
	var h sgIOHdr
	offsets := []struct {
		name      string
		got, want uintptr
	}{
		{"dxfer_len", unsafe.Offsetof(h.dxferLen), 12},
		{"dxferp", unsafe.Offsetof(h.dxferp), 16},
		{"cmdp", unsafe.Offsetof(h.cmdp), 24},
		{"sbp", unsafe.Offsetof(h.sbp), 32},
		{"timeout", unsafe.Offsetof(h.timeout), 40},
		{"usr_ptr", unsafe.Offsetof(h.usrPtr), 56},
		{"status", unsafe.Offsetof(h.status), 64},
		{"sb_len_wr", unsafe.Offsetof(h.sbLenWr), 67},
		{"host_status", unsafe.Offsetof(h.hostStatus), 68},
		{"resid", unsafe.Offsetof(h.resid), 72},
		{"info", unsafe.Offsetof(h.info), 80},
		{"sizeof", unsafe.Sizeof(h), 88},
	}
	for _, o := range offsets {
		if o.got != o.want {
			t.Errorf("%s at %d, want %d", o.name, o.got, o.want)
		}
	}
}

// A copy is cut into segments of at most the shape's blocks, commands of
// at most its segments, tiling the range in order.
func TestSplitCopyTilesTheRange(t *testing.T) {
	sh := copyShape{segBlocks: 65535, segsPerCmd: 1}
	cmds := splitCopy(100, 1_000_000, 2*65535+7, sh)
	want := []segment{{100, 1_000_000, 65535}, {100 + 65535, 1_000_000 + 65535, 65535}, {100 + 2*65535, 1_000_000 + 2*65535, 7}}
	if len(cmds) != 3 {
		t.Fatalf("%d commands, want 3", len(cmds))
	}
	for i, c := range cmds {
		if len(c.segs) != 1 || c.segs[0] != want[i] || c.blocks != int64(want[i].blocks) {
			t.Errorf("command %d: %+v, want one segment %+v", i, c, want[i])
		}
	}
	sh = copyShape{segBlocks: 10, segsPerCmd: 3}
	cmds = splitCopy(0, 50, 45, sh)
	if len(cmds) != 2 || len(cmds[0].segs) != 3 || cmds[0].blocks != 30 || len(cmds[1].segs) != 2 || cmds[1].blocks != 15 || cmds[1].segs[1] != (segment{40, 90, 5}) {
		t.Errorf("splitCopy in 3-segment commands: %+v", cmds)
	}
}
