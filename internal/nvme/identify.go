package nvme

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
)

// Identify (admin opcode 06h): CDW10 bits 7:0 CNS, CDW11 bits 31:24 CSI;
// the answer is one 4096-byte data structure (NVMe Base Specification 2.0,
// "Identify command").
const (
	opIdentify   = 0x06
	identifySize = 4096

	cnsNamespace    = 0x00 // Identify Namespace for the NSID (NVM command set)
	cnsController   = 0x01 // Identify Controller
	cnsCSINamespace = 0x05 // I/O Command Set specific Identify Namespace
	csiNVM          = 0x00
)

// Identify Controller data structure byte offsets (NVMe Base Specification
// 2.0, "Identify Controller Data Structure"; libnvme src/nvme/types.h
// struct nvme_id_ctrl and the kernel's include/linux/nvme.h agree).
const (
	idCtrlSN     = 4   // 23:04 Serial Number, ASCII, space padded
	idCtrlMN     = 24  // 63:24 Model Number, ASCII, space padded
	idCtrlFR     = 64  // 71:64 Firmware Revision, ASCII
	idCtrlCTRATT = 96  // 99:96 Controller Attributes; bit 15 ELBAS
	idCtrlONCS   = 520 // 521:520 Optional NVM Command Support; bit 8 Copy
	// 535:534 Optional Copy Formats Supported (Copy Descriptor Formats
	// Supported, CDFS, in Base 2.1): bit n set = Copy Descriptor Format nh
	// supported, bit 0 included. nvme-cli prints bits 0-3 as "Controller
	// Copy Format nh Supported"; QEMU sets bits 0 and 1.
	idCtrlOCFS = 534

	ctrattELBAS = 1 << 15 // Extended LBA Formats Supported
	oncsCopy    = 1 << 8
)

// Identify Namespace (CNS 00h, NVM command set) byte offsets (NVM Command
// Set Specification 1.2, Figure 114 "Identify Namespace Data Structure, NVM
// Command Set", and Figure 115 "LBA Format Data Structure"; libnvme struct
// nvme_id_ns, the kernel's struct nvme_id_ns).
const (
	idNsNSZE  = 0  // 07:00 Namespace Size, in logical blocks
	idNsNLBAF = 25 // Number of LBA Formats, 0-based
	// Formatted LBA Size: bits 3:0 the format index (low bits), bit 4
	// metadata at the end of each block, bits 6:5 the index's high bits
	// when there are more than 16 formats.
	idNsFLBAS = 26
	// End-to-end Data Protection Type Settings: bits 2:0 the protection
	// information type, 0 = none.
	idNsDPS   = 29
	idNsMSSRL = 74 // 75:74 Maximum Single Source Range Length, blocks
	idNsMCL   = 76 // 79:76 Maximum Copy Length, blocks
	idNsMSRC  = 80 // Maximum Source Range Count, 0-based
	// 383:128 LBA Formats 0..63, 4 bytes each: bits 15:0 MS (metadata
	// bytes per block), 23:16 LBADS (log2 of the data bytes), 25:24 RP.
	idNsLBAF = 128

	maxLBAFormats = 64
)

// I/O Command Set specific Identify Namespace for the NVM command set (CNS
// 05h, CSI 00h; NVM Command Set 1.2 "I/O Command Set Specific Identify
// Namespace Data Structure"; libnvme struct nvme_nvm_id_ns): the Extended
// LBA Formats, valid when the controller sets CTRATT.ELBAS.
//
// 267:12 ELBAF 0..63, 4 bytes each: bits 6:0 STS (storage tag size), bits
// 8:7 PIF (protection information format: 0 = 16b guard, 1 = 32b guard, 2 =
// 64b guard).
const idNVMNsELBAF = 12

// Protection information formats (PIF).
const (
	PIF16 = 0 // 16b Guard: Copy Descriptor Format 0h
	PIF32 = 1 // 32b Guard: Copy Descriptor Format 1h
	PIF64 = 2 // 64b Guard: Copy Descriptor Format 1h
)

// Controller is what Identify Controller says that blkcopy uses.
type Controller struct {
	Model, Serial, Firmware string
	CTRATT                  uint32
	ONCS                    uint16
	OCFS                    uint16 // copy descriptor formats, bit n = format nh
}

// Copy reports whether the controller supports the Copy command (ONCS bit
// 8).
func (c Controller) Copy() bool { return c.ONCS&oncsCopy != 0 }

// Formats lists the Copy descriptor formats the controller offers ("0h",
// "1h", ...).
func (c Controller) Formats() []string {
	var f []string
	for i := range 16 {
		if c.OCFS&(1<<i) != 0 {
			f = append(f, fmt.Sprintf("%Xh", i))
		}
	}
	return f
}

// Namespace is what Identify Namespace says that blkcopy uses.
type Namespace struct {
	ID           uint32
	Blocks       uint64 // NSZE
	LBAFormat    int    // index of the formatted LBA format
	LBASize      int64  // bytes of data per logical block, 2^LBADS
	MetadataSize int    // MS of the formatted LBA format
	ExtendedLBA  bool   // metadata travels at the end of each block
	PIType       uint8  // DPS bits 2:0; 0 = no protection information
	PIFormat     uint8  // PIF16, PIF32 or PIF64 (PIF16 without ELBAS)
	MSSRL        uint16 // most blocks in one source range
	MCL          uint32 // most blocks in one Copy command
	MSRC         uint8  // most source ranges in one command, 0-based
}

// RangeBlocks is the most blocks one source range carries: MSSRL, and
// never more than one whole command may carry.
func (n Namespace) RangeBlocks() int64 { return min(int64(n.MSSRL), int64(n.MCL)) }

// MaxRanges is the most source ranges in one Copy command (MSRC + 1).
func (n Namespace) MaxRanges() int { return int(n.MSRC) + 1 }

// CommandBlocks is the most blocks one Copy command carries: MCL, and no
// more than MaxRanges ranges of RangeBlocks each.
func (n Namespace) CommandBlocks() int64 {
	return min(int64(n.MCL), int64(n.MaxRanges())*n.RangeBlocks())
}

// Info is what blkcopy knows about a namespace and its controller.
type Info struct {
	Controller Controller
	Namespace  Namespace
}

// Identify asks the namespace behind f (its block device, or one of its
// partitions) and its controller about Copy: NVME_IOCTL_ID, Identify
// Controller, Identify Namespace and, where the controller has extended LBA
// formats, the NVM command set's Identify Namespace. It needs CAP_SYS_ADMIN.
// An error for which copypath.IsUnavailable is true says in words why
// passthrough is not possible (not NVMe, no permission, ...); any other is
// a real failure of the device.
func Identify(f *os.File) (*Info, error) {
	nsid, err := namespaceID(f)
	if err != nil {
		return nil, namespaceIDError(f.Name(), err)
	}
	info := &Info{}
	buf := alignedBuffer(identifySize)
	if err := identify(f, "Identify Controller", 0, cnsController, csiNVM, buf); err != nil {
		return nil, err
	}
	info.Controller = parseController(buf)

	clear(buf)
	if err := identify(f, "Identify Namespace", nsid, cnsNamespace, csiNVM, buf); err != nil {
		return nil, err
	}
	ns, err := parseNamespace(buf)
	if err != nil {
		return nil, copypath.Unavailablef("%s: namespace %d: %v", f.Name(), nsid, err)
	}
	ns.ID = nsid
	if info.Controller.CTRATT&ctrattELBAS != 0 {
		clear(buf)
		if err := identify(f, "Identify Namespace (NVM command set)", nsid, cnsCSINamespace, csiNVM, buf); err != nil {
			return nil, err
		}
		ns.PIFormat = parsePIFormat(buf, ns.LBAFormat)
	}
	info.Namespace = ns
	return info, nil
}

func identify(f *os.File, op string, nsid uint32, cns, csi uint8, buf []byte) error {
	c := &command{
		admin:  true,
		opcode: opIdentify,
		nsid:   nsid,
		cdw10:  uint32(cns),
		cdw11:  uint32(csi) << 24,
		data:   buf,
	}
	_, status, err := passthru(f, c)
	if err != nil {
		return ioctlError(f.Name(), op, err)
	}
	if status != 0 {
		e := &Error{Op: op, Path: f.Name(), Offset: -1, Status: status}
		if status.Unsupported() {
			return copypath.Unavailable(e)
		}
		return e
	}
	return nil
}

// ioctlError wraps a failed passthrough ioctl: unavailable with the reason
// in words where the errno says passthrough is not possible here, a real
// error otherwise.
func ioctlError(path, op string, err error) error {
	e := &Error{Op: op, Path: path, Offset: -1, Err: err}
	if why := errnoUnavailable(err); why != "" {
		return copypath.Unavailable(fmt.Errorf("%s (%w)", why, e))
	}
	return e
}

// namespaceIDError wraps a failed NVME_IOCTL_ID. Drivers other than NVMe
// answer it with ENOTTY, or EINVAL (the loop driver): not an NVMe
// namespace.
func namespaceIDError(path string, err error) error {
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return copypath.Unavailable(fmt.Errorf("%s is not an NVMe namespace (%w)", path, &Error{Op: "get NVMe namespace ID", Path: path, Offset: -1, Err: err}))
	}
	return ioctlError(path, "get NVMe namespace ID", err)
}

func parseController(b []byte) Controller {
	return Controller{
		Serial:   ascii(b[idCtrlSN:idCtrlMN]),
		Model:    ascii(b[idCtrlMN:idCtrlFR]),
		Firmware: ascii(b[idCtrlFR : idCtrlFR+8]),
		CTRATT:   binary.LittleEndian.Uint32(b[idCtrlCTRATT:]),
		ONCS:     binary.LittleEndian.Uint16(b[idCtrlONCS:]),
		OCFS:     binary.LittleEndian.Uint16(b[idCtrlOCFS:]),
	}
}

var errBadLBAFormat = errors.New("invalid formatted LBA format")

func parseNamespace(b []byte) (Namespace, error) {
	flbas := b[idNsFLBAS]
	// FLBAS bits 6:5 are bits 5:4 of the index (zero, being reserved,
	// where there are at most 16 formats); libnvme's
	// nvme_id_ns_flbas_to_lbaf_inuse combines them the same way.
	idx := int(flbas&0x0f) | int(flbas>>5&3)<<4
	if idx > int(b[idNsNLBAF]) || idx >= maxLBAFormats {
		return Namespace{}, fmt.Errorf("%w %d of %d", errBadLBAFormat, idx, int(b[idNsNLBAF])+1)
	}
	lbaf := binary.LittleEndian.Uint32(b[idNsLBAF+4*idx:])
	lbads := lbaf >> 16 & 0xff
	// LBADS below 9 (512 bytes) is not a valid data size, and zero marks
	// an unused format; 64 KiB is already beyond what the kernel formats.
	if lbads < 9 || lbads > 16 {
		return Namespace{}, fmt.Errorf("%w: LBA data size 2^%d", errBadLBAFormat, lbads)
	}
	return Namespace{
		Blocks:       binary.LittleEndian.Uint64(b[idNsNSZE:]),
		LBAFormat:    idx,
		LBASize:      1 << lbads,
		MetadataSize: int(lbaf & 0xffff),
		ExtendedLBA:  flbas&0x10 != 0,
		PIType:       b[idNsDPS] & 7,
		MSSRL:        binary.LittleEndian.Uint16(b[idNsMSSRL:]),
		MCL:          binary.LittleEndian.Uint32(b[idNsMCL:]),
		MSRC:         b[idNsMSRC],
	}, nil
}

func parsePIFormat(b []byte, lbaFormat int) uint8 {
	elbaf := binary.LittleEndian.Uint32(b[idNVMNsELBAF+4*lbaFormat:])
	return uint8(elbaf >> 7 & 3)
}

func ascii(b []byte) string {
	return strings.TrimRight(strings.TrimSpace(string(b)), "\x00")
}

// CopyFormat decides whether blkcopy can send Copy to this namespace and
// with which source range descriptor format. A nil error comes with the
// format; otherwise the error is copypath.Unavailable with the reason.
//
// The format follows from the namespace's protection information format
// (NVM Command Set 1.2, 3.3.2, Figure 38: format 0h for 16b guard, 1h for
// 32b and 64b guard; any other combination "shall be aborted with a status
// code of Invalid Namespace or Format", and QEMU checks the PIF even where
// protection information is off). Formats 2h and 3h name a source
// namespace and could copy between namespaces, but need the host to enable
// them in the Host Behavior Support feature first: blkcopy does not.
func (i *Info) CopyFormat() (uint8, error) {
	c, n := i.Controller, i.Namespace
	switch {
	case !c.Copy():
		return 0, copypath.Unavailablef("controller %s does not support the NVMe Copy command (ONCS bit 8 clear)", c.name())
	case n.MSSRL == 0:
		return 0, copypath.Unavailablef("namespace %d reports no Copy limits (MSSRL 0)", n.ID)
	case n.MCL == 0:
		return 0, copypath.Unavailablef("namespace %d reports no Copy limits (MCL 0)", n.ID)
	case n.PIType != 0:
		// Without PRACT the device copies each block's protection
		// information as it is, and type 1 and 2 reference tags name the
		// source LBA: the destination would then fail its reference tag
		// checks on every later read. Regenerating it (PRACT) would drop
		// the application tags. Neither is a faithful copy.
		return 0, copypath.Unavailablef("namespace %d is formatted with end-to-end protection information (type %d); blkcopy does not copy it by NVMe Copy", n.ID, n.PIType)
	}
	format := uint8(0)
	if n.PIFormat != PIF16 {
		format = 1
	}
	// A controller that sets ONCS bit 8 but no OCFS bit at all predates
	// the field's use (or forgot it): format 0h is the original Copy
	// format, and the kernel's own copy offload series sends it without
	// looking at OCFS.
	if c.OCFS&(1<<format) == 0 && (c.OCFS != 0 || format != 0) {
		return 0, copypath.Unavailablef("controller %s does not offer Copy descriptor format %Xh, which namespace %d needs (its %s protection information format)", c.name(), format, n.ID, pifWords(n.PIFormat))
	}
	return format, nil
}

func (c Controller) name() string {
	if c.Model == "" {
		return "(no model number)"
	}
	return fmt.Sprintf("%q", c.Model)
}

func pifWords(pif uint8) string {
	switch pif {
	case PIF16:
		return "16b guard"
	case PIF32:
		return "32b guard"
	case PIF64:
		return "64b guard"
	}
	return fmt.Sprintf("reserved (%d)", pif)
}
