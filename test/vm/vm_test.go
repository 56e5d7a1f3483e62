//go:build vmtest

package vm

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blkcopy/blkcopy/internal/copypath"
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
	// throttleBPS caps the drive's reads and writes together, in bytes
	// per second (0: no cap).
	throttleBPS int64
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
	// T is throttled (QEMU's block throttling, which the device's own Copy
	// I/O passes through too): a copy on it takes seconds whatever the
	// kernel or path, so the interrupt scenario's signal lands mid-copy.
	{id: "T", ctrl: "nvme-t", nsid: 1, size: 64 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7,
		throttleBPS: 8 * mib},
	// N's controller advertises Copy but the namespace cannot (MSSRL=0).
	{id: "N", ctrl: "nvme-n", nsid: 1, size: 32 * mib, lbs: 512, mssrl: 0, mcl: 0, msrc: 0},
	// L and M back the Linux SCSI target's iblock LUs (guest/scsi.sh):
	// real block devices under LIO, so its forward copy loop meets real
	// overlap. Namespace IDs 5 and 6: QEMU's read trace names no
	// controller, and host_reads_in_trace counts namespace 2's reads (B).
	{id: "L", ctrl: "nvme-l", nsid: 5, size: 128 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7},
	{id: "M", ctrl: "nvme-l", nsid: 6, size: 128 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7},
}

// The host_reads scenario copies hostReadLen bytes within namespace B (the
// only namespace 2, so QEMU's read trace, which names no controller, tells
// its reads apart) and nothing else reads that source range.
const (
	hostReadSrc = 16 * mib
	hostReadDst = 40 * mib
	hostReadLen = 24 * mib
	// hostReadCanary is what the canary reads of the source (once, to
	// poison the destination with its complement; the read-back reads
	// only the destination): one unit (MSSRL blocks of B or
	// copy_max_bytes: 128 KiB here), capped at 64 KiB.
	hostReadCanary = copypath.CanaryMax
)

// The sparse_restore scenario restores an image of sparseLen bytes onto
// namespace B at sparseDst (below host_reads' ranges).
const (
	sparseDst = 1 * mib
	sparseLen = 12 * mib
)

func blkdebugRule(event string, offset int64) string {
	return fmt.Sprintf("[inject-error]\nevent = %q\nerrno = \"5\"\nsector = \"%d\"\nonce = \"off\"\n\n",
		event, offset/512)
}

// Modules the scenarios need; their dependencies come along.
// The SCSI ones: the Linux SCSI target (LIO) with its block and file
// backstores, tcm_loop and iSCSI (iscsi_target_mod) to export its LUs to
// the guest itself, the iSCSI initiator (iscsi_tcp, which needs crc32c),
// and the sd driver to see them.
var guestModules = []string{"nvme", "null_blk", "loop", "crc32c_generic", "ext4",
	"configfs", "target_core_iblock", "target_core_file", "tcm_loop",
	"iscsi_target_mod", "iscsi_tcp", "sd_mod"}

// iscsistart is open-iscsi's one-shot login (the daemonless one initramfs
// boots use), for the iSCSI scenario.
const iscsistart = "/usr/sbin/iscsistart"

var moduleParams = map[string]string{
	// One 1 GiB device with 4096-byte blocks for `blkcopy limits`.
	"null_blk": "nr_devices=1 bs=4096 gb=1",
}

// kernelCmdline passes moduleParams on the kernel command line as well,
// where built-in drivers (the seed kernels build everything in) read them;
// insmod never runs for those.
func kernelCmdline() string {
	var b strings.Builder
	for _, mod := range slices.Sorted(maps.Keys(moduleParams)) {
		for _, kv := range strings.Fields(moduleParams[mod]) {
			fmt.Fprintf(&b, " %s.%s", mod, kv)
		}
	}
	return b.String()
}

// guestKernel is one kernel the suite boots, and what to expect of it:
//
//	debian    Debian's kernel: no copy offload in the kernel
//	fixed     the seed kernel with the copy offload series and its fixes:
//	          every aligned same-disk copy is offloaded by the kernel
//	faithful  the series as posted: copy_file_range reports success while
//	          the device rejects every Copy; the canary must catch it
//	fixed-tcp the fixed seed kernel with NVMe/TCP (test/vm/seed-tcp.sh): the
//	          fabric scenarios alone, on a namespace exported by the
//	          kernel's NVMe target over 127.0.0.1
//	custom    BLKCOPY_VM_KERNEL: expectations follow its sysfs limits
type guestKernel struct {
	name, kind      string
	kernel, modules string // modules "" = drivers built in
}

// guestKernels lists the kernels to boot: BLKCOPY_VM_KERNEL alone when
// set, else Debian's and the two seed kernels that
// ../shared/seed-kernel/build.sh leaves in BLKCOPY_SEED_KERNEL_DIR
// (default ~/.cache/blkcopy-seed-kernel).
func guestKernels(t *testing.T) []guestKernel {
	if k := os.Getenv("BLKCOPY_VM_KERNEL"); k != "" {
		kind := cmp.Or(os.Getenv("BLKCOPY_VM_KERNEL_KIND"), "custom")
		return []guestKernel{{name: kind, kind: kind, kernel: k, modules: os.Getenv("BLKCOPY_VM_MODULES")}}
	}
	seed := SeedKernelDir()
	kernel, modules, err := DebianKernel("./fetch.sh")
	if err != nil {
		t.Fatal(err)
	}
	ks := []guestKernel{{name: "debian", kind: "debian", kernel: kernel, modules: modules}}
	for _, kind := range []string{"fixed", "faithful", "fixed-tcp"} {
		ks = append(ks, guestKernel{name: "seed-" + kind, kind: kind, kernel: filepath.Join(seed, "bzImage-"+kind)})
	}
	return ks
}

func TestVM(t *testing.T) {
	qemu, bins := rigSetup(t)
	bins["bin/nvmecopy"] = mustRead(t, goBuild(t, t.TempDir(), "nvmecopy", "./nvmecopy"))
	for _, k := range guestKernels(t) {
		t.Run(k.name, func(t *testing.T) {
			requireKernel(t, k)
			runVM(t, qemu, k, bins)
		})
	}
}

// rigSetup finds QEMU and the static busybox, skipping the test without
// them, and builds blkcopy: the guest's binaries, by initramfs path.
func rigSetup(t *testing.T) (qemu string, bins map[string][]byte) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not found; run test/vm/fetch.sh (apt-get install qemu-system-x86 busybox-static)")
	}
	busybox, err := StaticBusybox()
	if err != nil {
		t.Skip(err)
	}
	return qemu, map[string][]byte{
		"bin/busybox": mustRead(t, busybox),
		"bin/blkcopy": mustRead(t, buildBlkcopy(t, t.TempDir())),
	}
}

// requireKernel skips (or, with BLKCOPY_VM_REQUIRE_SEED, fails) a kernel's
// subtest when its image is not there.
func requireKernel(t *testing.T, k guestKernel) {
	if _, err := os.Stat(k.kernel); err != nil {
		how := "../shared/seed-kernel/build.sh (about 9 minutes once)"
		if k.kind == "fixed-tcp" {
			how = "../shared/seed-kernel/build.sh, then test/vm/seed-tcp.sh (about 5 minutes once more)"
		}
		if os.Getenv("BLKCOPY_VM_REQUIRE_SEED") != "" {
			t.Fatalf("kernel %s: %v (build it with %s)", k.kernel, err, how)
		}
		t.Skipf("no %s kernel at %s: build it with %s", k.name, k.kernel, how)
	}
}

// writeGuestInitramfs writes to path the guest's initramfs: bins, the
// guest scripts, k's modules, and files (initramfs path -> content), among
// them guest/env.
func writeGuestInitramfs(t *testing.T, path string, k guestKernel, bins map[string][]byte, files map[string]string) {
	rd := &Initramfs{}
	for _, name := range slices.Sorted(maps.Keys(bins)) {
		rd.AddFile(name, 0o755, bins[name])
	}
	rd.AddSymlink("bin/sh", "busybox")
	for _, d := range []string{"proc", "sys", "dev", "tmp", "mnt"} {
		rd.AddDir(d)
	}
	addGuestScripts(t, rd)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		rd.AddFile(name, 0o644, []byte(files[name]))
	}
	addModules(t, rd, k.modules)
	if k.modules != "" {
		// Only a kernel with modules has LIO here (the seed kernels are
		// built without it).
		if err := rd.AddDynamic(iscsistart); err != nil {
			t.Logf("no iSCSI initiator for the guest (%v): the iSCSI scenario is left out; test/vm/fetch.sh packages installs open-iscsi", err)
		}
	}
	writeInitramfs(t, rd, path)
}

// runVM boots one kernel with fresh disks, runs every scenario and turns
// the guest's report into subtests.
func runVM(t *testing.T, qemu string, k guestKernel, bins map[string][]byte) {
	work := t.TempDir()
	initrd := filepath.Join(work, "initramfs.cpio")
	writeGuestInitramfs(t, initrd, k, bins, map[string]string{"guest/env": guestEnv(k.kind, disks)})

	trace := filepath.Join(work, "nvme-trace.log")
	args := qemuArgs(t, work, k.kernel, initrd, trace, disks)

	start := time.Now()
	lines := boot(t, qemu, args)
	t.Logf("VM ran %s", time.Since(start).Round(100*time.Millisecond))

	info := reportResults(t, lines)
	copies := countCopyCommands(t, trace)
	if info["host_reads_checked"] == "1" {
		t.Run("host_reads_in_trace", func(t *testing.T) {
			read := tracedReads(t, trace, 2, hostReadSrc, hostReadLen)
			t.Logf("NVMe Read commands fetched %d bytes of the %d-byte source range for the host during an offloaded copy", read, hostReadLen)
			if read > hostReadCanary+hostReadLen/10 {
				t.Errorf("the host read %d bytes of the source range during an offloaded copy of %d (allowed: the %d-byte canary + 10%%)", read, hostReadLen, hostReadCanary)
			}
		})
	}
	if info["sparse_restored"] == "1" {
		t.Run("write_zeroes_in_trace", func(t *testing.T) {
			cmds, bytes := tracedWriteZeroes(t, trace, 2, sparseDst, sparseLen)
			t.Logf("QEMU traced %d NVMe Write Zeroes commands (%d bytes) in the restored range", cmds, bytes)
			// The image's holes and its zero run: at least 8 of its 12 MiB.
			if bytes < sparseLen*2/3 {
				t.Errorf("NVMe Write Zeroes covered %d bytes of the %d-byte restored range; want its holes and zero runs (at least %d)", bytes, sparseLen, sparseLen*2/3)
			}
		})
	}
	if info["scsi_commands"] != "" {
		t.Logf("blkcopy reported %s EXTENDED COPY commands to LIO", info["scsi_commands"])
	}
	if k.kind == "fixed-tcp" {
		// The fabric scenarios alone: every Copy QEMU saw came from the
		// NVMe target, which received blkcopy's over the link.
		t.Run("nvme_copy_commands", func(t *testing.T) {
			t.Logf("QEMU traced %d NVMe Copy commands from the NVMe target's copies", copies)
			if copies == 0 {
				t.Errorf("blkcopy's copies over NVMe/TCP sent no NVMe Copy command to the namespace behind the target")
			}
		})
		return
	}
	if os.Getenv("BLKCOPY_VM_ONLY") != "" {
		return
	}
	t.Run("nvme_copy_commands", func(t *testing.T) {
		// The guest's nvmecopy probe sent probe_copies Copy commands by
		// passthrough, blkcopy's NVMe path nvme_commands (the sum of what
		// its copies reported); the kernel's copy offload accounts for the
		// rest.
		probe, err := strconv.Atoi(info["probe_copies"])
		if err != nil {
			t.Fatalf("the guest reported no probe_copies: %v", err)
		}
		passthru, _ := strconv.Atoi(cmp.Or(info["nvme_commands"], "0"))
		kernelCopies := copies - probe - passthru
		t.Logf("QEMU traced %d NVMe Copy commands: %d from the probe, %d from blkcopy's NVMe path, %d from the kernel (%s kernel)",
			copies, probe, passthru, kernelCopies, k.kind)
		offload := info["offload"] == "1"
		switch {
		case copies < probe:
			t.Errorf("QEMU traced %d Copy commands, fewer than the probe's %d: is the pci_nvme_copy trace working?", copies, probe)
		case kernelCopies < 0:
			t.Errorf("QEMU traced %d Copy commands, fewer than the probe's %d plus the %d blkcopy reported", copies, probe, passthru)
		case k.kind == "fixed" && kernelCopies == 0:
			t.Errorf("the fixed seed kernel offloads, but blkcopy's copy_file_range copies sent no NVMe Copy command")
		case k.kind == "debian" && kernelCopies != 0:
			t.Errorf("Debian's kernel has no copy offload, yet %d Copy commands came from neither the probe nor blkcopy's NVMe path", kernelCopies)
		case k.kind == "custom" && offload && kernelCopies == 0:
			t.Errorf("kernel reports copy offload but blkcopy's copies sent no NVMe Copy command")
		case k.kind == "custom" && !offload && kernelCopies != 0:
			t.Errorf("kernel has no copy offload but %d Copy commands came from neither the probe nor blkcopy's NVMe path", kernelCopies)
		}
	})
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
func guestEnv(kind string, ds []disk) string {
	var b strings.Builder
	fmt.Fprintf(&b, "KERNEL_KIND=%s\n", kind)
	// BLKCOPY_VM_ONLY=scsi runs only the SCSI scenarios (while working
	// on them: a boot with everything takes minutes).
	fmt.Fprintf(&b, "ONLY=%s\n", os.Getenv("BLKCOPY_VM_ONLY"))
	for _, d := range ds {
		fmt.Fprintf(&b, "DISK_%s='%s %d'\n", d.id, d.ctrl, d.nsid)
	}
	fmt.Fprintf(&b, "ERR_READ_OFFSET=%d\nERR_WRITE_OFFSET=%d\n", errReadOffset, errWriteOffset)
	fmt.Fprintf(&b, "HOSTREAD_SRC=%d\nHOSTREAD_DST=%d\nHOSTREAD_LEN=%d\n", hostReadSrc, hostReadDst, hostReadLen)
	fmt.Fprintf(&b, "SPARSE_DST=%d\nSPARSE_LEN=%d\n", sparseDst, sparseLen)
	fmt.Fprintf(&b, "CANARY_MAX=%d\n", copypath.CanaryMax)
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

// qemuArgs boots kernel with ds as NVMe namespaces, their images in work:
// fresh zero images, unless one is already there (the power-loss test
// boots again on the images a killed VM left).
func qemuArgs(t *testing.T, work, kernel, initrd, trace string, ds []disk) []string {
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd,
		// panic=-1 with -no-reboot turns a guest panic into QEMU exiting.
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" + kernelCmdline(),
		// Copy commands (counted against what blkcopy reports) and Read
		// commands (what the host read during an offloaded copy). One
		// -trace option: each one's file= would reset the others'.
		"-trace", "events=" + traceEvents(t, work) + ",file=" + trace,
	}
	ctrls := map[string]bool{}
	for _, d := range ds {
		img := filepath.Join(work, d.id+".img")
		if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, d.size); err != nil {
				t.Fatal(err)
			}
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
		drive := fmt.Sprintf("file=%s,if=none,id=drive-%s,format=raw", file, d.id)
		if d.throttleBPS > 0 {
			drive += fmt.Sprintf(",throttling.bps-total=%d", d.throttleBPS)
		}
		args = append(args,
			"-drive", drive,
			"-device", fmt.Sprintf("nvme-ns,drive=drive-%s,bus=%s,nsid=%d,"+
				"logical_block_size=%d,physical_block_size=%d,mssrl=%d,mcl=%d,msrc=%d",
				d.id, d.ctrl, d.nsid, d.lbs, d.lbs, d.mssrl, d.mcl, d.msrc))
	}
	return args
}

// boot runs the VM to its end and returns the guest's console lines,
// logging each as it arrives so a hung guest shows how far it got.
func boot(t *testing.T, qemu string, args []string) []string {
	lines, _ := bootWatch(t, qemu, args, nil)
	return lines
}

// bootWatch is boot, with watch called on each console line as it
// arrives, and given kill, which kills QEMU (SIGKILL: the guest gets no
// shutdown, a power cut as far as it can tell) and may be called later,
// from any goroutine. killed reports whether kill ended the VM.
func bootWatch(t *testing.T, qemu string, args []string, watch func(line string, kill func())) (lines []string, killed bool) {
	timeout := 15 * time.Minute
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
	var cut atomic.Bool
	kill := func() {
		if cut.CompareAndSwap(false, true) {
			t.Log("host: killing QEMU (power cut)")
			cmd.Process.Kill()
		}
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		lines = append(lines, line)
		t.Log("guest: " + line)
		if watch != nil {
			watch(line, kill)
		}
	}
	err = cmd.Wait()
	if cut.Load() {
		return lines, true
	}
	if ctx.Err() != nil {
		t.Fatalf("VM did not finish within %s (BLKCOPY_VM_TIMEOUT)", timeout)
	}
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	return lines, false
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

func traceEvents(t *testing.T, work string) string {
	p := filepath.Join(work, "trace-events")
	if err := os.WriteFile(p, []byte("pci_nvme_copy*\npci_nvme_read\npci_nvme_write\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tracedReads sums the bytes of QEMU-traced NVMe Read commands on
// namespace nsid (512-byte blocks) that fall within [off, off+n):
//
//	pci_nvme_read cid 5 nsid 2 nlb 256 count 131072 lba 0x8000
func tracedReads(t *testing.T, trace string, nsid int, off, n int64) int64 {
	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, "pci_nvme_read ")
		if !ok {
			continue
		}
		var cid, ns int
		var nlb, count int64
		var lba uint64
		if _, err := fmt.Sscanf(rest, "cid %d nsid %d nlb %d count %d lba 0x%x", &cid, &ns, &nlb, &count, &lba); err != nil {
			t.Fatalf("unexpected pci_nvme_read trace line %q: %v", line, err)
		}
		if ns != nsid {
			continue
		}
		lo, hi := max(int64(lba)*512, off), min((int64(lba)+nlb)*512, off+n)
		if lo < hi {
			sum += hi - lo
		}
	}
	return sum
}

// tracedWriteZeroes counts the NVMe Write Zeroes commands on namespace nsid
// (512-byte blocks) and the bytes they cover within [off, off+n). QEMU 7.2
// has no pci_nvme_write_zeroes event (later versions do); it logs Write
// Zeroes as a pci_nvme_write with the opcode's name:
//
//	pci_nvme_write cid 3 opname 'NVME_NVM_CMD_WRITE_ZEROES' nsid 2 nlb 2048 count 0 lba 0x800
func tracedWriteZeroes(t *testing.T, trace string, nsid int, off, n int64) (cmds int, sum int64) {
	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, "pci_nvme_write ")
		if !ok || !strings.Contains(rest, "WRITE_ZEROES") {
			continue
		}
		var cid, ns int
		var op string
		var nlb, count int64
		var lba uint64
		if _, err := fmt.Sscanf(rest, "cid %d opname %s nsid %d nlb %d count %d lba 0x%x", &cid, &op, &ns, &nlb, &count, &lba); err != nil {
			t.Fatalf("unexpected pci_nvme_write trace line %q: %v", line, err)
		}
		if ns != nsid {
			continue
		}
		lo, hi := max(int64(lba)*512, off), min((int64(lba)+nlb)*512, off+n)
		if lo < hi {
			cmds++
			sum += hi - lo
		}
	}
	return cmds, sum
}

func mustRead(t *testing.T, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
