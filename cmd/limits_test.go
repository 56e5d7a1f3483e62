package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/blkcopy/blkcopy/internal/sysfs"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

const (
	copyTree     = "../internal/sysfs/testdata/copy-offload"
	mainlineTree = "../internal/sysfs/testdata/mainline"
)

// runLimitsCmd runs blkcopy with args through the same path as main.
func runLimitsCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	s := &Streams{In: strings.NewReader(""), Out: &out, Err: &errb}
	code = run(NewCmdRoot(s), s, args)
	return code, out.String(), errb.String()
}

func limitsJSON(t *testing.T, args ...string) []limitsRow {
	t.Helper()
	code, out, errs := runLimitsCmd(t, append([]string{"limits", "--json"}, args...)...)
	if code != ExitOK {
		t.Fatalf("limits --json %v: exit %d, stderr %q", args, code, errs)
	}
	var rows []limitsRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("limits --json %v: output is not a JSON array of devices: %v\n%s", args, err, out)
	}
	return rows
}

func byName(rows []limitsRow) map[string]limitsRow {
	m := map[string]limitsRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m
}

func TestLimitsJSONOfCapturedTree(t *testing.T) {
	rows := limitsJSON(t, "--sysroot", copyTree)
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	// loop0 is unattached (size 0): hidden, as lsblk hides it.
	if got, want := strings.Join(names, " "), "dm-0 nvme0n1 nvme1n1 nvme2n1"; got != want {
		t.Errorf("listed devices = %q, want %q", got, want)
	}
	m := byName(rows)
	tests := []struct {
		name             string
		max, hw          int64
		offload          bool
		verdict          string
		lbs, sizeInBytes int64
	}{
		{"nvme0n1", 8 << 20, 8 << 20, true, "offload (max 8 MiB per request)", 4096, 1 << 30},
		{"nvme1n1", 0, 0, false, "no offload: device cannot copy (copy_max_hw_bytes=0)", 512, 2 << 30},
		{"nvme2n1", 0, 4 << 20, false, "no offload: disabled (copy_max_bytes=0)", 512, 2 << 30},
	}
	for _, tt := range tests {
		r := m[tt.name]
		if r.Kind != "disk" || !r.KernelCopyOffload || r.CopyMaxBytes != tt.max || r.CopyMaxHWBytes != tt.hw ||
			r.Offload != tt.offload || r.Verdict != tt.verdict || r.LogicalBlockSize != tt.lbs || r.Size != tt.sizeInBytes {
			t.Errorf("%s = %+v\nwant disk, kernel offload, copy max %d hw %d, offload %v, %q, lbs %d, size %d",
				tt.name, r, tt.max, tt.hw, tt.offload, tt.verdict, tt.lbs, tt.sizeInBytes)
		}
	}
	dm := m["dm-0"]
	if len(dm.Slaves) != 2 || dm.Slaves[0].Name != "nvme0n1p2" || dm.Slaves[0].Kind != "partition" ||
		dm.Slaves[0].Disk != "nvme0n1" || !dm.Slaves[0].Offload || dm.Slaves[1].Name != "nvme1n1" || dm.Slaves[1].Offload {
		t.Errorf("dm-0 slaves = %+v, want partition nvme0n1p2 (offload) and nvme1n1 (none)", dm.Slaves)
	}
}

// Scripts read the JSON by these names; renaming one breaks them.
func TestLimitsJSONFieldNames(t *testing.T) {
	code, out, errs := runLimitsCmd(t, "limits", "--json", "--sysroot", copyTree, "/dev/nvme0n1p1")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("want a JSON array of one object, got %v: %s", err, out)
	}
	for _, k := range []string{"path", "name", "kind", "disk", "size", "logical_block_size", "physical_block_size",
		"min_io_size", "optimal_io_size", "max_sectors_kb", "max_hw_sectors_kb", "max_segments", "dma_alignment",
		"rotational", "read_only", "kernel_copy_offload", "copy_max_bytes", "copy_max_hw_bytes", "offload",
		"verdict", "slaves", "start", "offload_path", "path_reason", "nvme_copy"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("JSON object has no %q: %s", k, out)
		}
	}
	p := raw[0]
	if p["kind"] != "partition" || p["disk"] != "nvme0n1" || p["start"] != float64(2048*512) ||
		p["copy_max_bytes"] != float64(8<<20) || p["path"] != "/dev/nvme0n1p1" {
		t.Errorf("nvme0n1p1 = %v, want a partition of nvme0n1 at byte %d with its disk's 8 MiB copy limit", p, 2048*512)
	}
	if s, ok := p["slaves"].([]any); !ok || len(s) != 0 {
		t.Errorf("slaves = %#v, want an empty array (not null)", p["slaves"])
	}
}

func TestLimitsAllShowsEmptyLoopDevices(t *testing.T) {
	m := byName(limitsJSON(t, "--all", "--sysroot", copyTree))
	if r, ok := m["loop0"]; !ok || r.Size != 0 {
		t.Errorf("--all: loop0 = %+v (listed %v), want the empty loop device", r, ok)
	}
	// An attached loop device is listed without --all.
	if _, ok := byName(limitsJSON(t, "--sysroot", mainlineTree))["loop0"]; !ok {
		t.Error("attached loop0 of the mainline tree is not listed")
	}
}

func TestLimitsTableIsAligned(t *testing.T) {
	code, out, errs := runLimitsCmd(t, "limits", "--sysroot", copyTree)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// The table ends at the first blank line; notes follow.
	table, notes, _ := strings.Cut(out, "\n\n")
	lines := strings.Split(table, "\n")
	col := strings.Index(lines[0], "KERNEL")
	if !strings.HasPrefix(lines[0], "DEVICE ") || col < 0 {
		t.Fatalf("header = %q, want DEVICE ... KERNEL", lines[0])
	}
	want := map[string]string{
		"/dev/nvme0n1": "offload (max 8 MiB per request)",
		"/dev/nvme1n1": "no offload: device cannot copy (copy_max_hw_bytes=0)",
		"/dev/nvme2n1": "no offload: disabled (copy_max_bytes=0)",
		"/dev/dm-0":    "no offload: device cannot copy (copy_max_hw_bytes=0)",
		"├─nvme0n1p2":  "offload (max 8 MiB per request)",
		"└─nvme1n1":    "no offload: device cannot copy (copy_max_hw_bytes=0)",
	}
	for _, l := range lines[1:] {
		label := strings.Fields(l)[0]
		w, ok := want[label]
		if !ok {
			t.Errorf("unexpected row %q", l)
			continue
		}
		delete(want, label)
		// Columns are aligned in characters, and the tree drawing is
		// multi-byte: compare rune offsets.
		if got := []rune(l); len(got) < col || string(got[len([]rune(lines[0][:col])):]) != w {
			t.Errorf("row %q: want %q starting under KERNEL (column %d)", l, w, col)
		}
	}
	for label := range want {
		t.Errorf("no row for %s in\n%s", label, out)
	}
	if !strings.Contains(squash(out), "/dev/nvme0n1 1 GiB 4096 4096 128 KiB 8 MiB 8 MiB unknown copy_file_range offload") {
		t.Errorf("nvme0n1 row does not read size 1 GiB, 4096/4096, 128 KiB, 8 MiB copy limits, NVMe Copy unknown, the kernel's path:\n%s", out)
	}
	// A captured tree has no device to ask: one line says so for all.
	if want := "NVME-COPY unknown: NVMe facts need the live device (--sysroot reads only sysfs).\n"; notes != want {
		t.Errorf("below the table:\n%s\nwant %q", notes, want)
	}
}

// squash folds the table's runs of spaces, to check a row's cells in order.
func squash(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

func TestLimitsKernelWithoutOffload(t *testing.T) {
	code, out, _ := runLimitsCmd(t, "limits", "--sysroot", mainlineTree, "/dev/vda1")
	if code != ExitOK || !strings.Contains(out, "no offload: kernel lacks copy offload") {
		t.Errorf("exit %d, output:\n%s\nwant the kernel-lacks verdict", code, out)
	}
	// No copy attributes: the copy columns say "-" rather than a made-up 0.
	if !strings.Contains(squash(out), "/dev/vda1 256 GiB 512 4096 4 MiB - - n/a onload no offload") {
		t.Errorf("vda1 row:\n%s\nwant 256 GiB, 512/4096, 4 MiB, no copy limits, not NVMe, onload", out)
	}
}

func TestLimitsUsageAndRuntimeErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown device", []string{"limits", "/dev/blkcopy-nope"}, ExitError,
			"blkcopy: /dev/blkcopy-nope: no such file or directory\n"},
		{"unknown device under sysroot", []string{"limits", "--sysroot", copyTree, "/dev/sdq"}, ExitError,
			"blkcopy: /dev/sdq: no such block device in " + copyTree + "/sys/class/block\n"},
		{"directory", []string{"limits", "."}, ExitError, "blkcopy: .: not a block device or regular file\n"},
		{"bad size", []string{"limits", "--sysroot", copyTree, "/dev/nvme0n1", "--set-max", "8Q"}, ExitUsage,
			"blkcopy: invalid argument \"8Q\" for \"--set-max\" flag: invalid size \"8Q\": want a non-negative whole number of bytes with an optional suffix (see 'blkcopy limits --help')\n"},
		{"negative size", []string{"limits", "--sysroot", copyTree, "/dev/nvme0n1", "--set-max", "-1"}, ExitUsage, ""},
		{"set-max without DEV", []string{"limits", "--sysroot", copyTree, "--set-max", "1M"}, ExitUsage,
			"blkcopy: --set-max needs exactly one DEV, got 0 (see 'blkcopy limits --help')\n"},
		{"set-max on kernel without offload", []string{"limits", "--sysroot", mainlineTree, "/dev/vda", "--set-max", "1M"}, ExitError,
			"blkcopy: /dev/vda: kernel lacks copy offload (no copy_max_bytes)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runLimitsCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errs)
			}
			if tt.stderr != "" && errs != tt.stderr {
				t.Errorf("stderr = %q\nwant     %q", errs, tt.stderr)
			}
			if tt.stderr == "" && !strings.HasPrefix(errs, "blkcopy: ") {
				t.Errorf("stderr = %q, want one blkcopy: line", errs)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing on failure without --json", out)
			}
		})
	}
}

func TestLimitsJSONFailureIsJSON(t *testing.T) {
	code, out, _ := runLimitsCmd(t, "limits", "--json", "/dev/blkcopy-nope")
	var v struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != ExitError || v.ExitCode != ExitError ||
		v.Error != "/dev/blkcopy-nope: no such file or directory" {
		t.Errorf("exit %d, stdout %q (%v); want exit 1 and a JSON error naming the path", code, out, err)
	}
}

func TestLimitsSetMax(t *testing.T) {
	root := sysfstest.CopyTree(t, copyTree)
	code, out, errs := runLimitsCmd(t, "limits", "--sysroot", root, "/dev/nvme0n1p2", "--set-max", "1M")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.HasPrefix(out, "/dev/nvme0n1p2: copy_max_bytes of nvme0n1 is now 1 MiB (1048576 bytes)\n") ||
		!strings.Contains(out, "offload (max 1 MiB per request)") {
		t.Errorf("output:\n%s\nwant the value kept on the disk and the new verdict", out)
	}
	b, err := os.ReadFile(filepath.Join(root, "sys/block/nvme0n1/queue/copy_max_bytes"))
	if err != nil || strings.TrimSpace(string(b)) != "1048576" {
		t.Errorf("disk's copy_max_bytes = %q, %v; want 1048576", b, err)
	}

	// 0 disables offload, and the verdict says so.
	rows := limitsJSON(t, "--sysroot", root, "/dev/nvme0n1", "--set-max", "0")
	if len(rows) != 1 || rows[0].Offload || rows[0].Verdict != "no offload: disabled (copy_max_bytes=0)" {
		t.Errorf("after --set-max 0: %+v, want offload disabled", rows)
	}
}

func TestLimitsSetMaxNeedsRoot(t *testing.T) {
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	root := sysfstest.CopyTree(t, copyTree)
	code, _, errs := runLimitsCmd(t, "limits", "--sysroot", root, "/dev/nvme0n1", "--set-max", "1M")
	if code != ExitError || errs != "blkcopy: /dev/nvme0n1: setting copy_max_bytes needs root\n" {
		t.Errorf("exit %d, stderr %q; want exit 1 saying root is needed", code, errs)
	}
	b, _ := os.ReadFile(filepath.Join(root, "sys/block/nvme0n1/queue/copy_max_bytes"))
	if strings.TrimSpace(string(b)) != "8388608" {
		t.Errorf("copy_max_bytes changed to %q without root", b)
	}
}

func TestLimitsRegularFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	rows := limitsJSON(t, p)
	if len(rows) != 1 || rows[0].Kind != "file" || rows[0].Size != 3<<20 || rows[0].FSType == "" || rows[0].Offload ||
		rows[0].Verdict != "file: copies use copy_file_range (reflink where the file system can)" {
		t.Errorf("limits --json FILE = %+v, want a 3 MiB file with its fs type and the copy_file_range verdict", rows)
	}
	out, err := exec.Command("stat", "-f", "-c", "%T", p).Output()
	if err == nil && !strings.Contains(rows[0].FSType, strings.TrimSpace(string(out))) && !strings.HasPrefix(rows[0].FSType, "0x") {
		t.Errorf("fs_type = %q, stat -f says %q", rows[0].FSType, out)
	}
	code, _, errs := runLimitsCmd(t, "limits", p, "--set-max", "1M")
	if code != ExitError || !strings.Contains(errs, "a regular file has no copy limits") {
		t.Errorf("--set-max on a file: exit %d, %q", code, errs)
	}
}

// lsblkFacts returns lsblk's size and logical and physical sector size of
// dev, the reference the kernel's own tool gives.
func lsblkFacts(t *testing.T, dev string) (size, logSec, phySec int64) {
	t.Helper()
	out, err := exec.Command("lsblk", "-b", "-d", "-n", "-o", "NAME,SIZE,LOG-SEC,PHY-SEC", dev).Output()
	if err != nil {
		t.Fatalf("lsblk %s: %v", dev, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 {
		t.Fatalf("lsblk %s: unexpected output %q", dev, out)
	}
	n := make([]int64, 3)
	for i := range n {
		if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			t.Fatalf("lsblk %s: %q: %v", dev, out, err)
		}
	}
	return n[0], n[1], n[2]
}

func checkAgainstLsblk(t *testing.T, r limitsRow, dev string) {
	t.Helper()
	size, logSec, phySec := lsblkFacts(t, dev)
	if r.Size != size || r.LogicalBlockSize != logSec || r.PhysicalBlockSize != phySec {
		t.Errorf("%s: limits says size %d, sectors %d/%d; lsblk says %d, %d/%d",
			dev, r.Size, r.LogicalBlockSize, r.PhysicalBlockSize, size, logSec, phySec)
	}
	if r.KernelCopyOffload || r.Verdict != "no offload: kernel lacks copy offload" {
		t.Errorf("%s: verdict %q on a kernel without copy attributes", dev, r.Verdict)
	}
}

// This machine's kernel has no copy offload: every real device must say so,
// with the sizes lsblk reports.
func TestLimitsRealDevicesMatchLsblk(t *testing.T) {
	if _, err := exec.LookPath("lsblk"); err != nil {
		t.Skip("skipping: lsblk (util-linux) is not installed")
	}
	if has, err := (sysfs.Sys{}).KernelHasCopyOffload(); err != nil || has {
		t.Skipf("skipping: this kernel has copy offload (%v); the test expects none", err)
	}
	var devs []string
	for _, d := range limitsJSON(t) {
		if d.Size > 0 && !strings.HasPrefix(d.Name, "loop") && !strings.HasPrefix(d.Name, "zram") {
			devs = append(devs, d.Path)
		}
	}
	if os.Geteuid() == 0 {
		big := sysfstest.Loop(t, 64<<20, "-P")
		p1 := sysfstest.AddPartition(t, big, 1, 2048, 8192)
		sect4k := sysfstest.Loop(t, 32<<20, "--sector-size", "4096")
		devs = append(devs, big, p1, sect4k)

		// Attached loop devices are listed with no DEV; the partition is
		// not (it is not in /sys/block).
		m := byName(limitsJSON(t))
		for _, d := range []string{big, sect4k} {
			if _, ok := m[filepath.Base(d)]; !ok {
				t.Errorf("limits (no DEV) does not list attached %s", d)
			}
		}
		if _, ok := m[filepath.Base(p1)]; ok {
			t.Errorf("limits (no DEV) lists partition %s", p1)
		}
		rows := limitsJSON(t, p1)
		if rows[0].Kind != "partition" || rows[0].Disk != filepath.Base(big) || rows[0].Start != 2048*512 {
			t.Errorf("%s = %+v, want a partition of %s at byte %d", p1, rows[0], big, 2048*512)
		}
	} else {
		t.Log("not root: checking existing devices only; run as root to test loop devices and partitions")
	}
	if len(devs) == 0 {
		t.Skip("skipping: no block device to compare (and not root to attach loop devices)")
	}
	rows := limitsJSON(t, devs...)
	if len(rows) != len(devs) {
		t.Fatalf("limits %v: %d rows, want %d", devs, len(rows), len(devs))
	}
	for i, dev := range devs {
		checkAgainstLsblk(t, rows[i], dev)
	}
}
