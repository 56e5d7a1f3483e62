package cmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/nvme"
	"github.com/blkcopy/blkcopy/internal/sysfs"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

// noOffloadTree is the captured copy-offload tree without its copy_*
// attributes: the same NVMe namespaces on a kernel without copy offload,
// as on Debian's.
func noOffloadTree(t *testing.T) string {
	t.Helper()
	root := sysfstest.CopyTree(t, copyTree)
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && (e.Name() == "copy_max_bytes" || e.Name() == "copy_max_hw_bytes") {
			err = os.Remove(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// device is what the live device answers: Identify, and the offload paths
// asked about a copy within it.
type device struct {
	info        *nvme.Info
	identifyErr error
	path        string
	passed      []string
	pathErr     error
	noPaths     bool // the paths must not be asked (the device could not be opened)
}

// asked records which devices limits asked.
type asked struct{ identify, paths []string }

// withDevice answers for every device limits asks about.
func withDevice(t *testing.T, dev device) *asked {
	t.Helper()
	a := &asked{}
	oldID, oldPath := identifyNVMe, pathFor
	t.Cleanup(func() { identifyNVMe, pathFor = oldID, oldPath })
	identifyNVMe = func(path string) (*nvme.Info, error) {
		a.identify = append(a.identify, path)
		return dev.info, dev.identifyErr
	}
	pathFor = func(_ sysfs.Sys, path string) (string, []string, error) {
		a.paths = append(a.paths, path)
		if dev.noPaths {
			t.Errorf("the paths were asked about %s, which could not be opened", path)
		}
		return dev.path, dev.passed, dev.pathErr
	}
	return a
}

// qemuNamespace is what QEMU's NVMe answers for a namespace with Copy
// limits: ONCS with Copy (and Compare, Write Zeroes, ...), OCFS 0h and 1h.
func qemuNamespace(lbs int64, mssrl uint16, mcl uint32, msrc uint8) *nvme.Info {
	return &nvme.Info{
		Controller: nvme.Controller{Model: "QEMU NVMe Ctrl", ONCS: 0x015d, OCFS: 0x3},
		Namespace:  nvme.Namespace{ID: 1, Blocks: 1 << 18, LBASize: lbs, MSSRL: mssrl, MCL: mcl, MSRC: msrc},
	}
}

// liveRows reports devs of tree as if it were this machine's sysfs: the
// devices are asked (through withDevice's answers).
func liveRows(t *testing.T, tree string, devs ...string) []*limitsRow {
	t.Helper()
	sys := sysfs.Sys{Root: tree}
	var rows []*limitsRow
	for _, dev := range devs {
		d, err := sys.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, deviceRow(d, sys, true))
	}
	return rows
}

func render(t *testing.T, rows []*limitsRow, asJSON bool) string {
	t.Helper()
	var out bytes.Buffer
	if err := printLimits(&limitsOptions{json: asJSON}, &Streams{Out: &out}, rows); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

const (
	kernelLacks = "copy_file_range: kernel lacks copy offload"
	notNVMe     = "nvme: not an NVMe namespace or a partition of one"
	needRoot    = "NVMe passthrough needs CAP_SYS_ADMIN (run as root) (Identify Controller /dev/nvme0n1: ioctl(NVME_IOCTL_ADMIN_CMD): operation not permitted)"
)

func TestLimitsNamesThePathACopyWithinTheDeviceTakes(t *testing.T) {
	debian := noOffloadTree(t)
	tests := []struct {
		name    string
		tree    string
		dev     string
		device  device
		offload bool
		path    string // offload_path
		reason  string // path_reason
		nvme    *nvmeCopyRow
		row     string // the row's NVME-COPY, COPY-PATH and KERNEL cells
		notes   string // below the table
	}{
		{
			name: "the kernel's copy offload comes first",
			tree: copyTree, dev: "/dev/nvme0n1",
			device:  device{info: qemuNamespace(4096, 256, 1024, 7), path: "copy_file_range"},
			offload: true, path: "copy_file_range",
			nvme: &nvmeCopyRow{Identified: true, Model: "QEMU NVMe Ctrl", NamespaceID: 1, LBASize: 4096, Supported: true,
				MSSRLBlocks: 256, MSSRLBytes: 1 << 20, MCLBlocks: 1024, MCLBytes: 4 << 20, MSRCRanges: 8, Formats: []string{"0h", "1h"}},
			row: "yes copy_file_range offload (max 8 MiB per request)",
			notes: `/dev/nvme0n1: NVMe namespace 1 of "QEMU NVMe Ctrl", 4096-byte blocks: Copy supported, formats 0h 1h
  MSSRL 256 blocks (1 MiB) per range, MCL 1024 blocks (4 MiB) per command, 8 ranges per command (MSRC 7)
  copy path: copy_file_range
`,
		},
		{
			name: "NVMe Copy by passthrough where the kernel lacks copy offload",
			tree: debian, dev: "/dev/nvme1n1",
			device:  device{info: qemuNamespace(512, 128, 2048, 127), path: "nvme", passed: []string{kernelLacks}},
			offload: true, path: "nvme", reason: kernelLacks,
			nvme: &nvmeCopyRow{Identified: true, Model: "QEMU NVMe Ctrl", NamespaceID: 1, LBASize: 512, Supported: true,
				MSSRLBlocks: 128, MSSRLBytes: 64 << 10, MCLBlocks: 2048, MCLBytes: 1 << 20, MSRCRanges: 128, Formats: []string{"0h", "1h"}},
			row: "yes nvme no offload: kernel lacks copy offload",
			notes: `/dev/nvme1n1: NVMe namespace 1 of "QEMU NVMe Ctrl", 512-byte blocks: Copy supported, formats 0h 1h
  MSSRL 128 blocks (64 KiB) per range, MCL 2048 blocks (1 MiB) per command, 128 ranges per command (MSRC 127)
  copy path: nvme (copy_file_range: kernel lacks copy offload)
`,
		},
		{
			name: "a partition of a namespace is asked through its own node",
			tree: debian, dev: "/dev/nvme0n1p1",
			device:  device{info: qemuNamespace(4096, 256, 1024, 7), path: "nvme", passed: []string{kernelLacks}},
			offload: true, path: "nvme", reason: kernelLacks,
			nvme: &nvmeCopyRow{Identified: true, Model: "QEMU NVMe Ctrl", NamespaceID: 1, LBASize: 4096, Supported: true,
				MSSRLBlocks: 256, MSSRLBytes: 1 << 20, MCLBlocks: 1024, MCLBytes: 4 << 20, MSRCRanges: 8, Formats: []string{"0h", "1h"}},
			row: "yes nvme no offload: kernel lacks copy offload",
		},
		{
			name: "neither: the namespace reports no Copy limits",
			tree: debian, dev: "/dev/nvme1n1",
			device: device{info: qemuNamespace(512, 0, 0, 0),
				passed: []string{kernelLacks, "nvme: namespace 1 reports no Copy limits (MSSRL 0)"}},
			reason: kernelLacks + "; nvme: namespace 1 reports no Copy limits (MSSRL 0)",
			nvme: &nvmeCopyRow{Identified: true, Model: "QEMU NVMe Ctrl", NamespaceID: 1, LBASize: 512, Supported: true,
				MSRCRanges: 1, Formats: []string{"0h", "1h"}},
			row: "yes onload no offload: kernel lacks copy offload",
			notes: `/dev/nvme1n1: NVMe namespace 1 of "QEMU NVMe Ctrl", 512-byte blocks: Copy supported, formats 0h 1h
  MSSRL 0 blocks (0 B) per range, MCL 0 blocks (0 B) per command, 1 range per command (MSRC 0)
  copy path: onload (copy_file_range: kernel lacks copy offload; nvme: namespace 1 reports no Copy limits (MSSRL 0))
`,
		},
		{
			name: "neither: the controller lacks Copy",
			tree: debian, dev: "/dev/nvme1n1",
			device: device{info: &nvme.Info{Controller: nvme.Controller{Model: "Disk 9000", ONCS: 0x5f},
				Namespace: nvme.Namespace{ID: 1, LBASize: 512}},
				passed: []string{kernelLacks, `nvme: controller "Disk 9000" does not support the NVMe Copy command (ONCS bit 8 clear)`}},
			reason: kernelLacks + `; nvme: controller "Disk 9000" does not support the NVMe Copy command (ONCS bit 8 clear)`,
			nvme: &nvmeCopyRow{Identified: true, Model: "Disk 9000", NamespaceID: 1, LBASize: 512,
				MSRCRanges: 1, Formats: []string{}},
			row: "no onload no offload: kernel lacks copy offload",
			notes: `/dev/nvme1n1: NVMe namespace 1 of "Disk 9000", 512-byte blocks: Copy not supported (ONCS bit 8 clear)
  copy path: onload (copy_file_range: kernel lacks copy offload; nvme: controller "Disk 9000" does not support the NVMe Copy command (ONCS bit 8 clear))
`,
		},
		{
			name: "Identify without CAP_SYS_ADMIN is a reason, not a failure",
			tree: debian, dev: "/dev/nvme0n1",
			device: device{identifyErr: copypath.Unavailable(errors.New(needRoot)),
				passed: []string{kernelLacks, "nvme: " + needRoot}},
			reason: kernelLacks + "; nvme: " + needRoot,
			nvme:   &nvmeCopyRow{Reason: needRoot, Formats: []string{}},
			row:    "unknown onload no offload: kernel lacks copy offload",
			notes: "/dev/nvme0n1: NVMe namespace; Copy support unknown: " + needRoot + `
  copy path: onload (copy_file_range: kernel lacks copy offload; nvme: ` + needRoot + `)
`,
		},
		{
			name: "a device that cannot be opened: what sysfs tells",
			tree: debian, dev: "/dev/nvme0n1",
			device: device{identifyErr: &fs.PathError{Op: "open", Path: "/dev/nvme0n1", Err: syscall.EACCES}, noPaths: true},
			reason: kernelLacks + "; nvme: open /dev/nvme0n1: permission denied",
			nvme:   &nvmeCopyRow{Reason: "open /dev/nvme0n1: permission denied", Formats: []string{}},
			row:    "unknown onload no offload: kernel lacks copy offload",
		},
		{
			name: "a device that cannot be opened still offloads by the kernel",
			tree: copyTree, dev: "/dev/nvme0n1",
			device:  device{identifyErr: &fs.PathError{Op: "open", Path: "/dev/nvme0n1", Err: syscall.EACCES}, noPaths: true},
			offload: true, path: "copy_file_range",
			nvme: &nvmeCopyRow{Reason: "open /dev/nvme0n1: permission denied", Formats: []string{}},
			row:  "unknown copy_file_range offload (max 8 MiB per request)",
		},
		{
			name: "a path that fails for real is shown, as a copy would stop on it",
			tree: debian, dev: "/dev/nvme0n1",
			device: device{info: qemuNamespace(4096, 256, 1024, 7), passed: []string{kernelLacks},
				pathErr: errors.New("nvme: Identify Namespace /dev/nvme0n1: Internal Error (00/06)")},
			reason: kernelLacks + "; nvme: Identify Namespace /dev/nvme0n1: Internal Error (00/06)",
			nvme: &nvmeCopyRow{Identified: true, Model: "QEMU NVMe Ctrl", NamespaceID: 1, LBASize: 4096, Supported: true,
				MSSRLBlocks: 256, MSSRLBytes: 1 << 20, MCLBlocks: 1024, MCLBytes: 4 << 20, MSRCRanges: 8, Formats: []string{"0h", "1h"}},
			row: "yes onload no offload: kernel lacks copy offload",
		},
		{
			name: "not NVMe: nothing is asked",
			tree: mainlineTree, dev: "/dev/loop0",
			device: device{noPaths: true},
			reason: kernelLacks + "; " + notNVMe,
			row:    "n/a onload no offload: kernel lacks copy offload",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := withDevice(t, tt.device)
			rows := liveRows(t, tt.tree, tt.dev)
			r := rows[0]
			if r.Offload != tt.offload || r.OffloadPath != tt.path || r.PathReason != tt.reason {
				t.Errorf("offload %v, offload_path %q, path_reason %q\nwant %v, %q, %q", r.Offload, r.OffloadPath, r.PathReason, tt.offload, tt.path, tt.reason)
			}
			if !reflect.DeepEqual(r.NVMeCopy, tt.nvme) {
				t.Errorf("nvme_copy = %+v\nwant        %+v", r.NVMeCopy, tt.nvme)
			}
			if tt.nvme == nil && (len(a.identify) > 0 || len(a.paths) > 0) {
				t.Errorf("a device that is not NVMe was opened: identify %v, paths %v", a.identify, a.paths)
			}
			if tt.nvme != nil && (!reflect.DeepEqual(a.identify, []string{tt.dev}) || !tt.device.noPaths && !reflect.DeepEqual(a.paths, []string{tt.dev})) {
				t.Errorf("asked identify %v, paths %v; want %s once each", a.identify, a.paths, tt.dev)
			}

			// The JSON carries the same, under the documented names.
			var back []limitsRow
			if err := json.Unmarshal([]byte(render(t, rows, true)), &back); err != nil {
				t.Fatal(err)
			}
			if b := back[0]; b.Offload != tt.offload || b.OffloadPath != tt.path || b.PathReason != tt.reason || !reflect.DeepEqual(b.NVMeCopy, tt.nvme) {
				t.Errorf("JSON round trip = %+v, want the row's own facts", b)
			}

			table, notes, _ := strings.Cut(render(t, rows, false), "\n\n")
			if got := squash(strings.Split(table, "\n")[1]); !strings.HasSuffix(got, " "+tt.row) {
				t.Errorf("table row %q\nwant it to end in %q", got, tt.row)
			}
			if tt.notes != "" && notes != tt.notes {
				t.Errorf("below the table:\n%s\nwant\n%s", notes, tt.notes)
			}
			if tt.nvme == nil && notes != "" {
				t.Errorf("notes below the table of a device that is not NVMe:\n%s", notes)
			}
		})
	}
}

// A dm device is not a namespace, even over one: the NVMe path cannot
// serve it (Copy sent through it would land at the namespace's LBAs). Its
// slaves are namespaces and are asked, each once however often listed.
func TestLimitsAsksTheNamespacesUnderADMDeviceNotTheDMDevice(t *testing.T) {
	a := withDevice(t, device{info: qemuNamespace(512, 128, 2048, 127), path: "nvme", passed: []string{kernelLacks}})
	debian := noOffloadTree(t)
	rows := liveRows(t, debian, "/dev/dm-0", "/dev/nvme1n1")
	dm := rows[0]
	if dm.NVMeCopy != nil || dm.OffloadPath != "" || dm.PathReason != kernelLacks+"; "+notNVMe {
		t.Errorf("dm-0: nvme_copy %+v, offload_path %q, path_reason %q; want no NVMe facts and onload", dm.NVMeCopy, dm.OffloadPath, dm.PathReason)
	}
	for _, sl := range dm.Slaves {
		if sl.NVMeCopy == nil || !sl.NVMeCopy.Identified || sl.OffloadPath != "nvme" {
			t.Errorf("slave %s: nvme_copy %+v, offload_path %q; want identified, nvme", sl.Name, sl.NVMeCopy, sl.OffloadPath)
		}
	}
	want := []string{"/dev/nvme0n1p2", "/dev/nvme1n1", "/dev/nvme1n1"}
	if !reflect.DeepEqual(a.identify, want) {
		t.Errorf("identified %v, want %v", a.identify, want)
	}
	_, notes, _ := strings.Cut(render(t, rows, false), "\n\n")
	if strings.Count(notes, "/dev/nvme1n1: ") != 1 || strings.Count(notes, "/dev/nvme0n1p2: ") != 1 || strings.Contains(notes, "dm-0") {
		t.Errorf("notes:\n%s\nwant one note for each namespace, none for dm-0", notes)
	}
}

// A captured tree has no device behind it: the NVMe facts are absent and
// limits says so, and the path is what sysfs tells.
func TestLimitsUnderSysrootSaysNVMeFactsNeedTheLiveDevice(t *testing.T) {
	withDevice(t, device{noPaths: true})
	identifyNVMe = func(path string) (*nvme.Info, error) {
		t.Errorf("Identify sent to %s under --sysroot", path)
		return nil, errors.New("no")
	}
	m := byName(limitsJSON(t, "--sysroot", copyTree, "/dev/nvme0n1", "/dev/nvme2n1", "/dev/dm-0"))
	unknown := &nvmeCopyRow{Reason: noLiveDevice, Formats: []string{}}
	tests := []struct {
		name    string
		offload bool
		path    string
		reason  string
		nvme    *nvmeCopyRow
	}{
		{"nvme0n1", true, "copy_file_range", "", unknown},
		{"nvme2n1", false, "", "copy_file_range: disabled (copy_max_bytes=0); nvme: " + noLiveDevice, unknown},
		{"dm-0", false, "", "copy_file_range: device cannot copy (copy_max_hw_bytes=0); " + notNVMe, nil},
	}
	for _, tt := range tests {
		r := m[tt.name]
		if r.Offload != tt.offload || r.OffloadPath != tt.path || r.PathReason != tt.reason || !reflect.DeepEqual(r.NVMeCopy, tt.nvme) {
			t.Errorf("%s: offload %v, offload_path %q, path_reason %q, nvme_copy %+v\nwant %v, %q, %q, %+v",
				tt.name, r.Offload, r.OffloadPath, r.PathReason, r.NVMeCopy, tt.offload, tt.path, tt.reason, tt.nvme)
		}
	}
}

// Scripts read nvme_copy by these names.
func TestLimitsNVMeCopyJSONFieldNames(t *testing.T) {
	withDevice(t, device{info: qemuNamespace(512, 128, 2048, 127), path: "nvme", passed: []string{kernelLacks}})
	var raw []map[string]any
	if err := json.Unmarshal([]byte(render(t, liveRows(t, noOffloadTree(t), "/dev/nvme1n1"), true)), &raw); err != nil {
		t.Fatal(err)
	}
	n, ok := raw[0]["nvme_copy"].(map[string]any)
	if !ok {
		t.Fatalf("nvme_copy = %#v, want an object", raw[0]["nvme_copy"])
	}
	want := map[string]any{
		"identified": true, "reason": "", "model": "QEMU NVMe Ctrl", "namespace_id": 1.0, "lba_size": 512.0,
		"supported": true, "mssrl_blocks": 128.0, "mssrl_bytes": 65536.0, "mcl_blocks": 2048.0,
		"mcl_bytes": 1048576.0, "msrc_ranges": 128.0, "formats": []any{"0h", "1h"},
	}
	if !reflect.DeepEqual(n, want) {
		t.Errorf("nvme_copy = %v\nwant      %v", n, want)
	}
	if raw[0]["offload_path"] != "nvme" || raw[0]["path_reason"] != kernelLacks || raw[0]["offload"] != true ||
		raw[0]["verdict"] != "no offload: kernel lacks copy offload" {
		t.Errorf("offload %v, offload_path %v, path_reason %v, verdict %v; want true, nvme, the kernel's reason, its verdict unchanged",
			raw[0]["offload"], raw[0]["offload_path"], raw[0]["path_reason"], raw[0]["verdict"])
	}
}
