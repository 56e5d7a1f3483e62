package scsi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Designator is one designation descriptor of the Device Identification
// VPD page (SPC-4 7.8.6.1, Table 589).
type Designator struct {
	CodeSet     uint8 // 1 binary, 2 ASCII, 3 UTF-8
	Association uint8 // 0 the LU, 1 the target port, 2 the target device
	Type        uint8 // 1 T10 vendor ID, 2 EUI-64, 3 NAA, 8 SCSI name, ...
	Value       []byte
}

// String is the designator as people see it in sg_vpd and lsscsi: hex for
// binary designators ("6001405dc774a791ed34b7a89b104853").
func (d Designator) String() string {
	if d.CodeSet == 1 {
		return hex.EncodeToString(d.Value)
	}
	return strings.TrimSpace(string(d.Value))
}

// Info is what a SCSI LU says about third-party copy.
type Info struct {
	Vendor, Product string
	// ThirdPartyCopy is standard INQUIRY byte 5 bit 3 (3PC): the LU
	// implements EXTENDED COPY.
	ThirdPartyCopy bool
	// NAA is the LU's NAA designator (VPD 83h, association 0, type 3,
	// binary), which names it in a CSCD descriptor; nil when it has none.
	NAA       *Designator
	Blocks    uint64 // READ CAPACITY(16): last LBA + 1
	BlockSize int64
	// Params are the operating parameters (RECEIVE COPY RESULTS, service
	// action 03h); nil when the LU does not answer it (ParamsErr says
	// why).
	Params    *OperatingParams
	ParamsErr error
}

// OperatingParams is the RECEIVE COPY OPERATING PARAMETERS data (SPC-4
// 6.18.4, Table 250): the limits one EXTENDED COPY(LID1) must keep.
type OperatingParams struct {
	MaxCSCDs            int    // bytes 8-9 MAXIMUM CSCD DESCRIPTOR COUNT
	MaxSegments         int    // bytes 10-11 MAXIMUM SEGMENT DESCRIPTOR COUNT
	MaxListLen          uint32 // bytes 12-15 MAXIMUM DESCRIPTOR LIST LENGTH
	MaxSegmentLen       uint32 // bytes 16-19 MAXIMUM SEGMENT LENGTH, bytes
	MaxConcurrentCopies int    // byte 36 MAXIMUM CONCURRENT COPIES
	// Descriptors are the implemented descriptor type codes (bytes 44..,
	// IMPLEMENTED DESCRIPTOR LIST LENGTH in byte 43).
	Descriptors []uint8
}

// Implements reports whether the copy manager lists descriptor type code
// c.
func (p *OperatingParams) Implements(c uint8) bool { return slices.Contains(p.Descriptors, c) }

// parseOperatingParams decodes the operating parameters data.
func parseOperatingParams(b []byte) (*OperatingParams, error) {
	if len(b) < 44 {
		return nil, fmt.Errorf("operating parameters: %d bytes, want at least 44", len(b))
	}
	p := &OperatingParams{
		MaxCSCDs:            int(binary.BigEndian.Uint16(b[8:])),
		MaxSegments:         int(binary.BigEndian.Uint16(b[10:])),
		MaxListLen:          binary.BigEndian.Uint32(b[12:]),
		MaxSegmentLen:       binary.BigEndian.Uint32(b[16:]),
		MaxConcurrentCopies: int(b[36]),
	}
	n := int(b[43])
	if 44+n > len(b) {
		n = len(b) - 44
	}
	p.Descriptors = slices.Clone(b[44 : 44+n])
	return p, nil
}

// parseDesignators decodes the Device Identification VPD page (SPC-4
// 7.8.6.1, Table 588: byte 1 PAGE CODE 83h, bytes 2-3 PAGE LENGTH, then
// designation descriptors; Table 589: byte 0 bits 3:0 CODE SET, byte 1
// bits 5:4 ASSOCIATION and bits 3:0 DESIGNATOR TYPE, byte 3 DESIGNATOR
// LENGTH, then the designator).
func parseDesignators(page []byte) ([]Designator, error) {
	if len(page) < 4 || page[1] != vpdDeviceID {
		return nil, errors.New("not a Device Identification VPD page")
	}
	end := min(len(page), 4+int(binary.BigEndian.Uint16(page[2:])))
	var ds []Designator
	for off := 4; off+4 <= end; {
		l := int(page[off+3])
		if off+4+l > end {
			return ds, fmt.Errorf("designator at byte %d runs past the page", off)
		}
		ds = append(ds, Designator{
			CodeSet:     page[off] & 0x0f,
			Association: page[off+1] >> 4 & 3,
			Type:        page[off+1] & 0x0f,
			Value:       slices.Clone(page[off+4 : off+4+l]),
		})
		off += 4 + l
	}
	return ds, nil
}

// naaOf picks the LU's NAA designator: association 0 (the LU itself, not a
// port), type 3, binary; the longest when there are several (NAA 6, 16
// bytes, is what LIO matches; arrays also give NAA 5, 8 bytes). A CSCD
// descriptor holds at most 20 bytes of designator.
func naaOf(ds []Designator) *Designator {
	var best *Designator
	for i := range ds {
		d := &ds[i]
		if d.Association != 0 || d.Type != 3 || d.CodeSet != 1 || len(d.Value) == 0 || len(d.Value) > 20 {
			continue
		}
		if best == nil || len(d.Value) > len(best.Value) {
			best = d
		}
	}
	return best
}

// Identify asks the LU behind f (an sd disk or a partition of one) about
// third-party copy: standard INQUIRY, VPD page 83h, READ CAPACITY(16) and
// the copy operating parameters. An error wrapping
// copypath.ErrUnavailable says the device takes no SCSI commands here; a
// LU that answers but cannot copy is described in Info, not an error.
func Identify(f *os.File) (*Info, error) {
	std, err := inquiry(f, false, 0, 96)
	if err != nil {
		return nil, err
	}
	if len(std) < 36 {
		return nil, fmt.Errorf("INQUIRY %s: %d bytes of standard data, want 36", f.Name(), len(std))
	}
	info := &Info{
		Vendor:         strings.TrimSpace(string(std[8:16])),
		Product:        strings.TrimSpace(string(std[16:32])),
		ThirdPartyCopy: std[5]&0x08 != 0,
	}
	if page, err := inquiry(f, true, vpdDeviceID, 512); err == nil {
		if ds, err := parseDesignators(page); err == nil || len(ds) > 0 {
			info.NAA = naaOf(ds)
		}
	} else if !isCommandError(err) {
		return nil, err
	}
	capData, err := run(f, "READ CAPACITY(16)", readCapacity16CDB(32), dirIn, 32)
	if err != nil {
		return nil, err
	}
	if len(capData) < 12 {
		return nil, fmt.Errorf("READ CAPACITY(16) %s: %d bytes, want 12", f.Name(), len(capData))
	}
	info.Blocks = binary.BigEndian.Uint64(capData[0:8]) + 1
	info.BlockSize = int64(binary.BigEndian.Uint32(capData[8:12]))
	if info.ThirdPartyCopy {
		data, err := run(f, "RECEIVE COPY RESULTS (operating parameters)", operatingParamsCDB(1024), dirIn, 1024)
		switch {
		case err == nil:
			info.Params, info.ParamsErr = parseOperatingParams(data)
		case isCommandError(err):
			info.ParamsErr = err
		default:
			return nil, err
		}
	}
	return info, nil
}

// inquiry sends INQUIRY and returns the data the device sent.
func inquiry(f *os.File, evpd bool, page uint8, alloc int) ([]byte, error) {
	op := "INQUIRY"
	if evpd {
		op = fmt.Sprintf("INQUIRY (VPD page %02Xh)", page)
	}
	return run(f, op, inquiryCDB(evpd, page, uint16(alloc)), dirIn, alloc)
}

// run sends a data-in command (or none) and returns the bytes
// transferred, retrying once after a UNIT ATTENTION. Failures are *Error.
func run(f *os.File, op string, cdb []byte, dir direction, alloc int) ([]byte, error) {
	buf := make([]byte, alloc)
	for attempt := 0; ; attempt++ {
		resp, err := execute(f, &request{cdb: cdb, dir: dir, data: buf})
		e := newError(op, f.Name(), resp, err)
		if e == nil {
			n := max(0, min(alloc-resp.resid, alloc))
			return buf[:n], nil
		}
		if e.verdict() == retry && attempt == 0 {
			continue
		}
		return nil, e.classified()
	}
}

// isCommandError reports whether err is the device's answer (a status or
// sense), as opposed to the ioctl failing.
func isCommandError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Err == nil
}
