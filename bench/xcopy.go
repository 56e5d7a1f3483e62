package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/size"
	"github.com/blkcopy/blkcopy/test/vm"
)

// The SCSI EXTENDED COPY benchmark (--xcopy): Debian's kernel in QEMU with
// the Linux SCSI target (LIO) exporting LUs to the guest through tcm_loop,
// two over NVMe namespaces (iblock) and one over a file in the guest's RAM
// (fileio), and the two iblock LUs again through iSCSI on the guest's
// loopback interface. Each round copies SIZE bytes with every tool in turn,
// in five cases: within the iblock LU, from it to the other iblock LU,
// within the fileio LU, and the first two over iSCSI. tcm_loop hands the
// target the initiator's buffers with no transport at all, so there an
// offloaded copy saves little; over iSCSI, as on a SAN, a copy through the
// host moves every byte over the transport twice.

var xcopyTools = []string{"blkcopy", "onload", "dd", "sg_xcopy", "ddpt"}

var xcopyToolNames = map[string]string{
	"blkcopy":  "blkcopy (auto: XCOPY)",
	"onload":   "blkcopy --mode onload",
	"dd":       "dd bs=4M direct",
	"sg_xcopy": "sg_xcopy bpt=63488",
	"ddpt":     "ddpt oflag=xcopy bpt=63488",
}

// sgBPT is the blocks per EXTENDED COPY given to sg_xcopy and ddpt: what
// blkcopy puts in one segment on LIO (31 MiB of 512-byte blocks), so that
// the tools differ in how they send commands, not in their size.
const sgBPT = 63488

var xcopyCases = []string{"iblock_same", "iblock_across", "fileio_same", "iscsi_same", "iscsi_across"}

// Targets from issue 11.
const (
	xcopyVsOnload = 2.0  // blkcopy XCOPY / --mode onload
	xcopyVsSG     = 1.0  // blkcopy at least as fast as sg_xcopy and ddpt
	xcopyReads    = 0.10 // initiator reads beyond the canary / bytes copied
	// xcopyCanaryReads is what the canary costs in reads: 64 KiB of source
	// read to poison the destination, then the destination read back.
	xcopyCanaryReads = 2 * copypath.CanaryMax
)

type xcopyRun struct {
	c, tool      string
	round, rc    int
	sumOK        bool
	secs         float64
	readBytes    int64 // initiator reads of source and destination LU
	offloaded    int64
	path         string
	requests     int64
	errText      string
	blkcopyBytes int64
}

func (b *bench) runXCopy(root string) int {
	work, bins, rc := b.prepareVM(root, "blkcopy-xcopy-")
	if rc != 0 {
		return rc
	}
	cfg := b.cfg
	kernel, modules, err := vm.DebianKernel(filepath.Join(root, "test", "vm", "fetch.sh"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	rd := &vm.Initramfs{}
	for name, path := range bins {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		rd.AddFile(name, 0o755, data)
	}
	rd.AddSymlink("bin/sh", "busybox")
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		rd.AddDir(d)
	}
	for file, at := range map[string]string{"bench/guest/xcopy.sh": "init", "test/vm/guest/scsi.sh": "guest/scsi.sh", "test/vm/guest/nvmedev.sh": "guest/nvmedev.sh"} {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		rd.AddFile(at, 0o755, data)
	}
	for tool, pkg := range map[string]string{"/usr/bin/sg_xcopy": "sg3-utils", "/usr/bin/ddpt": "ddpt", "/usr/sbin/iscsistart": "open-iscsi"} {
		if err := rd.AddDynamic(tool); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v (apt-get install %s)\n", err, pkg)
			return 2
		}
	}
	mods, err := vm.ModuleOrder(modules, []string{"nvme", "configfs", "target_core_iblock", "target_core_file", "tcm_loop", "iscsi_target_mod", "iscsi_tcp", "crc32c_generic", "sd_mod", "sg"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	var order strings.Builder
	for _, m := range mods {
		data, err := vm.ReadModule(m.Path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		rd.AddFile("modules/"+m.Name+".ko", 0o644, data)
		fmt.Fprintf(&order, "%s.ko\n", m.Name)
	}
	rd.AddFile("modules/order", 0o644, []byte(order.String()))

	l, m := filepath.Join(work, "l.img"), filepath.Join(work, "m.img")
	sum, err := sourceImage(l, cfg.size, 3*cfg.size, 11)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if _, err := sourceImage(m, 0, cfg.size+1<<20, 12); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	env := fmt.Sprintf("SIZE=%d\nRUNS=%d\nWARMUP=%d\nTOOLS='%s'\nSRC_MD5=%s\nDISK_L='bench-l 1'\nDISK_M='bench-l 2'\nBPT=%d\n",
		cfg.size, cfg.runs, cfg.warmup, strings.Join(xcopyTools, " "), sum, sgBPT)
	rd.AddFile("guest/env", 0o644, []byte(env))
	initrd := filepath.Join(work, "initramfs.cpio")
	if err := writeFile(initrd, rd); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	shape := nsShape{lbs: 512, mssrl: 256, mcl: 1024, msrc: 7}
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
		"-kernel", kernel, "-initrd", initrd,
		"-device", "nvme,serial=bench-l,id=bench-l",
	}
	for i, img := range []string{l, m} {
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,if=none,id=drive-x%d,format=raw,cache=unsafe", img, i),
			"-device", fmt.Sprintf("nvme-ns,drive=drive-x%d,bus=bench-l,nsid=%d,logical_block_size=%d,physical_block_size=%d,mssrl=%d,mcl=%d,msrc=%d",
				i, i+1, shape.lbs, shape.lbs, shape.mssrl, shape.mcl, shape.msrc))
	}
	b.logf("xcopy: booting %s, %s per copy, %d rounds (%d warm-up)", kernel, size.Format(cfg.size), cfg.warmup+cfg.runs, cfg.warmup)
	start := time.Now()
	lines, noise, bootErr := b.boot(args)
	elapsed := time.Since(start)
	runs, parseErr := parseXCopy(lines)
	rep := xcopyReport{size: cfg.size, runs: runs, warmup: cfg.warmup, counted: cfg.runs, elapsed: elapsed, kernel: filepath.Base(kernel)}
	if noise.qemuSecs > 0 || noise.otherCPU > 0.05*elapsed.Seconds() {
		rep.notes = append(rep.notes, fmt.Sprintf("the host was busy during the VM (another QEMU for %d s, others used %.0f CPU-seconds of %s): these numbers are noisy",
			noise.qemuSecs, noise.otherCPU, elapsed.Round(time.Second)))
	}
	rep.print(os.Stdout)
	for _, f := range append(rep.failures, errorsOf(bootErr, parseErr)...) {
		b.fail("%s", f)
	}
	if b.ctx.Err() != nil {
		return 130
	}
	if len(b.failures) > 0 {
		return 1
	}
	return 0
}

func errorsOf(errs ...error) []string {
	var s []string
	for _, e := range errs {
		if e != nil {
			s = append(s, e.Error())
		}
	}
	return s
}

// parseXCopy reads the guest's BENCH lines.
func parseXCopy(lines []string) ([]*xcopyRun, error) {
	var runs []*xcopyRun
	key := func(c, tool, round string) string { return c + " " + tool + " " + round }
	byKey := map[string]*xcopyRun{}
	err := guestLines(lines, func(kind, rest string) string {
		switch kind {
		case "COPY":
			f := fieldMap(rest)
			r := &xcopyRun{c: f["case"], tool: f["tool"]}
			r.round, _ = strconv.Atoi(f["round"])
			r.rc, _ = strconv.Atoi(f["rc"])
			r.sumOK = f["sum"] == "1"
			r.secs, _ = strconv.ParseFloat(f["secs"], 64)
			rs, _ := strconv.ParseInt(f["rd_sectors"], 10, 64)
			ds, _ := strconv.ParseInt(f["dst_rd_sectors"], 10, 64)
			r.readBytes = (rs + ds) * 512
			runs = append(runs, r)
			byKey[key(r.c, r.tool, f["round"])] = r
		case "JSON":
			parts := strings.SplitN(rest, " ", 4)
			if len(parts) < 4 {
				return ""
			}
			if r := byKey[key(parts[0], parts[1], parts[2])]; r != nil {
				var s blkcopySummary
				if err := json.Unmarshal([]byte(parts[3]), &s); err == nil {
					r.offloaded, r.path, r.requests, r.blkcopyBytes = s.OffloadedBytes, s.OffloadPath, s.OffloadRequests, s.Bytes
				}
			}
		case "ERR":
			parts := strings.SplitN(rest, " ", 4)
			if len(parts) == 4 {
				if r := byKey[key(parts[0], parts[1], parts[2])]; r != nil {
					r.errText = parts[3]
				}
			}
		}
		return ""
	})
	return runs, err
}

type xcopyReport struct {
	size            int64
	runs            []*xcopyRun
	warmup, counted int
	elapsed         time.Duration
	kernel          string
	notes           []string
	failures        []string
}

func (r *xcopyReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nblkcopy SCSI EXTENDED COPY benchmark, %s: %s per copy on LIO LUs exported by tcm_loop and, in the iscsi cases, by iSCSI on the guest's loopback interface (Debian's kernel %s) in QEMU (TCG, -smp 2), "+
		"%d counted rounds after %d warm-up, tools alternating, every copy checked (md5 of the destination); the VM ran %s\n",
		time.Now().Format("2006-01-02"), size.Format(r.size), r.kernel, r.counted, r.warmup, r.elapsed.Round(time.Second))
	for _, x := range r.runs {
		switch {
		case x.tool != "blkcopy" && x.tool != "onload" && (x.rc != 0 || !x.sumOK):
			// Another tool's failure is a finding about that tool, not
			// blkcopy's: it is left out of the medians and noted.
			r.notes = append(r.notes, fmt.Sprintf("%s %s round %d: exit %d, destination right: %v; left out (%s)", x.c, x.tool, x.round, x.rc, x.sumOK, x.errText))
		case x.rc != 0:
			r.failures = append(r.failures, fmt.Sprintf("%s %s round %d: exit %d: %s", x.c, x.tool, x.round, x.rc, x.errText))
		case !x.sumOK:
			r.failures = append(r.failures, fmt.Sprintf("%s %s round %d: the destination does not match the source (%s)", x.c, x.tool, x.round, x.errText))
		case x.tool == "blkcopy" && (x.offloaded != r.size || x.path != "scsi-xcopy"):
			r.failures = append(r.failures, fmt.Sprintf("%s blkcopy round %d: offloaded %d of %d bytes by %q, want all by scsi-xcopy", x.c, x.round, x.offloaded, r.size, x.path))
		case x.tool == "onload" && x.offloaded != 0:
			r.failures = append(r.failures, fmt.Sprintf("%s onload round %d: offloaded %d bytes", x.c, x.round, x.offloaded))
		}
	}
	fmt.Fprintf(w, "\n| case | %s | onload/XCOPY | sg_xcopy/XCOPY | ddpt/XCOPY | dd/XCOPY | host reads (XCOPY) | commands |\n", strings.Join(mapNames(xcopyTools), " | "))
	fmt.Fprintf(w, "|---|%s---|---|---|---|---|---|\n", strings.Repeat("---|", len(xcopyTools)))
	for _, c := range xcopyCases {
		secs := map[string][]float64{}
		ratio := map[string][]float64{}
		var reads, cmds []float64
		for round := r.warmup; round < r.warmup+r.counted; round++ {
			t := map[string]float64{}
			for _, x := range r.runs {
				if x.c == c && x.round == round && x.rc == 0 && x.sumOK {
					t[x.tool] = x.secs
					if x.tool == "blkcopy" {
						reads = append(reads, float64(x.readBytes))
						cmds = append(cmds, float64(x.requests))
					}
				}
			}
			for tool, s := range t {
				secs[tool] = append(secs[tool], s)
				if bs, ok := t["blkcopy"]; ok && bs > 0 {
					ratio[tool] = append(ratio[tool], s/bs)
				}
			}
		}
		var cells []string
		for _, tool := range xcopyTools {
			if len(secs[tool]) == 0 {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2f s (%s/s)", median(secs[tool]), size.Format(int64(float64(r.size)/median(secs[tool])))))
		}
		rcell := func(tool string) string {
			if len(ratio[tool]) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fx", median(ratio[tool]))
		}
		rd := median(reads)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s (%.1f%%) | %.0f |\n", c, strings.Join(cells, " | "),
			rcell("onload"), rcell("sg_xcopy"), rcell("ddpt"), rcell("dd"), size.Format(int64(rd)), 100*rd/float64(r.size), median(cmds))
		check := func(ok bool, what string) {
			mark := "met"
			if !ok {
				mark = "MISSED"
			}
			fmt.Fprintf(w, "  target %s: %s: %s\n", c, what, mark)
		}
		if len(ratio["onload"]) > 0 {
			check(median(ratio["onload"]) >= xcopyVsOnload, fmt.Sprintf("XCOPY >= %.0fx --mode onload (%.2fx)", xcopyVsOnload, median(ratio["onload"])))
		}
		for _, t := range []string{"sg_xcopy", "ddpt"} {
			if len(ratio[t]) > 0 {
				check(median(ratio[t]) >= xcopyVsSG, fmt.Sprintf("XCOPY at least as fast as %s (%.2fx)", t, median(ratio[t])))
			}
		}
		if len(reads) > 0 {
			beyond := max(0, rd-xcopyCanaryReads) / float64(r.size)
			check(beyond < xcopyReads, fmt.Sprintf("initiator reads beyond the canary < 10%% of the bytes (%.1f%%)", 100*beyond))
		}
	}
	fmt.Fprintln(w, "\ntimes are medians of whole-process wall times in the guest; ratios are medians of per-round ratios (tool time / blkcopy XCOPY time: above 1 means blkcopy is faster);")
	fmt.Fprintln(w, "host reads: sectors read from the source and destination sd disks (/sys/block/sdX/stat) during blkcopy's copy, x 512; the canary costs 128 KiB")
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, f := range r.failures {
		fmt.Fprintln(w, "FAILED:", f)
	}
}

func mapNames(tools []string) []string {
	var s []string
	for _, t := range tools {
		s = append(s, xcopyToolNames[t])
	}
	return slices.Clip(s)
}
