package scsi

import (
	"encoding/binary"
	"fmt"
)

// Sense is the part of a command's sense data blkcopy uses: what went wrong
// (sense key, additional sense code and qualifier) and, when the device
// gave one, the INFORMATION field (for a read or write, the first failing
// logical block).
type Sense struct {
	Key       uint8
	ASC, ASCQ uint8
	// Info is the INFORMATION field when InfoValid (fixed format: the VALID
	// bit; descriptor format: an information descriptor with VALID set).
	Info       uint64
	InfoValid  bool
	Deferred   bool // the error belongs to an earlier command
	Descriptor bool // descriptor format (72h/73h), else fixed (70h/71h)
}

// parseSense decodes sense data in either format (SPC-4 4.5). ok is false
// for no sense data or a response code that is neither.
//
// Fixed format (SPC-4 4.5.3, Table 50): byte 0 bit 7 VALID, bits 6:0
// RESPONSE CODE 70h (current) or 71h (deferred); byte 2 bits 3:0 SENSE
// KEY; bytes 3-6 INFORMATION; byte 7 ADDITIONAL SENSE LENGTH; bytes 8-11
// COMMAND-SPECIFIC INFORMATION; byte 12 ASC; byte 13 ASCQ.
//
// Descriptor format (SPC-4 4.5.2, Table 27): byte 0 RESPONSE CODE 72h or
// 73h; byte 1 bits 3:0 SENSE KEY; byte 2 ASC; byte 3 ASCQ; byte 7
// ADDITIONAL SENSE LENGTH; descriptors from byte 8, each a type byte, an
// ADDITIONAL LENGTH byte and that many more. The information descriptor
// (4.5.2.2, Table 29) is type 00h, additional length 0Ah, byte 2 bit 7
// VALID, bytes 4-11 INFORMATION.
func parseSense(b []byte) (s Sense, ok bool) {
	if len(b) < 1 {
		return s, false
	}
	switch b[0] & 0x7f {
	case 0x70, 0x71:
		s.Deferred = b[0]&0x7f == 0x71
		if len(b) > 2 {
			s.Key = b[2] & 0x0f
		}
		if len(b) >= 7 && b[0]&0x80 != 0 {
			s.Info, s.InfoValid = uint64(binary.BigEndian.Uint32(b[3:7])), true
		}
		// ASC and ASCQ are there only when the additional length
		// reaches them.
		if len(b) > 13 && int(b[7]) >= 6 {
			s.ASC, s.ASCQ = b[12], b[13]
		}
		return s, true
	case 0x72, 0x73:
		s.Descriptor = true
		s.Deferred = b[0]&0x7f == 0x73
		if len(b) < 4 {
			return s, len(b) > 1
		}
		s.Key, s.ASC, s.ASCQ = b[1]&0x0f, b[2], b[3]
		if len(b) < 8 {
			return s, true
		}
		end := min(len(b), 8+int(b[7]))
		for d := 8; d+2 <= end; d += 2 + int(b[d+1]) {
			if b[d] == 0x00 && d+12 <= end && b[d+2]&0x80 != 0 {
				s.Info, s.InfoValid = binary.BigEndian.Uint64(b[d+4:d+12]), true
			}
		}
		return s, true
	}
	return s, false
}

// Sense keys (SPC-4 4.5.6, Table 48).
const (
	keyNoSense        = 0x0
	keyRecoveredError = 0x1
	keyNotReady       = 0x2
	keyMediumError    = 0x3
	keyHardwareError  = 0x4
	keyIllegalRequest = 0x5
	keyUnitAttention  = 0x6
	keyDataProtect    = 0x7
	keyCopyAborted    = 0xa
	keyAbortedCommand = 0xb
)

var keyWords = [16]string{
	"no sense", "recovered error", "not ready", "medium error",
	"hardware error", "illegal request", "unit attention", "data protect",
	"blank check", "vendor specific", "copy aborted", "aborted command",
	"reserved sense key", "volume overflow", "miscompare", "completed",
}

// ascWords are the additional sense codes a copy meets, in the words of
// SPC-4 Annex D (Table D.1), lower case. Key: ASC<<8 | ASCQ.
var ascWords = map[uint16]string{
	0x0000: "no additional sense information",
	0x0400: "logical unit not ready, cause not reportable",
	0x0401: "logical unit is in process of becoming ready",
	0x0402: "logical unit not ready, initializing command required",
	0x0403: "logical unit not ready, manual intervention required",
	0x0801: "logical unit communication time-out",
	0x0c00: "write error",
	0x0c02: "write error - auto reallocation failed",
	0x0d00: "error detected by third party temporary initiator",
	0x0d01: "third party device failure",
	0x0d02: "copy target device not reachable",
	0x0d03: "incorrect copy target device type",
	0x0d04: "copy target device data underrun",
	0x0d05: "copy target device data overrun",
	0x1000: "id CRC or ECC error",
	0x1001: "logical block guard check failed",
	0x1100: "unrecovered read error",
	0x1a00: "parameter list length error",
	0x2000: "invalid command operation code",
	0x2100: "logical block address out of range",
	0x2400: "invalid field in CDB",
	0x2500: "logical unit not supported",
	0x2600: "invalid field in parameter list",
	0x2601: "parameter not supported",
	0x2602: "parameter value invalid",
	0x2606: "too many target descriptors",
	0x2607: "unsupported target descriptor type code",
	0x2608: "too many segment descriptors",
	0x2609: "unsupported segment descriptor type code",
	0x260a: "unexpected inexact segment",
	0x260b: "inline data length exceeded",
	0x260c: "invalid operation for copy source or destination",
	0x260d: "copy segment granularity violation",
	0x2700: "write protected",
	0x2900: "power on, reset, or bus device reset occurred",
	0x2a01: "mode parameters changed",
	0x2a09: "capacity data has changed",
	0x2c00: "command sequence error",
	0x2f00: "commands cleared by another initiator",
	0x3a00: "medium not present",
	0x3e02: "timeout on logical unit",
	0x3f0e: "reported LUNs data has changed",
	0x4400: "internal target failure",
	0x4700: "SCSI parity error",
	0x4b00: "data phase error",
	0x5500: "system resource failure",
}

func (s Sense) code() uint16 { return uint16(s.ASC)<<8 | uint16(s.ASCQ) }

// Words says what happened: "copy aborted: copy target device not
// reachable".
func (s Sense) Words() string {
	w := keyWords[s.Key&0xf]
	if a, ok := ascWords[s.code()]; ok {
		w += ": " + a
	} else if s.code() != 0 {
		w += ": additional sense code without a name here"
	}
	if s.Deferred {
		w += " (deferred: reported for an earlier command)"
	}
	return w
}

// String is the words with the numbers a vendor's documentation or
// sg_decode_sense would use.
func (s Sense) String() string {
	return fmt.Sprintf("%s (sense key %Xh, ASC/ASCQ %02Xh/%02Xh)", s.Words(), s.Key, s.ASC, s.ASCQ)
}

// verdict is what a failed command means for the copy.
type verdict int

const (
	// real: the data or the device is in trouble; stop the copy.
	real verdict = iota
	// unavailable: the copy manager will not do this copy (it lacks the
	// command, a descriptor, or cannot reach a LU); nothing or only a
	// harmless part was copied, so the host copies from the same byte.
	unavailable
	// retry: a UNIT ATTENTION reports an event (LUNs changed, a reset,
	// capacity changed) and the command was not run; send it once more.
	retry
)

// unavailableSense lists, by sense key, the ASC/ASCQ that mean "the copy
// manager does not do this copy here". Anything else, above all medium
// and hardware errors and data protection, is real: the host copy would
// meet the same medium or the same protection, and the device's report is
// the most accurate the user will get.
var unavailableSense = map[uint8]map[uint16]bool{
	keyIllegalRequest: {
		0x2000: true, // no EXTENDED COPY (or RECEIVE COPY RESULTS) at all
		0x2400: true, // a CDB field it does not take: LID4-only copy managers
		0x1a00: true, // parameter list longer than it takes
		0x2500: true,
		// Descriptor counts and types beyond what it implements: its
		// operating parameters differ from what it said (6.4.3.5).
		0x2600: true, 0x2601: true, 0x2602: true, 0x2606: true, 0x2607: true,
		0x2608: true, 0x2609: true, 0x260b: true, 0x260c: true, 0x260d: true,
	},
	keyCopyAborted: {
		// The copy manager cannot reach a LU the list names (6.4.3.3):
		// LIO answers this for a designator of a LU it does not export
		// alongside the one addressed, and for a LU without 3PC.
		0x0d02: true,
		0x0d03: true,
		0x2600: true, 0x2606: true, 0x2607: true, 0x2608: true, 0x2609: true,
	},
}

func (s Sense) verdict() verdict {
	if s.Key == keyUnitAttention {
		return retry
	}
	if unavailableSense[s.Key][s.code()] {
		return unavailable
	}
	return real
}
