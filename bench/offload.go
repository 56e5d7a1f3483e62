package main

// The offload benchmark (--offload): blkcopy's offloaded copies against
// its own onload copy, dd and the best each kernel offers by other means,
// inside a QEMU guest with emulated NVMe namespaces. See bench/README.md.

import (
	"bufio"
	"context"
	"crypto/md5"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blkcopy/blkcopy/internal/size"
	"github.com/blkcopy/blkcopy/test/vm"
)

// nsShape is one NVMe namespace's block size and Copy limits: MSSRL blocks
// per source range, MCL blocks per command, MSRC+1 ranges per command.
type nsShape struct {
	lbs, mssrl, mcl, msrc int64
}

// defaultShapes: the rig's usual limits (64 KiB per range with 512 B
// blocks) and ranges 16 times larger, so the result is not tied to one
// limit.
const defaultShapes = "mssrl=128,mcl=2048,msrc=127;mssrl=2048,mcl=16384,msrc=15"

// nvmetShape is what the initiator's namespace allows over NVMe/TCP: the
// Copy limits the seed series' NVMe target advertises whatever the
// backing namespace's (nvmet_set_copy_limits: MSSRL 65535, MCL 2^32-1,
// MSRC 255), in the backing namespace's block size.
func nvmetShape(lbs int64) nsShape {
	return nsShape{lbs: lbs, mssrl: 65535, mcl: 1<<32 - 1, msrc: 255}
}

func (s nsShape) String() string {
	return fmt.Sprintf("mssrl=%d,mcl=%d,msrc=%d", s.mssrl, s.mcl, s.msrc)
}

// What one Copy command may carry, as blkcopy's NVMe path reads it
// (internal/nvme: Namespace.RangeBlocks, MaxRanges, CommandBlocks).
func (s nsShape) rangeBlocks() int64 { return min(s.mssrl, s.mcl) }
func (s nsShape) maxRanges() int64   { return s.msrc + 1 }
func (s nsShape) cmdBlocks() int64   { return min(s.mcl, s.maxRanges()*s.rangeBlocks()) }

// parseShapes reads --shapes: namespaces separated by ';', each
// key=value pairs of mssrl, mcl, msrc and optionally lbs (default 512).
func parseShapes(spec string) ([]nsShape, error) {
	var shapes []nsShape
	for _, one := range strings.Split(spec, ";") {
		if one = strings.TrimSpace(one); one == "" {
			continue
		}
		s := nsShape{lbs: 512}
		seen := map[string]bool{}
		for _, kv := range strings.Split(one, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			n, err := strconv.ParseInt(v, 10, 64)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("--shapes %q: want key=number, got %q", one, kv)
			}
			switch k {
			case "lbs":
				s.lbs = n
			case "mssrl":
				s.mssrl = n
			case "mcl":
				s.mcl = n
			case "msrc":
				s.msrc = n
			default:
				return nil, fmt.Errorf("--shapes %q: unknown key %q (want lbs, mssrl, mcl, msrc)", one, k)
			}
			seen[k] = true
		}
		// QEMU 7.2's nvme-ns: MSSRL is 16 bits, MSRC 8 bits, MSSRL <= MCL.
		switch {
		case !seen["mssrl"] || !seen["mcl"] || !seen["msrc"]:
			return nil, fmt.Errorf("--shapes %q: give mssrl, mcl and msrc", one)
		case s.lbs != 512 && s.lbs != 4096:
			return nil, fmt.Errorf("--shapes %q: lbs must be 512 or 4096", one)
		case s.mssrl < 1 || s.mssrl > 65535 || s.msrc > 255 || s.mcl < s.mssrl || s.mcl > 1<<32-1:
			return nil, fmt.Errorf("--shapes %q: want 1 <= mssrl <= 65535, mssrl <= mcl < 2^32, msrc <= 255", one)
		}
		shapes = append(shapes, s)
	}
	if len(shapes) == 0 {
		return nil, fmt.Errorf("--shapes: no namespace given")
	}
	return shapes, nil
}

// offloadKernel is one kernel the benchmark boots and what runs on it.
type offloadKernel struct {
	key, label      string
	kernel, modules string // modules "" = drivers built in
	tools           []string
	path            string // the offload_path blkcopy must report
	reference       string // the tool the offload is held against besides onload
	blkcopyArgs     string // more flags for the offloaded blkcopy (e.g. --offload-path nvme)
	// fabric: each namespace is exported by the guest's NVMe target over
	// TCP on its loopback interface and copied through the initiator's
	// namespace (test/vm/guest/nvmet.sh), a drive at the end of a link.
	fabric bool
}

// Guest tools, in the order each round runs them.
var toolNames = map[string]string{
	"blkcopy": "blkcopy (auto: offload)",
	"onload":  "blkcopy --mode onload",
	"dd":      "dd bs=4M direct",
	"cfr":     "copy_file_range, 1 call",
	"nvme":    "nvme copy loop",
}

// markerNSID is the namespace of the marker Copy commands that bracket each
// timed copy in QEMU's trace.
const markerNSID = 9

// prepareVM checks for QEMU and a static busybox, makes the work directory
// (in /dev/shm unless --dir) and builds the guest's static programs
// (blkcopy unless --blkcopy, vmhelper, nvmecopy). rc is not 0 when it
// could not.
func (b *bench) prepareVM(root, prefix string) (work string, bins map[string]string, rc int) {
	cfg := &b.cfg
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		fmt.Fprintln(os.Stderr, "bench: qemu-system-x86_64 not found; run test/vm/fetch.sh packages (apt-get install qemu-system-x86 busybox-static)")
		return "", nil, 2
	}
	busybox, err := vm.StaticBusybox()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return "", nil, 2
	}
	if cfg.dir == "" {
		cfg.dir = os.TempDir()
		// Images in memory: the host's disk is not what is measured.
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			cfg.dir = "/dev/shm"
		}
	}
	work, err = os.MkdirTemp(cfg.dir, prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return "", nil, 2
	}
	if cfg.keep {
		b.logf("keeping the images, initramfs and QEMU traces in %s (--keep)", work)
	} else {
		b.cl.add(func() { os.RemoveAll(work) })
	}

	bins = map[string]string{"bin/busybox": busybox}
	builds := []struct{ name, pkg string }{
		{"bin/vmhelper", "./bench/vmhelper"},
		{"bin/nvmecopy", "./test/vm/nvmecopy"},
	}
	if cfg.blkcopy == "" {
		builds = append(builds, struct{ name, pkg string }{"bin/blkcopy", "."})
	} else if err := checkStatic(cfg.blkcopy); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return "", nil, 2
	} else {
		bins["bin/blkcopy"] = cfg.blkcopy
	}
	for _, bld := range builds {
		out := filepath.Join(work, filepath.Base(bld.name))
		cmd := exec.CommandContext(b.ctx, "go", "build", "-o", out, bld.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: go build %s: %v\n%s", bld.pkg, err, msg)
			return "", nil, 2
		}
		bins[bld.name] = out
	}

	return work, bins, 0
}

func (b *bench) runOffload(root string) int {
	cfg := b.cfg
	work, bins, rc := b.prepareVM(root, "blkcopy-offload-")
	if rc != 0 {
		return rc
	}
	rep := &offloadReport{cfg: cfg, blkcopy: cfg.blkcopy}
	if cfg.blkcopy == "" {
		rep.blkcopy = describeTree(root)
	}
	for _, key := range cfg.kernels {
		if b.ctx.Err() != nil {
			break
		}
		k, note := b.resolveKernel(root, key)
		if note != "" {
			rep.notes = append(rep.notes, note)
			b.logf("%s", note)
			continue
		}
		res, err := b.offloadVM(root, work, k, bins)
		if err != nil {
			b.fail("%s: %v", k.label, err)
		}
		if res != nil {
			rep.vms = append(rep.vms, res)
		}
	}
	rep.print(os.Stdout)
	for _, f := range rep.failures {
		b.fail("%s", f)
	}
	switch {
	case b.ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 130
	case len(b.failures) > 0:
		fmt.Fprintf(os.Stderr, "bench: %d copies or checks failed:\n  %s\n", len(b.failures), strings.Join(b.failures, "\n  "))
		return 1
	}
	return 0
}

// describeTree names the commit the work tree's blkcopy was built from.
func describeTree(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "the work tree"
	}
	desc := "the work tree at " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		desc += " with uncommitted changes"
	}
	return desc
}

func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("--blkcopy %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("--blkcopy %s is dynamically linked; the guest has no libc (build it with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// resolveKernel finds a kernel, or says in a note why it is skipped.
func (b *bench) resolveKernel(root, key string) (offloadKernel, string) {
	switch key {
	case "seed":
		path := b.cfg.seedKernel
		if path == "" {
			path = filepath.Join(vm.SeedKernelDir(), "bzImage-fixed")
		}
		if _, err := os.Stat(path); err != nil {
			return offloadKernel{}, fmt.Sprintf("seed kernel skipped: no %s; build it with ../shared/seed-kernel/build.sh "+
				"(about 9 minutes once on 2 cores; or pass --seed-kernel PATH)", path)
		}
		return offloadKernel{key: key, label: "seed kernel (copy offload series + fixes)", kernel: path,
			tools: []string{"blkcopy", "onload", "dd", "cfr"}, path: "copy_file_range", reference: "cfr"}, ""
	case "seed-tcp", "seed-tcp-nvme":
		path := filepath.Join(vm.SeedKernelDir(), "bzImage-fixed-tcp")
		if _, err := os.Stat(path); err != nil {
			return offloadKernel{}, fmt.Sprintf("%s skipped: no %s; build it with test/vm/seed-tcp.sh "+
				"(after ../shared/seed-kernel/build.sh; about 5 minutes once on 2 cores)", key, path)
		}
		k := offloadKernel{key: key, label: "seed kernel + NVMe/TCP (namespaces over a loopback link)", kernel: path,
			tools: []string{"blkcopy", "onload", "dd", "cfr"}, path: "copy_file_range", reference: "cfr", fabric: true}
		if key == "seed-tcp-nvme" {
			k.label = "seed kernel + NVMe/TCP, blkcopy --offload-path nvme (passthrough over the link)"
			k.path, k.blkcopyArgs = "nvme", "--offload-path nvme"
			if _, err := os.Stat(nvmeCLI); err == nil {
				k.tools = append(k.tools, "nvme")
				k.reference = "nvme"
			} else {
				b.logf("no %s: the nvme copy loop is left out (apt-get install nvme-cli)", nvmeCLI)
			}
		}
		return k, ""
	case "debian":
		kernel, modules, err := vm.DebianKernel(filepath.Join(root, "test", "vm", "fetch.sh"))
		if err != nil {
			return offloadKernel{}, fmt.Sprintf("Debian's kernel skipped: %v", err)
		}
		k := offloadKernel{key: key, label: "Debian's kernel " + filepath.Base(kernel), kernel: kernel, modules: modules,
			tools: []string{"blkcopy", "onload", "dd"}, path: "nvme", reference: "nvme"}
		if _, err := os.Stat(nvmeCLI); err == nil {
			k.tools = append(k.tools, "nvme")
		} else {
			k.reference = ""
			b.logf("no %s: the nvme copy loop is left out (apt-get install nvme-cli)", nvmeCLI)
		}
		return k, ""
	}
	return offloadKernel{}, fmt.Sprintf("unknown kernel %q skipped (want seed, seed-tcp, seed-tcp-nvme or debian)", key)
}

const nvmeCLI = "/usr/sbin/nvme"

// vmResult is what one boot measured.
type vmResult struct {
	kernel  offloadKernel
	release string
	shapes  []*shapeResult
	notes   []string
	elapsed time.Duration
	startup map[string]float64 // fastest of three starts, seconds, by name
}

type shapeResult struct {
	shape   nsShape
	info    map[string]string // BENCH INFO of the namespace
	runs    []*copyRun
	nvmeCmd int // Copy commands in one nvme copy loop
}

// copyRun is one timed copy in the guest.
type copyRun struct {
	k, shape, round int
	tool            string
	rc              int
	sumOK           bool
	secs            float64
	rdIOs, rdSect   int64 // /sys/block/DEV/stat deltas over the copy
	wrIOs, wrSect   int64
	summary         *blkcopySummary // blkcopy's --json, for blkcopy and onload
	calls           int             // copy_file_range calls (cfr)
	errText         string
	trace           traceCounts
}

type blkcopySummary struct {
	Bytes                 int64  `json:"bytes"`
	OffloadedBytes        int64  `json:"offloaded_bytes"`
	OnloadedBytes         int64  `json:"onloaded_bytes"`
	OffloadPath           string `json:"offload_path"`
	OffloadRequests       int64  `json:"offload_requests"`
	FallbackReason        string `json:"fallback_reason"`
	OffloadDisabledReason string `json:"offload_disabled_reason"`
	DurationNS            int64  `json:"duration_ns"`
	Error                 string `json:"error"`
}

// offloadVM boots kernel k once with one namespace per shape and returns
// the guest's measurements.
func (b *bench) offloadVM(root, work string, k offloadKernel, bins map[string]string) (*vmResult, error) {
	cfg := b.cfg
	dir, err := os.MkdirTemp(work, k.key+"-")
	if err != nil {
		return nil, err
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	}
	res := &vmResult{kernel: k, startup: map[string]float64{}}

	rd := &vm.Initramfs{}
	for name, path := range bins {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		rd.AddFile(name, 0o755, data)
	}
	rd.AddSymlink("bin/sh", "busybox")
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		rd.AddDir(d)
	}
	script, err := os.ReadFile(filepath.Join(root, "bench", "guest", "offload.sh"))
	if err != nil {
		return nil, err
	}
	rd.AddFile("init", 0o755, script)
	lib, err := os.ReadFile(filepath.Join(root, "test", "vm", "guest", "nvmedev.sh"))
	if err != nil {
		return nil, err
	}
	rd.AddFile("guest/nvmedev.sh", 0o644, lib)
	if err := addModules(rd, k.modules); err != nil {
		return nil, err
	}
	if contains(k.tools, "nvme") {
		if err := rd.AddDynamic(nvmeCLI); err != nil {
			return nil, err
		}
	}

	var env strings.Builder
	fmt.Fprintf(&env, "KERNEL_KIND=%s\nSIZE=%d\nRUNS=%d\nWARMUP=%d\nTOOLS='%s'\nMARK='bench-m %d'\n",
		k.key, cfg.size, cfg.runs, cfg.warmup, strings.Join(k.tools, " "), markerNSID)
	zeros := md5.Sum(make([]byte, 1<<20))
	fmt.Fprintf(&env, "TAIL_MD5=%s\n", hex.EncodeToString(zeros[:]))
	fmt.Fprintf(&env, "BLKCOPY_ARGS='%s'\n", k.blkcopyArgs)
	if k.fabric {
		env.WriteString("FABRIC=1\n")
		lib, err := os.ReadFile(filepath.Join(root, "test", "vm", "guest", "nvmet.sh"))
		if err != nil {
			return nil, err
		}
		rd.AddFile("guest/nvmet.sh", 0o644, lib)
	}
	var shapeIDs []string
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		"-kernel", k.kernel,
	}
	for i, s := range cfg.shapes {
		id := i + 1
		shapeIDs = append(shapeIDs, strconv.Itoa(id))
		img := filepath.Join(dir, fmt.Sprintf("ns%d.img", id))
		sum, err := sourceImage(img, cfg.size, 2*cfg.size+1<<20, uint64(id))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&env, "SHAPE_%d='bench-%d %d'\nSRC_MD5_%d=%s\n", id, id, id, id, sum)
		args = append(args, nvmeArgs(fmt.Sprintf("bench-%d", id), id, img, s)...)
		sr := &shapeResult{shape: s}
		if contains(k.tools, "nvme") {
			loopShape := s
			if k.fabric {
				loopShape = nvmetShape(s.lbs)
			}
			loop, n := nvmeLoopScript(loopShape, cfg.size)
			rd.AddFile(fmt.Sprintf("guest/nvmeloop-%d.sh", id), 0o755, []byte(loop))
			sr.nvmeCmd = n
		}
		res.shapes = append(res.shapes, sr)
	}
	fmt.Fprintf(&env, "SHAPES='%s'\n", strings.Join(shapeIDs, " "))
	mark := filepath.Join(dir, "marker.img")
	if err := os.WriteFile(mark, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(mark, 1<<20); err != nil {
		return nil, err
	}
	args = append(args, nvmeArgs("bench-m", markerNSID, mark, nsShape{lbs: 512, mssrl: 128, mcl: 128, msrc: 0})...)
	rd.AddFile("guest/env", 0o644, []byte(env.String()))

	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeFile(initrd, rd); err != nil {
		return nil, err
	}
	events := filepath.Join(dir, "trace-events")
	if err := os.WriteFile(events, []byte("pci_nvme_copy\npci_nvme_read\n"), 0o644); err != nil {
		return nil, err
	}
	trace := filepath.Join(dir, "trace.log")
	args = append(args, "-initrd", initrd, "-trace", "events="+events+",file="+trace)

	b.logf("%s: booting %s with %d namespace(s), %s per copy, %d rounds (%d warm-up), tools: %s",
		k.label, k.kernel, len(cfg.shapes), size.Format(cfg.size), cfg.warmup+cfg.runs, cfg.warmup, strings.Join(k.tools, ", "))
	start := time.Now()
	lines, noise, bootErr := b.boot(args)
	res.elapsed = time.Since(start)
	if noise.qemuSecs > 0 {
		res.notes = append(res.notes, fmt.Sprintf("another QEMU ran beside this VM for about %d s of its %s: these numbers are noisy",
			noise.qemuSecs, res.elapsed.Round(time.Second)))
	}
	if noise.otherCPU > 0.05*res.elapsed.Seconds() {
		res.notes = append(res.notes, fmt.Sprintf("other processes on the host used %.0f CPU-seconds during this VM's %s (%.0f%% of one core): the guest got less than two cores",
			noise.otherCPU, res.elapsed.Round(time.Second), 100*noise.otherCPU/res.elapsed.Seconds()))
	}
	b.logf("%s: the VM ran %s", k.label, res.elapsed.Round(100*time.Millisecond))
	marks, err := parseGuest(res, lines)
	err = errors.Join(bootErr, err)
	traceErr := err // a run cut short leaves the trace unattributable
	if err == nil {
		if traceErr = attributeTrace(trace, res, marks); traceErr != nil {
			res.notes = append(res.notes, "QEMU trace not used: "+traceErr.Error())
		}
	}
	if traceErr != nil {
		for _, s := range res.shapes {
			for _, r := range s.runs {
				r.trace = traceCounts{copies: -1}
			}
		}
	}
	return res, err
}

func contains(v []string, s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

// nvmeArgs attaches img as namespace nsid of its own controller.
func nvmeArgs(ctrl string, nsid int, img string, s nsShape) []string {
	// cache=unsafe: the guest's flushes do not reach the host's disk (the
	// images are scratch); discard=unmap: zeroing a range frees it.
	return []string{
		"-device", fmt.Sprintf("nvme,serial=%s,id=%s", ctrl, ctrl),
		"-drive", fmt.Sprintf("file=%s,if=none,id=drive-%s,format=raw,cache=unsafe,discard=unmap", img, ctrl),
		"-device", fmt.Sprintf("nvme-ns,drive=drive-%s,bus=%s,nsid=%d,logical_block_size=%d,physical_block_size=%d,mssrl=%d,mcl=%d,msrc=%d",
			ctrl, ctrl, nsid, s.lbs, s.lbs, s.mssrl, s.mcl, s.msrc),
	}
}

// sourceImage makes a sparse image of imgSize bytes whose first n bytes
// are random, and returns their md5.
func sourceImage(path string, n, imgSize int64, seed uint64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Truncate(imgSize); err != nil {
		return "", err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), 'o', 'f', 'f', byte(time.Now().UnixNano())})
	h := md5.New()
	buf := make([]byte, fillBlock)
	for off := int64(0); off < n; off += fillBlock {
		p := buf[:min(fillBlock, n-off)]
		_, _ = rng.Read(p)
		h.Write(p)
		if _, err := f.WriteAt(p, off); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// nvmeLoopScript is the guest script that copies the range the way a user
// of nvme-cli would: one `nvme copy` per command, each command carrying the
// ranges blkcopy's NVMe path puts in one (MSSRL blocks each, up to MSRC+1
// of them and MCL blocks in all), then one flush, as blkcopy and dd sync
// at the end. It returns the script and its number of Copy commands.
func nvmeLoopScript(s nsShape, n int64) (string, int) {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by go run ./bench --offload: nvme-cli copies the benchmark's range.\n")
	b.WriteString("set -e\nexport LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu\nexec >/dev/null\ndev=$1\n")
	blocks := n / s.lbs
	dst := blocks // the destination range starts at byte n
	cmds := 0
	for done := int64(0); done < blocks; {
		cmd := min(s.cmdBlocks(), blocks-done)
		var slbs, nlbs []string
		for c := int64(0); c < cmd; {
			m := min(s.rangeBlocks(), cmd-c)
			slbs = append(slbs, strconv.FormatInt(done+c, 10))
			nlbs = append(nlbs, strconv.FormatInt(m-1, 10)) // 0-based
			c += m
		}
		fmt.Fprintf(&b, "nvme copy \"$dev\" --sdlba=%d --slbs=%s --blocks=%s\n", dst+done, strings.Join(slbs, ","), strings.Join(nlbs, ","))
		cmds++
		done += cmd
	}
	b.WriteString("nvme flush \"$dev\"\n")
	return b.String(), cmds
}

// addModules puts the NVMe driver and what it depends on into the
// initramfs, in load order, as test/vm does ("" = built in).
func addModules(rd *vm.Initramfs, dir string) error {
	if dir == "" {
		return nil
	}
	mods, err := vm.ModuleOrder(dir, []string{"nvme"})
	if err != nil {
		return err
	}
	var order strings.Builder
	for _, m := range mods {
		data, err := vm.ReadModule(m.Path)
		if err != nil {
			return err
		}
		rd.AddFile("modules/"+m.Name+".ko", 0o644, data)
		fmt.Fprintf(&order, "%s.ko\n", m.Name)
	}
	rd.AddFile("modules/order", 0o644, []byte(order.String()))
	return nil
}

func writeFile(path string, w io.WriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// bootNoise is what else ran on the host during a VM.
type bootNoise struct {
	qemuSecs int     // about how long another QEMU ran
	otherCPU float64 // CPU-seconds used by processes other than the VM and the bench
}

// boot runs QEMU to its end and returns the guest's console lines, logging
// each to stderr as it arrives, and what else ran meanwhile.
func (b *bench) boot(args []string) (lines []string, noise bootNoise, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.vmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, noise, err
	}
	cmd.Stderr = os.Stderr
	busy0, self0 := hostBusy(), selfCPU()
	if err := cmd.Start(); err != nil {
		return nil, noise, err
	}
	// The machine has two cores: another VM running beside this one
	// halves what the guest gets. Look every two seconds and say so.
	others := make(chan int, 1)
	stopWatch := make(chan struct{})
	go func() {
		seen := 0
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopWatch:
				others <- seen
				return
			case <-t.C:
				if otherQEMUs(cmd.Process.Pid) > 0 {
					seen++
				}
			}
		}
	}()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		lines = append(lines, line)
		fmt.Fprintln(os.Stderr, "guest: "+line)
	}
	err = cmd.Wait()
	close(stopWatch)
	noise.qemuSecs = 2 * <-others
	// What the rest of the host used meanwhile: all CPU time spent, less
	// QEMU's and this process's own.
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && busy0 >= 0 {
		qemu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		noise.otherCPU = max(0, hostBusy()-busy0-qemu-(selfCPU()-self0))
	}
	switch {
	case b.ctx.Err() != nil:
		return lines, noise, b.ctx.Err()
	case ctx.Err() != nil:
		return lines, noise, fmt.Errorf("the VM did not finish within %s (--vm-timeout)", b.cfg.vmTimeout)
	case err != nil:
		return lines, noise, fmt.Errorf("qemu: %w", err)
	}
	return lines, noise, nil
}

// hostBusy is the CPU time all processes of the host have used since boot,
// in seconds (/proc/stat: user, nice, system, irq, softirq, steal), or -1.
func hostBusy() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return float64(ticks) / 100 // USER_HZ
}

// selfCPU is this process's user+system time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// otherQEMUs counts qemu-system processes other than ours.
func otherQEMUs(ours int) int {
	n := 0
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == ours {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err == nil && strings.HasPrefix(string(comm), "qemu-system") {
			n++
		}
	}
	return n
}

// parseGuest reads the BENCH lines into res and returns how many marker
// commands the guest sent.
func parseGuest(res *vmResult, lines []string) (marks int, err error) {
	byK := map[int]*copyRun{}
	err = guestLines(lines, func(kind, rest string) string {
		switch kind {
		case "INFO":
			kv := fieldMap(rest)
			if v, ok := kv["kernel"]; ok {
				res.release = v
			}
			if v, ok := kv["startup"]; ok {
				secs, err := strconv.ParseFloat(kv["secs"], 64)
				if old, seen := res.startup[v]; err == nil && (!seen || secs < old) {
					res.startup[v] = secs
				}
			}
			if v, ok := kv["marks"]; ok {
				marks, _ = strconv.Atoi(v)
			}
			if v, ok := kv["shape"]; ok {
				if id, _ := strconv.Atoi(v); id >= 1 && id <= len(res.shapes) {
					if res.shapes[id-1].info == nil {
						res.shapes[id-1].info = map[string]string{}
					}
					for key, val := range kv {
						res.shapes[id-1].info[key] = val
					}
				}
			}
			if v, ok := kv["k"]; ok {
				if id, err := strconv.Atoi(v); err == nil && byK[id] != nil {
					byK[id].calls, _ = strconv.Atoi(kv["calls"])
				}
			}
		case "COPY":
			kv := fieldMap(rest)
			r := &copyRun{tool: kv["tool"], errText: ""}
			r.k, _ = strconv.Atoi(kv["k"])
			r.shape, _ = strconv.Atoi(kv["shape"])
			r.round, _ = strconv.Atoi(kv["round"])
			r.rc, _ = strconv.Atoi(kv["rc"])
			r.sumOK = kv["sum"] == "1"
			r.secs, _ = strconv.ParseFloat(kv["secs"], 64)
			r.rdIOs, _ = strconv.ParseInt(kv["rd_ios"], 10, 64)
			r.rdSect, _ = strconv.ParseInt(kv["rd_sectors"], 10, 64)
			r.wrIOs, _ = strconv.ParseInt(kv["wr_ios"], 10, 64)
			r.wrSect, _ = strconv.ParseInt(kv["wr_sectors"], 10, 64)
			if r.shape < 1 || r.shape > len(res.shapes) {
				return "guest reported a copy on unknown shape: BENCH COPY " + rest
			}
			byK[r.k] = r
			res.shapes[r.shape-1].runs = append(res.shapes[r.shape-1].runs, r)
		case "JSON":
			ks, js, _ := strings.Cut(rest, " ")
			id, _ := strconv.Atoi(ks)
			if r := byK[id]; r != nil {
				var s blkcopySummary
				if err := json.Unmarshal([]byte(js), &s); err == nil {
					r.summary = &s
				} else {
					r.errText = fmt.Sprintf("unreadable --json output %q", js)
				}
			}
		case "ERR":
			ks, msg, _ := strings.Cut(rest, " ")
			id, _ := strconv.Atoi(ks)
			if r := byK[id]; r != nil {
				r.errText = strings.TrimSpace(msg)
			}
		}
		return ""
	})
	return marks, err
}

// guestLines reads the protocol both benchmark guests speak on the
// console: "BENCH KIND REST" anywhere in a line. handle gets every kind
// but FAIL and DONE and returns a failure to report, or "". The error
// joins the guest's FAIL lines, handle's failures and a missing DONE.
func guestLines(lines []string, handle func(kind, rest string) string) error {
	var fails []string
	done := false
	for _, line := range lines {
		i := strings.Index(line, "BENCH ")
		if i < 0 {
			continue
		}
		kind, rest, _ := strings.Cut(line[i+len("BENCH "):], " ")
		switch kind {
		case "FAIL":
			fails = append(fails, rest)
		case "DONE":
			done = true
		default:
			if f := handle(kind, rest); f != "" {
				fails = append(fails, f)
			}
		}
	}
	if !done {
		fails = append(fails, "the guest did not reach BENCH DONE (crash, panic or timeout: see the guest log above)")
	}
	if len(fails) > 0 {
		return errors.New(strings.Join(fails, "; "))
	}
	return nil
}

// fieldMap splits "a=1 b=2" into a map.
func fieldMap(s string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// traceCounts is what QEMU's controller saw during one copy.
type traceCounts struct {
	copies    int   // NVMe Copy commands (-1: unknown)
	ranges    int   // their source ranges
	nr        []int // source ranges of each Copy command, in order
	readBytes int64 // bytes of Read commands (data into the guest)
}

// attributeTrace reads QEMU's trace (pci_nvme_copy and pci_nvme_read
// events, in the order the controller saw them) and gives each copy the
// events between its two marker commands: copy K runs after marker 2K+1
// and before marker 2K+2.
func attributeTrace(path string, res *vmResult, wantMarks int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	byK := map[int]*copyRun{}
	for _, s := range res.shapes {
		for _, r := range s.runs {
			byK[r.k] = r
		}
	}
	marks, stray := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		isCopy := strings.Contains(line, "pci_nvme_copy ")
		isRead := strings.Contains(line, "pci_nvme_read ")
		if !isCopy && !isRead {
			continue
		}
		kv := traceFields(line)
		if isCopy && kv["nsid"] == strconv.Itoa(markerNSID) {
			marks++
			continue
		}
		if kv["nsid"] == strconv.Itoa(markerNSID) {
			continue // the kernel reading the marker namespace
		}
		if marks%2 == 0 {
			if isCopy {
				stray++
			}
			continue
		}
		r := byK[(marks-1)/2]
		if r == nil {
			continue
		}
		if isCopy {
			n, _ := strconv.Atoi(kv["nr"])
			r.trace.copies++
			r.trace.ranges += n
			r.trace.nr = append(r.trace.nr, n)
		} else {
			n, _ := strconv.ParseInt(kv["count"], 10, 64)
			r.trace.readBytes += n
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if marks != wantMarks {
		return fmt.Errorf("%d marker commands in %s, the guest sent %d", marks, path, wantMarks)
	}
	if stray > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d NVMe Copy commands outside any timed copy", stray))
	}
	return nil
}

// traceFields reads "name key value key value ..." from one trace line.
func traceFields(line string) map[string]string {
	m := map[string]string{}
	f := strings.Fields(line)
	for i := 0; i < len(f); i++ {
		if strings.Contains(f[i], "pci_nvme_") {
			f = f[i+1:]
			break
		}
	}
	for i := 0; i+1 < len(f); i += 2 {
		m[f[i]] = f[i+1]
	}
	return m
}
