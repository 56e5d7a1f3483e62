//go:build vmtest

package vm

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The guest's disks. Each NVMe namespace gets its own fresh raw image and
// explicit Copy limits (MSSRL blocks per source range, MCL blocks per copy,
// MSRC+1 source ranges), so a kernel with copy offload has limits to report.
// The guest finds a namespace by controller serial and namespace ID (see
// guestEnv), not by a probe-order name.
type disk struct {
	id       string // image name and the guest's name for it: DISK_<ID>
	ctrl     string // NVMe controller id and serial (one subsystem each)
	nsid     int
	size     int64
	lbs      int
	mssrl    int
	mcl      int
	msrc     int
	blkdebug string // blkdebug rules; empty for a plain raw image
}

const mib = 1 << 20

// Where blkdebug makes the error disk fail, in bytes (the guest checks
// blkcopy names these offsets). Far from both ends: the kernel reads the
// first and last sectors when it scans for partition tables.
const (
	errReadOffset  = 20 * mib
	errWriteOffset = 40 * mib
)

var disks = []disk{
	{id: "A", ctrl: "nvme-a", nsid: 1, size: 256 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7},
	{id: "B", ctrl: "nvme-a", nsid: 2, size: 64 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7},
	{id: "C", ctrl: "nvme-c", nsid: 1, size: 256 * mib, lbs: 4096, mssrl: 64, mcl: 256, msrc: 3},
	{id: "E", ctrl: "nvme-e", nsid: 1, size: 64 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7,
		blkdebug: blkdebugRule("read_aio", errReadOffset) + blkdebugRule("write_aio", errWriteOffset)},
}

func blkdebugRule(event string, offset int64) string {
	return fmt.Sprintf("[inject-error]\nevent = %q\nerrno = \"5\"\nsector = \"%d\"\nonce = \"off\"\n\n",
		event, offset/512)
}

// Modules the scenarios need; their dependencies come along.
var guestModules = []string{"nvme", "null_blk", "loop", "crc32c_generic", "ext4"}

var moduleParams = map[string]string{
	// One 1 GiB device with 4096-byte blocks for `blkcopy limits`.
	"null_blk": "nr_devices=1 bs=4096 gb=1",
}

func TestVM(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not found; run test/vm/fetch.sh (apt-get install qemu-system-x86 busybox-static)")
	}
	busybox := staticBusybox(t)
	kernel, modules := guestKernel(t)
	work := t.TempDir()

	rd := &Initramfs{}
	rd.AddFile("bin/busybox", 0o755, mustRead(t, busybox))
	rd.AddFile("bin/blkcopy", 0o755, mustRead(t, buildBlkcopy(t, work)))
	rd.AddFile("bin/nvmecopy", 0o755, mustRead(t, goBuild(t, work, "nvmecopy", "./nvmecopy")))
	rd.AddSymlink("bin/sh", "busybox")
	for _, d := range []string{"proc", "sys", "dev", "tmp", "mnt"} {
		rd.AddDir(d)
	}
	addGuestScripts(t, rd)
	rd.AddFile("guest/env", 0o644, []byte(guestEnv()))
	addModules(t, rd, modules)
	initrd := filepath.Join(work, "initramfs.cpio")
	writeInitramfs(t, rd, initrd)

	trace := filepath.Join(work, "nvme-trace.log")
	args := qemuArgs(t, work, kernel, initrd, trace)

	start := time.Now()
	lines := boot(t, qemu, args)
	t.Logf("VM ran %s", time.Since(start).Round(100*time.Millisecond))

	info := reportResults(t, lines)
	copies := countCopyCommands(t, trace)
	t.Run("nvme_copy_commands", func(t *testing.T) {
		// The guest's nvmecopy probe sent probe_copies Copy commands by
		// passthrough; blkcopy's copies account for the rest.
		probe, err := strconv.Atoi(info["probe_copies"])
		if err != nil {
			t.Fatalf("the guest reported no probe_copies: %v", err)
		}
		offload := info["offload"] == "1"
		t.Logf("QEMU traced %d NVMe Copy commands, %d from the probe (kernel offload: %v)", copies, probe, offload)
		switch {
		case copies < probe:
			t.Errorf("QEMU traced %d Copy commands, fewer than the probe's %d: is the pci_nvme_copy trace working?", copies, probe)
		case offload && copies == probe:
			t.Errorf("kernel reports copy offload but blkcopy's copies sent no NVMe Copy command")
		case !offload && copies != probe:
			t.Errorf("kernel has no copy offload but blkcopy's copies sent %d NVMe Copy commands", copies-probe)
		}
	})
}

// staticBusybox returns a busybox that runs with no shared libraries in
// the guest: Debian's busybox-static installs one at /bin/busybox, while
// the plain busybox package puts a dynamically linked one there.
func staticBusybox(t *testing.T) string {
	for _, p := range []string{os.Getenv("BLKCOPY_VM_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox"} {
		if p == "" {
			continue
		}
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := false
		for _, prog := range f.Progs {
			dynamic = dynamic || prog.Type == elf.PT_INTERP
		}
		f.Close()
		if !dynamic {
			return p
		}
	}
	t.Skip("no static busybox; run test/vm/fetch.sh (apt-get install busybox-static)")
	return ""
}

// guestKernel returns the kernel image and its modules directory: those
// named by BLKCOPY_VM_KERNEL and BLKCOPY_VM_MODULES, or Debian's current
// kernel from fetch.sh's cache. An empty modules directory means the
// drivers are built in.
func guestKernel(t *testing.T) (kernel, modules string) {
	if k := os.Getenv("BLKCOPY_VM_KERNEL"); k != "" {
		return k, os.Getenv("BLKCOPY_VM_MODULES")
	}
	cmd := exec.Command("./fetch.sh", "kernel")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fetch Debian's kernel: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "KERNEL="); ok {
			kernel = v
		}
		if v, ok := strings.CutPrefix(line, "MODULES="); ok {
			modules = v
		}
	}
	if kernel == "" || modules == "" {
		t.Fatalf("fetch.sh kernel printed no KERNEL= and MODULES= lines:\n%s", out)
	}
	return kernel, modules
}

// buildBlkcopy builds the working tree's blkcopy, or returns
// BLKCOPY_VM_BINARY when set (a static binary built elsewhere).
func buildBlkcopy(t *testing.T, dir string) string {
	if bin := os.Getenv("BLKCOPY_VM_BINARY"); bin != "" {
		return bin
	}
	return goBuild(t, dir, "blkcopy", "../..")
}

// goBuild builds a static binary (the guest has no libc).
func goBuild(t *testing.T, dir, name, pkg string) string {
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

func addGuestScripts(t *testing.T, rd *Initramfs) {
	files, err := filepath.Glob("guest/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no guest scripts under test/vm/guest: %v", err)
	}
	for _, f := range files {
		mode := os.FileMode(0o644)
		if filepath.Base(f) == "init" {
			mode = 0o755
			rd.AddFile("init", mode, mustRead(t, f))
		}
		rd.AddFile(f, mode, mustRead(t, f))
	}
}

// guestEnv tells the guest scripts what the host set up, so the numbers
// live in one place.
func guestEnv() string {
	var b strings.Builder
	for _, d := range disks {
		fmt.Fprintf(&b, "DISK_%s='%s %d'\n", d.id, d.ctrl, d.nsid)
	}
	fmt.Fprintf(&b, "ERR_READ_OFFSET=%d\nERR_WRITE_OFFSET=%d\n", errReadOffset, errWriteOffset)
	return b.String()
}

func addModules(t *testing.T, rd *Initramfs, dir string) {
	if dir == "" {
		t.Log("no modules directory: assuming the kernel has the drivers built in")
		return
	}
	mods, err := ModuleOrder(dir, guestModules)
	if err != nil {
		t.Fatal(err)
	}
	var order strings.Builder
	for _, m := range mods {
		data, err := ReadModule(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		file := m.Name + ".ko"
		rd.AddFile("modules/"+file, 0o644, data)
		fmt.Fprintf(&order, "%s %s\n", file, moduleParams[m.Name])
	}
	rd.AddFile("modules/order", 0o644, []byte(order.String()))
}

func writeInitramfs(t *testing.T, rd *Initramfs, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func qemuArgs(t *testing.T, work, kernel, initrd, trace string) []string {
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd,
		// panic=-1 with -no-reboot turns a guest panic into QEMU exiting.
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		"-trace", "pci_nvme_copy*,file=" + trace,
	}
	ctrls := map[string]bool{}
	for _, d := range disks {
		img := filepath.Join(work, d.id+".img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, d.size); err != nil {
			t.Fatal(err)
		}
		file := img
		if d.blkdebug != "" {
			rules := filepath.Join(work, d.id+".blkdebug")
			if err := os.WriteFile(rules, []byte(d.blkdebug), 0o644); err != nil {
				t.Fatal(err)
			}
			file = "blkdebug:" + rules + ":" + img
		}
		if !ctrls[d.ctrl] {
			ctrls[d.ctrl] = true
			args = append(args, "-device", fmt.Sprintf("nvme,serial=%s,id=%s", d.ctrl, d.ctrl))
		}
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,if=none,id=drive-%s,format=raw", file, d.id),
			"-device", fmt.Sprintf("nvme-ns,drive=drive-%s,bus=%s,nsid=%d,"+
				"logical_block_size=%d,physical_block_size=%d,mssrl=%d,mcl=%d,msrc=%d",
				d.id, d.ctrl, d.nsid, d.lbs, d.lbs, d.mssrl, d.mcl, d.msrc))
	}
	return args
}

// boot runs the VM to its end and returns the guest's console lines,
// logging each as it arrives so a hung guest shows how far it got.
func boot(t *testing.T, qemu string, args []string) []string {
	timeout := 8 * time.Minute
	if v := os.Getenv("BLKCOPY_VM_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("BLKCOPY_VM_TIMEOUT: %v", err)
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	t.Logf("%s %s", qemu, strings.Join(args, " "))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		lines = append(lines, line)
		t.Log("guest: " + line)
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("VM did not finish within %s (BLKCOPY_VM_TIMEOUT)", timeout)
	}
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	return lines
}

// reportResults turns the guest's VMTEST lines into subtests:
//
//	VMTEST INFO key=value        facts for the host: offload=1 (the
//	                             kernel offloads), probe_copies=N
//	VMTEST PASS name
//	VMTEST FAIL name: reason     (a name may fail more than once)
//	VMTEST DONE                  the scenarios ran to their end
//
// It returns the INFO facts.
func reportResults(t *testing.T, lines []string) (info map[string]string) {
	info = map[string]string{}
	var names []string
	failures := map[string][]string{}
	done := false
	for _, line := range lines {
		i := strings.Index(line, "VMTEST ")
		if i < 0 {
			continue
		}
		fields := strings.SplitN(line[i+len("VMTEST "):], " ", 2)
		rest := ""
		if len(fields) == 2 {
			rest = fields[1]
		}
		switch fields[0] {
		case "INFO":
			k, v, _ := strings.Cut(rest, "=")
			info[k] = v
		case "PASS":
			names = appendNew(names, rest)
		case "FAIL":
			name, reason, _ := strings.Cut(rest, ": ")
			names = appendNew(names, name)
			failures[name] = append(failures[name], reason)
		case "DONE":
			done = true
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			for _, reason := range failures[name] {
				t.Error(reason)
			}
		})
	}
	if len(names) == 0 {
		t.Error("the guest reported no scenario results")
	}
	if !done {
		t.Error("the guest did not reach VMTEST DONE (crash, panic or timeout: see the guest log above)")
	}
	return info
}

func appendNew(names []string, name string) []string {
	for _, n := range names {
		if n == name {
			return names
		}
	}
	return append(names, name)
}

// countCopyCommands counts the NVMe Copy commands QEMU's controller
// received: one pci_nvme_copy event per command (its source ranges log
// pci_nvme_copy_source_range, completions pci_nvme_copy_out).
func countCopyCommands(t *testing.T, trace string) int {
	data, err := os.ReadFile(trace)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "pci_nvme_copy ") {
			n++
		}
	}
	return n
}

func mustRead(t *testing.T, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
