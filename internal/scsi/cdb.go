package scsi

import "encoding/binary"

// Command descriptor blocks. Section numbers are SPC-4 (T10/BSR INCITS
// 513, revision 37) unless they say SBC-3.

const (
	opInquiry            = 0x12 // SPC-4 6.6
	opExtendedCopy       = 0x83 // SPC-4 6.3 (LID1: service action 00h)
	opReceiveCopyResults = 0x84 // SPC-4 6.18
	opServiceActionIn16  = 0x9e // SBC-3 5.16 READ CAPACITY(16) is its SA 10h

	saReadCapacity16   = 0x10
	saOperatingParams  = 0x03 // RECEIVE COPY OPERATING PARAMETERS, SPC-4 6.18.4
	saExtendedCopyLID1 = 0x00

	vpdDeviceID = 0x83 // SPC-4 7.8.6 Device Identification VPD page
)

// inquiryCDB is INQUIRY (SPC-4 6.6.1, Table 142): byte 1 bit 0 EVPD, byte
// 2 PAGE CODE (0 for standard data, where EVPD must be 0), bytes 3-4
// ALLOCATION LENGTH, byte 5 CONTROL.
func inquiryCDB(evpd bool, page uint8, alloc uint16) []byte {
	cdb := make([]byte, 6)
	cdb[0] = opInquiry
	if evpd {
		cdb[1] = 0x01
		cdb[2] = page
	}
	binary.BigEndian.PutUint16(cdb[3:], alloc)
	return cdb
}

// readCapacity16CDB is READ CAPACITY(16) (SBC-3 5.16, Table 64): opcode
// 9Eh, byte 1 bits 4:0 SERVICE ACTION 10h, bytes 10-13 ALLOCATION LENGTH.
func readCapacity16CDB(alloc uint32) []byte {
	return cdb16(opServiceActionIn16, saReadCapacity16, alloc)
}

// cdb16 is the 16-byte CDB the three commands above and below share:
// OPERATION CODE, SERVICE ACTION in byte 1 bits 4:0, and a 4-byte length
// (ALLOCATION or PARAMETER LIST LENGTH) in bytes 10-13.
func cdb16(op, sa uint8, length uint32) []byte {
	cdb := make([]byte, 16)
	cdb[0] = op
	cdb[1] = sa
	binary.BigEndian.PutUint32(cdb[10:], length)
	return cdb
}

// operatingParamsCDB is RECEIVE COPY RESULTS with service action 03h,
// OPERATING PARAMETERS (SPC-4 6.18.1, Table 245): byte 1 bits 4:0 SERVICE
// ACTION, byte 2 LIST IDENTIFIER (ignored for this service action),
// bytes 10-13 ALLOCATION LENGTH.
func operatingParamsCDB(alloc uint32) []byte {
	return cdb16(opReceiveCopyResults, saOperatingParams, alloc)
}

// extendedCopyCDB is EXTENDED COPY(LID1) (SPC-4 6.3.1 and 6.4.1, Table
// 103 and 104): opcode 83h, byte 1 bits 4:0 SERVICE ACTION 00h, bytes
// 10-13 PARAMETER LIST LENGTH.
func extendedCopyCDB(paramLen uint32) []byte {
	return cdb16(opExtendedCopy, saExtendedCopyLID1, paramLen)
}

// Parameter list of EXTENDED COPY(LID1) (SPC-4 6.4.2, Table 105):
//
//	byte 0      LIST IDENTIFIER
//	byte 1      bit 5 STR, bit 4 NRCR (no receive copy results), bits 2:0 PRIORITY
//	bytes 2-3   CSCD DESCRIPTOR LIST LENGTH (n-15)
//	bytes 4-7   reserved
//	bytes 8-11  SEGMENT DESCRIPTOR LIST LENGTH
//	bytes 12-15 INLINE DATA LENGTH (0)
//	then the CSCD descriptors, the segment descriptors, the inline data.
//
// NRCR is set: blkcopy never asks RECEIVE COPY RESULTS about a list, and
// with NRCR set the copy manager need not keep the list identifier, so
// commands in flight at once may all carry list identifier 0 without
// "OPERATION IN PROGRESS" (6.4.2: a LIST IDENTIFIER already in use is an
// error only for lists whose results are held).
const (
	paramHeaderLen = 16
	cscdLen        = 32 // every CSCD descriptor (SPC-4 6.4.5.1)
	segment02Len   = 28 // block to block segment descriptor (SPC-4 6.4.6.5)
	flagNRCR       = 0x10

	cscdIdentification = 0xe4 // SPC-4 6.4.5.2
	segBlockToBlock    = 0x02 // SPC-4 6.4.6.5
)

// segment is one block-to-block segment: blocks blocks from src on the
// source CSCD to dst on the destination CSCD.
type segment struct {
	src, dst uint64 // logical block addresses on the LUs
	blocks   uint16 // the field is 16 bits: at most 65535 blocks
}

// cscd names one LU for the copy manager: its NAA designator as VPD page
// 83h gives it, and its logical block length.
type cscd struct {
	designator Designator
	blockLen   uint32
}

// identificationCSCD is the Identification CSCD descriptor (SPC-4 6.4.5.2,
// Table 112, with the common header of 6.4.5.1, Table 109):
//
//	byte 0      DESCRIPTOR TYPE CODE E4h
//	byte 1      bits 7:6 LU ID TYPE (0: LUN field), bit 5 NUL,
//	            bits 4:0 PERIPHERAL DEVICE TYPE (0: direct access block)
//	bytes 2-3   RELATIVE INITIATOR PORT IDENTIFIER (0: any port)
//	bytes 4-27  the designation descriptor as VPD page 83h has it: byte 4
//	            bits 3:0 CODE SET (the PROTOCOL IDENTIFIER bits 7:4 are
//	            reserved here, so cleared), byte 5 PIV/ASSOCIATION/
//	            DESIGNATOR TYPE, byte 6 reserved, byte 7 DESIGNATOR
//	            LENGTH, bytes 8.. DESIGNATOR (at most 20 bytes)
//	bytes 28-31 device type specific parameters for block devices
//	            (SPC-4 6.4.5.4, Table 119): byte 28 bit 2 PAD, bit 0 CAT
//	            (both 0), bytes 29-31 DISK BLOCK LENGTH
func (c cscd) encode(b []byte) {
	d := c.designator
	b[0] = cscdIdentification
	b[4] = d.CodeSet & 0x0f
	b[5] = d.Association<<4 | d.Type
	b[7] = byte(len(d.Value))
	copy(b[8:28], d.Value)
	b[29] = byte(c.blockLen >> 16)
	b[30] = byte(c.blockLen >> 8)
	b[31] = byte(c.blockLen)
}

// encode lays out segment s as a block device to block device segment
// descriptor (SPC-4 6.4.6.5, Table 137):
//
//	byte 0      DESCRIPTOR TYPE CODE 02h
//	byte 1      bit 1 DC (0: the count is in source blocks), bit 0 CAT
//	bytes 2-3   DESCRIPTOR LENGTH 0018h (24: the bytes after byte 3)
//	bytes 4-5   SOURCE CSCD DESCRIPTOR ID (index in the CSCD list)
//	bytes 6-7   DESTINATION CSCD DESCRIPTOR ID
//	bytes 8-9   reserved
//	bytes 10-11 BLOCK DEVICE NUMBER OF BLOCKS
//	bytes 12-19 SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS
//	bytes 20-27 DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS
//
// DC stays 0: both ends have the same block length (Open requires it), and
// LIO before Linux 4.10 read a DC=1 descriptor's block length from beyond
// its 28 bytes.
func (s segment) encode(b []byte, srcID, dstID uint16) {
	b[0] = segBlockToBlock
	binary.BigEndian.PutUint16(b[2:], segment02Len-4)
	binary.BigEndian.PutUint16(b[4:], srcID)
	binary.BigEndian.PutUint16(b[6:], dstID)
	binary.BigEndian.PutUint16(b[10:], s.blocks)
	binary.BigEndian.PutUint64(b[12:], s.src)
	binary.BigEndian.PutUint64(b[20:], s.dst)
}

// parameterList builds the EXTENDED COPY(LID1) parameter list for segs
// from the first CSCD of cscds to the last (one CSCD when source and
// destination are the same LU: both IDs 0).
func parameterList(cscds []cscd, segs []segment) []byte {
	cl, sl := len(cscds)*cscdLen, len(segs)*segment02Len
	b := make([]byte, paramHeaderLen+cl+sl)
	b[1] = flagNRCR
	binary.BigEndian.PutUint16(b[2:], uint16(cl))
	binary.BigEndian.PutUint32(b[8:], uint32(sl))
	for i, c := range cscds {
		c.encode(b[paramHeaderLen+i*cscdLen:])
	}
	dstID := uint16(len(cscds) - 1)
	for i, s := range segs {
		s.encode(b[paramHeaderLen+cl+i*segment02Len:], 0, dstID)
	}
	return b
}
