package nvme

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
)

func TestParseControllerReadsTheSpecOffsets(t *testing.T) {
	c := parseController(idCtrl("QEMU NVMe Ctrl", 0x015d, 0x0003, 0x8000))
	want := Controller{Model: "QEMU NVMe Ctrl", Serial: "SN-1234", Firmware: "8.0.0", CTRATT: 0x8000, ONCS: 0x015d, OCFS: 0x0003}
	if c != want {
		t.Errorf("parseController = %+v\nwant %+v", c, want)
	}
	if !c.Copy() {
		t.Error("ONCS 0x015d has bit 8 set, but Copy() = false")
	}
	if f := strings.Join(c.Formats(), ","); f != "0h,1h" {
		t.Errorf("Formats() = %s, want 0h,1h for OCFS 0x3", f)
	}
	if parseController(idCtrl("x", 0x00ff, 0, 0)).Copy() {
		t.Error("ONCS 0x00ff has bit 8 clear, but Copy() = true")
	}
}

func TestParseNamespaceReadsTheSpecOffsets(t *testing.T) {
	ns, err := parseNamespace(idNs(0x1_0000_0000, 12, 128, 2048, 127))
	if err != nil {
		t.Fatal(err)
	}
	want := Namespace{Blocks: 0x1_0000_0000, LBAFormat: 1, LBASize: 4096, MSSRL: 128, MCL: 2048, MSRC: 127}
	if ns != want {
		t.Errorf("parseNamespace = %+v\nwant %+v", ns, want)
	}
	if ns.RangeBlocks() != 128 || ns.MaxRanges() != 128 || ns.CommandBlocks() != 2048 {
		t.Errorf("RangeBlocks %d MaxRanges %d CommandBlocks %d; want 128, 128 (MSRC is 0-based), 2048",
			ns.RangeBlocks(), ns.MaxRanges(), ns.CommandBlocks())
	}
}

func TestParseNamespaceFormatsAndProtection(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(b []byte)
		check func(ns Namespace) bool
		bad   bool
	}{
		{"metadata and extended LBA", func(b []byte) {
			b[26] = 0x11                                     // FLBAS: format 1, metadata at the end of each block
			binary.LittleEndian.PutUint32(b[132:], 12<<16|8) // LBAF1: 4096 + 8
			b[29] = 1                                        // DPS: type 1
		}, func(ns Namespace) bool {
			return ns.LBASize == 4096 && ns.MetadataSize == 8 && ns.ExtendedLBA && ns.PIType == 1
		}, false},
		{"format index above 15 uses FLBAS bits 6:5", func(b []byte) {
			b[25] = 19                                         // 20 formats
			b[26] = 0x20 | 0x1                                 // index 0b01_0001 = 17
			binary.LittleEndian.PutUint32(b[128+4*17:], 9<<16) // LBAF17: 512 bytes
		}, func(ns Namespace) bool { return ns.LBAFormat == 17 && ns.LBASize == 512 }, false},
		{"formatted index past NLBAF", func(b []byte) { b[26] = 2 }, nil, true},
		{"LBADS 0: an unused format", func(b []byte) { binary.LittleEndian.PutUint32(b[132:], 0) }, nil, true},
		{"LBADS below 512 bytes", func(b []byte) { binary.LittleEndian.PutUint32(b[132:], 8<<16) }, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := idNs(1<<20, 12, 128, 2048, 127)
			tt.edit(b)
			ns, err := parseNamespace(b)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseNamespace = %+v, want an error", ns)
				}
				return
			}
			if err != nil || !tt.check(ns) {
				t.Errorf("parseNamespace = %+v, %v", ns, err)
			}
		})
	}
}

func TestParsePIFormatFromExtendedLBAFormat(t *testing.T) {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint32(b[12+4*1:], 2<<7) // ELBAF1: PIF 64b guard
	binary.LittleEndian.PutUint32(b[12+4*2:], 1<<7|0x30)
	if got := parsePIFormat(b, 1); got != PIF64 {
		t.Errorf("PIF of format 1 = %d, want %d (64b guard)", got, PIF64)
	}
	if got := parsePIFormat(b, 2); got != PIF32 {
		t.Errorf("PIF of format 2 = %d, want %d (32b guard; STS bits ignored)", got, PIF32)
	}
	if got := parsePIFormat(b, 0); got != PIF16 {
		t.Errorf("PIF of format 0 = %d, want %d (16b guard)", got, PIF16)
	}
}

func TestIdentifySendsControllerAndNamespaceIdentify(t *testing.T) {
	d := newFake(t)
	d.nsid = 3
	d.ctrl = idCtrl("Vendor Drive", 1<<8, 0x0003, 1<<15) // extended LBA formats
	d.nvmNS = make([]byte, 4096)
	binary.LittleEndian.PutUint32(d.nvmNS[12+4*1:], 2<<7) // format 1: 64b guard
	info, err := Identify(d.file("nvme0n3"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.admin) != 3 {
		t.Fatalf("%d admin commands, want Identify CNS 01h, 00h, 05h", len(d.admin))
	}
	for i, want := range []struct {
		nsid, cdw10, cdw11 uint32
	}{{0, 0x01, 0}, {3, 0x00, 0}, {3, 0x05, 0}} {
		c := d.admin[i]
		if !c.admin || c.nsid != want.nsid || c.cdw10 != want.cdw10 || c.cdw11 != want.cdw11 {
			t.Errorf("admin command %d: nsid %d CDW10 %#x CDW11 %#x; want %d, %#x, %#x", i, c.nsid, c.cdw10, c.cdw11, want.nsid, want.cdw10, want.cdw11)
		}
	}
	ns := info.Namespace
	if ns.ID != 3 || ns.LBASize != 4096 || ns.PIFormat != PIF64 || info.Controller.Model != "Vendor Drive" {
		t.Errorf("Identify = %+v", info)
	}
	if f, err := info.CopyFormat(); err != nil || f != 1 {
		t.Errorf("CopyFormat() = %d, %v; want format 1h for a 64b guard format", f, err)
	}
}

func TestIdentifyWithoutExtendedLBAFormatsSkipsCNS05(t *testing.T) {
	d := newFake(t)
	if _, err := Identify(d.file("nvme0n1")); err != nil {
		t.Fatal(err)
	}
	if len(d.admin) != 2 {
		t.Errorf("%d admin commands, want 2: CTRATT.ELBAS is clear, so no CNS 05h", len(d.admin))
	}
}

func TestIdentifyFailures(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(d *fakeDevice)
		unavailable bool
		words       string
	}{
		{"not NVMe", func(d *fakeDevice) { d.nsidErr = os.NewSyscallError("ioctl(NVME_IOCTL_ID)", unix.ENOTTY) }, true, "/dev/fake is not an NVMe namespace"},
		{"loop", func(d *fakeDevice) { d.nsidErr = os.NewSyscallError("ioctl(NVME_IOCTL_ID)", unix.EINVAL) }, true, "/dev/fake is not an NVMe namespace"},
		{"no CAP_SYS_ADMIN", func(d *fakeDevice) {
			d.idErr = map[uint8]error{1: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EACCES)}
		}, true, "needs CAP_SYS_ADMIN"},
		{"seccomp", func(d *fakeDevice) {
			d.idErr = map[uint8]error{1: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EPERM)}
		}, true, "needs CAP_SYS_ADMIN"},
		{"controller refuses CNS 05h", func(d *fakeDevice) {
			d.ctrl = idCtrl("x", 1<<8, 1, 1<<15)
		}, true, "invalid field in command"},
		{"EIO is a real error", func(d *fakeDevice) {
			d.idErr = map[uint8]error{0: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EIO)}
		}, false, "input/output error"},
		{"internal error status is a real error", func(d *fakeDevice) {
			d.idStatus = map[uint8]Status{1: 0x0006}
		}, false, "Identify Controller /dev/fake: internal error (SCT 0h, SC 06h)"},
		{"garbage LBA format", func(d *fakeDevice) { d.ns[26] = 5 }, true, "invalid formatted LBA format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFake(t)
			tt.setup(d)
			f := d.file("fake")
			_, err := Identify(f)
			if err == nil {
				t.Fatal("Identify succeeded, want an error")
			}
			if copypath.IsUnavailable(err) != tt.unavailable {
				t.Errorf("IsUnavailable(%v) = %v, want %v", err, !tt.unavailable, tt.unavailable)
			}
			if msg := strings.ReplaceAll(err.Error(), f.Name(), "/dev/fake"); !strings.Contains(msg, tt.words) {
				t.Errorf("error %q does not say %q", msg, tt.words)
			}
		})
	}
}

func TestCopyFormatDecidesOrRefusesInWords(t *testing.T) {
	base := Info{
		Controller: Controller{Model: "QEMU NVMe Ctrl", ONCS: 1 << 8, OCFS: 0x1},
		Namespace:  Namespace{ID: 1, LBASize: 4096, MSSRL: 128, MCL: 2048, MSRC: 127},
	}
	tests := []struct {
		name   string
		edit   func(i *Info)
		format uint8
		words  string // "" = served
	}{
		{"16b guard: format 0h", func(*Info) {}, 0, ""},
		{"OCFS 0 from an early controller: format 0h", func(i *Info) { i.Controller.OCFS = 0 }, 0, ""},
		{"64b guard: format 1h", func(i *Info) { i.Namespace.PIFormat = PIF64; i.Controller.OCFS = 3 }, 1, ""},
		{"32b guard: format 1h", func(i *Info) { i.Namespace.PIFormat = PIF32; i.Controller.OCFS = 2 }, 1, ""},
		{"no Copy", func(i *Info) { i.Controller.ONCS = 0x5f }, 0, `controller "QEMU NVMe Ctrl" does not support the NVMe Copy command (ONCS bit 8 clear)`},
		{"MSSRL 0", func(i *Info) { i.Namespace.MSSRL = 0 }, 0, "namespace 1 reports no Copy limits (MSSRL 0)"},
		{"MCL 0", func(i *Info) { i.Namespace.MCL = 0 }, 0, "namespace 1 reports no Copy limits (MCL 0)"},
		{"protection information on", func(i *Info) { i.Namespace.PIType = 1 }, 0, "end-to-end protection information (type 1)"},
		{"64b guard without format 1h", func(i *Info) { i.Namespace.PIFormat = PIF64 }, 0, "does not offer Copy descriptor format 1h, which namespace 1 needs (its 64b guard protection information format)"},
		{"64b guard, OCFS 0", func(i *Info) { i.Namespace.PIFormat = PIF64; i.Controller.OCFS = 0 }, 0, "format 1h"},
		{"16b guard without format 0h", func(i *Info) { i.Controller.OCFS = 2 }, 0, "does not offer Copy descriptor format 0h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := base
			tt.edit(&info)
			f, err := info.CopyFormat()
			switch {
			case tt.words == "" && (err != nil || f != tt.format):
				t.Errorf("CopyFormat() = %d, %v; want %d", f, err, tt.format)
			case tt.words != "" && err == nil:
				t.Errorf("CopyFormat() = %d, want refusal %q", f, tt.words)
			case tt.words != "" && (!copypath.IsUnavailable(err) || !strings.Contains(err.Error(), tt.words)):
				t.Errorf("CopyFormat() error %q (unavailable %v); want unavailable saying %q", err, copypath.IsUnavailable(err), tt.words)
			}
		})
	}
}

func TestIdentifyErrorKeepsErrno(t *testing.T) {
	d := newFake(t)
	d.idErr = map[uint8]error{1: os.NewSyscallError("ioctl(NVME_IOCTL_ADMIN_CMD)", unix.EIO)}
	_, err := Identify(d.file("nvme0n1"))
	var e *Error
	if !errors.Is(err, unix.EIO) || !errors.As(err, &e) || e.Op != "Identify Controller" {
		t.Errorf("Identify error %v: want an *Error for Identify Controller wrapping EIO", err)
	}
}
