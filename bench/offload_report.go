package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blkcopy/blkcopy/internal/size"
)

// Targets from the offload issues: offloaded copies within a namespace.
const (
	offloadVsOnload = 2.0 // both kernels: blkcopy offloaded / blkcopy --mode onload
	offloadVsCFR    = 0.9 // seed kernel: / one copy_file_range call of the whole range
	offloadVsNVMe   = 1.0 // Debian's kernel: / the nvme copy loop (faster than)
	maxHostReads    = 0.10
)

type offloadReport struct {
	cfg      config
	blkcopy  string // which blkcopy ran
	vms      []*vmResult
	notes    []string
	failures []string
	targets  []target
	rows     []string // for the README table
}

func (r *offloadReport) check(met bool, what, format string, args ...any) {
	r.targets = append(r.targets, target{what: what, value: fmt.Sprintf(format, args...), met: met})
}

func (r *offloadReport) print(w io.Writer) {
	cfg := r.cfg
	fmt.Fprintf(w, "\nblkcopy offload benchmark, %s: %s within one NVMe namespace (offset 0 -> %s) in QEMU (TCG, -smp 2), "+
		"%d counted rounds after %d warm-up, tools alternating, every copy checked (md5 of the destination)\n",
		time.Now().Format("2006-01-02"), size.Format(cfg.size), size.Format(cfg.size), cfg.runs, cfg.warmup)
	fmt.Fprintf(w, "blkcopy: %s; command: go run ./bench %s\n", r.blkcopy, strings.Join(os.Args[1:], " "))
	for _, v := range r.vms {
		for _, s := range v.shapes {
			r.printShape(w, v, s)
		}
		if len(v.startup) > 0 {
			var parts []string
			for _, name := range slices.Sorted(maps.Keys(v.startup)) {
				parts = append(parts, fmt.Sprintf("%s %.0f ms", strings.ReplaceAll(name, "_", " "), 1000*v.startup[name]))
			}
			fmt.Fprintf(w, "  %s: process start and exit in the guest, fastest of 3: %s\n", v.kernel.key, strings.Join(parts, ", "))
		}
		for _, n := range v.notes {
			fmt.Fprintf(w, "note (%s): %s\n", v.kernel.label, n)
		}
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
	fmt.Fprintf(w, "\nTargets:\n")
	if len(r.targets) == 0 {
		fmt.Fprintln(w, "  none measured")
	}
	for _, t := range r.targets {
		status := "MET   "
		if !t.met {
			status = "MISSED"
		}
		fmt.Fprintf(w, "  %s %-72s %s\n", status, t.what, t.value)
	}
	if len(r.rows) > 0 {
		fmt.Fprintf(w, "\nFor the README (medians of %d rounds, %s per copy, `go run ./bench --offload --size %dM --runs %d`):\n\n",
			cfg.runs, size.Format(cfg.size), cfg.size>>20, cfg.runs)
		fmt.Fprintln(w, "| kernel | namespace (512 B blocks unless said) | blkcopy offloaded MiB/s | path, requests per copy | blkcopy onload MiB/s | dd bs=4M MiB/s | reference MiB/s | offloaded / onload | offloaded / reference | host reads |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
		for _, row := range r.rows {
			fmt.Fprintln(w, row)
		}
	}
}

// checkRun says what is wrong with one copy, or "".
func checkRun(k offloadKernel, n int64, run *copyRun) string {
	switch {
	case run.rc != 0:
		return fmt.Sprintf("exit status %d: %s", run.rc, run.errText)
	case !run.sumOK:
		return "the destination's md5 differs from the source's: wrong data"
	}
	s := run.summary
	switch run.tool {
	case "blkcopy", "onload":
		if s == nil {
			return "no --json summary: " + run.errText
		}
		if s.Bytes != n {
			return fmt.Sprintf("--json: bytes %d, want %d", s.Bytes, n)
		}
	}
	switch {
	case run.tool == "blkcopy" && s.OffloadedBytes != s.Bytes:
		return fmt.Sprintf("not offloaded: offloaded_bytes %d of %d (fallback_reason %q, offload_disabled_reason %q)",
			s.OffloadedBytes, s.Bytes, s.FallbackReason, s.OffloadDisabledReason)
	case run.tool == "blkcopy" && s.OffloadPath != k.path:
		return fmt.Sprintf("offload_path %q, want %q on this kernel", s.OffloadPath, k.path)
	case run.tool == "onload" && s.OffloadedBytes != 0:
		return fmt.Sprintf("--mode onload offloaded %d bytes", s.OffloadedBytes)
	}
	return ""
}

// toolStats is one tool's counted runs on one namespace.
type toolStats struct {
	tool   string
	series series
	runs   []*copyRun // counted and good
}

func (t toolStats) medianOf(f func(*copyRun) float64) float64 {
	var v []float64
	for _, r := range t.runs {
		v = append(v, f(r))
	}
	return median(v)
}

// spread prints the median of f and, when the runs differ, their range.
func (t toolStats) spread(f func(*copyRun) float64, format string) string {
	var v []float64
	for _, r := range t.runs {
		v = append(v, f(r))
	}
	if len(v) == 0 {
		return "-"
	}
	lo, hi := minMax(v)
	if lo == hi {
		return fmt.Sprintf(format, lo)
	}
	return fmt.Sprintf(format+" ("+format+"-"+format+")", median(v), lo, hi)
}

func (r *offloadReport) printShape(w io.Writer, v *vmResult, s *shapeResult) {
	cfg, k := r.cfg, v.kernel
	n := cfg.size
	lbs := s.shape.lbs
	label := fmt.Sprintf("%s, namespace %s", k.key, s.shape)
	fmt.Fprintf(w, "\n%s %s, namespace %s, %d B blocks, %s\n", k.label, v.release, s.shape, lbs, s.info["dev"])
	fmt.Fprintf(w, "  kernel copy limits: copy_max_bytes %s, copy_max_hw_bytes %s; NVMe Copy command: up to %d ranges of %s, %s in all\n",
		s.info["copy_max_bytes"], s.info["copy_max_hw_bytes"], s.shape.maxRanges(),
		size.Format(s.shape.rangeBlocks()*lbs), size.Format(s.shape.cmdBlocks()*lbs))

	stats := map[string]*toolStats{}
	for _, tool := range k.tools {
		stats[tool] = &toolStats{tool: tool, series: series{tool: toolNames[tool]}}
	}
	for _, run := range s.runs {
		t := stats[run.tool]
		if t == nil {
			r.failures = append(r.failures, fmt.Sprintf("%s: unexpected tool %q", label, run.tool))
			continue
		}
		problem := checkRun(k, n, run)
		if problem != "" {
			r.failures = append(r.failures, fmt.Sprintf("%s: %s round %d: %s", label, toolNames[run.tool], run.round, problem))
		}
		if run.round < cfg.warmup {
			continue
		}
		t.series.samples = append(t.series.samples, sample{secs: run.secs, ok: problem == ""})
		if problem == "" {
			t.runs = append(t.runs, run)
		}
	}

	fmt.Fprintf(w, "  %-26s %12s %17s %16s %12s %10s %22s %14s\n",
		"tool", "median MiB/s", "min-max MiB/s", "requests/copy", "Copy cmds", "ranges/cmd", "host reads (stat)", "Read cmds (QEMU)")
	traced := len(s.runs) > 0
	for _, run := range s.runs {
		traced = traced && run.trace.copies >= 0
	}
	for _, tool := range k.tools {
		t := stats[tool]
		mibps := t.series.mibps(n)
		lo, hi := minMax(mibps)
		req := "-"
		switch tool {
		case "blkcopy":
			req = t.spread(func(r *copyRun) float64 { return float64(r.summary.OffloadRequests) }, "%.0f")
		case "cfr":
			req = t.spread(func(r *copyRun) float64 { return float64(r.calls) }, "%.0f call")
		case "nvme":
			req = fmt.Sprintf("%d nvme runs", s.nvmeCmd+1)
		}
		cmds, ranges := "-", "-"
		if traced && len(t.runs) > 0 {
			cmds = t.spread(func(r *copyRun) float64 { return float64(r.trace.copies) }, "%.0f")
			var nr, nc int
			for _, run := range t.runs {
				nr += run.trace.ranges
				nc += run.trace.copies
			}
			if nc > 0 {
				ranges = fmt.Sprintf("%.1f", float64(nr)/float64(nc))
			}
		}
		reads := fmt.Sprintf("%s %5.1f%%", size.Format(int64(t.medianOf(func(r *copyRun) float64 { return float64(r.rdSect * 512) }))),
			100*t.medianOf(func(r *copyRun) float64 { return float64(r.rdSect*512) / float64(n) }))
		qreads := "-"
		if traced {
			qreads = size.Format(int64(t.medianOf(func(r *copyRun) float64 { return float64(r.trace.readBytes) })))
		}
		if len(t.runs) == 0 {
			fmt.Fprintf(w, "  %-26s no good run\n", t.series.tool)
			continue
		}
		fmt.Fprintf(w, "  %-26s %12.1f %8.1f-%-8.1f %16s %12s %10s %22s %14s\n",
			t.series.tool, median(mibps), lo, hi, req, cmds, ranges, reads, qreads)
	}

	off := stats["blkcopy"]
	if off == nil {
		return
	}
	ratio := func(other string) (float64, bool) {
		o := stats[other]
		if o == nil {
			return 0, false
		}
		rs := speedRatios(off.series, o.series)
		if len(rs) == 0 {
			return 0, false
		}
		lo, hi := minMax(rs)
		fmt.Fprintf(w, "  blkcopy offloaded / %-24s median of per-round speed ratios %.2fx (%.2f-%.2f)\n", o.series.tool+":", median(rs), lo, hi)
		return median(rs), true
	}
	vsOnload, okOnload := ratio("onload")
	ratio("dd")
	vsRef, okRef := 0.0, false
	if k.reference != "" {
		vsRef, okRef = ratio(k.reference)
	}
	// Host reads: what the guest's kernel read from the namespace during
	// the copy. /sys/block/DEV/stat is the measure, but the seed
	// kernel accounts each Copy's source request (REQ_OP_COPY_SRC, an even
	// op, so op_stat_group counts it as a read) as sectors read, though no
	// byte of it enters host memory; QEMU's trace of Read commands counts
	// only data the device sent to the host. Judge by the trace when there
	// is one.
	statReads := off.medianOf(func(r *copyRun) float64 { return float64(r.rdSect*512) / float64(n) })
	hostReads, readsBy := statReads, "/sys/block/DEV/stat"
	if traced {
		hostReads = off.medianOf(func(r *copyRun) float64 { return float64(r.trace.readBytes) / float64(n) })
		readsBy = fmt.Sprintf("QEMU Read commands; the stat says %.1f%%", 100*statReads)
		cmds := off.medianOf(func(r *copyRun) float64 { return float64(r.trace.copies) })
		ios := off.medianOf(func(r *copyRun) float64 { return float64(r.rdIOs) })
		if statReads >= 0.9 && hostReads < maxHostReads && ios >= cmds && cmds > 0 {
			fmt.Fprintf(w, "  note: /sys/block stat counts %.0f read requests and %.0f%% of the bytes as read during the offloaded copy, "+
				"but the device served Read commands for %.1f%% only: this kernel accounts each Copy's source request (%.0f Copy commands) as a read\n",
				ios, 100*statReads, 100*hostReads, cmds)
		}
		// Over the link the target splits each Copy it receives into the
		// backing namespace's own, so the counts differ by design there.
		if k.path == "nvme" && !k.fabric {
			for _, run := range off.runs {
				if int64(run.trace.copies) != run.summary.OffloadRequests {
					fmt.Fprintf(w, "  note: round %d: blkcopy reported %d offload_requests, QEMU traced %d Copy commands\n",
						run.round, run.summary.OffloadRequests, run.trace.copies)
				}
			}
		}
	}
	if traced && len(off.runs) > 0 {
		fmt.Fprintf(w, "  blkcopy's Copy commands in round %d, source ranges each, in order: %s\n",
			off.runs[0].round, runLength(off.runs[0].trace.nr))
	}
	if len(off.runs) > 0 {
		fmt.Fprintf(w, "  blkcopy: offload_path %s, offload_requests %s per copy\n", off.runs[0].summary.OffloadPath,
			off.spread(func(r *copyRun) float64 { return float64(r.summary.OffloadRequests) }, "%.0f"))
	}
	// blkcopy's duration_ns covers the copy itself; the wall time adds
	// process start, opening and probing the devices, and exit.
	for _, tool := range []string{"blkcopy", "onload"} {
		t := stats[tool]
		if t == nil || len(t.runs) == 0 {
			continue
		}
		own := t.medianOf(func(r *copyRun) float64 { return float64(r.summary.DurationNS) / 1e9 })
		wall := t.medianOf(func(r *copyRun) float64 { return r.secs })
		fmt.Fprintf(w, "  %s: its own duration_ns median %.3f s (%.1f MiB/s) of %.3f s wall\n",
			t.series.tool, own, float64(n)/(1<<20)/own, wall)
	}

	if !okOnload || len(off.runs) == 0 {
		r.check(false, label+": offloaded blkcopy measured", "no good runs")
		return
	}
	r.check(vsOnload >= offloadVsOnload, label+": offloaded / blkcopy --mode onload", "%.2fx (>= %.1fx)", vsOnload, offloadVsOnload)
	switch {
	case k.reference == "cfr" && okRef:
		r.check(vsRef >= offloadVsCFR, label+": offloaded / one-call copy_file_range", "%.2fx (>= %.1fx)", vsRef, offloadVsCFR)
	case k.reference == "nvme" && okRef:
		r.check(vsRef > offloadVsNVMe, label+": offloaded / nvme copy loop", "%.2fx (> %.1fx)", vsRef, offloadVsNVMe)
	case k.reference != "":
		r.check(false, label+": offloaded / "+toolNames[k.reference], "not measured")
	}
	r.check(hostReads < maxHostReads, label+": host reads during the offloaded copy",
		"%.1f%% of the bytes copied (< %.0f%%; %s)", 100*hostReads, 100*maxHostReads, readsBy)

	med := func(tool string) string {
		if t := stats[tool]; t != nil && len(t.runs) > 0 {
			return fmt.Sprintf("%.0f", median(t.series.mibps(n)))
		}
		return "-"
	}
	ref, refRatio := "-", "-"
	if okRef {
		ref = med(k.reference) + " (" + toolNames[k.reference] + ")"
		refRatio = fmt.Sprintf("%.2fx", vsRef)
	}
	shape := s.shape.String()
	if k.fabric {
		shape = "NVMe/TCP to " + shape
	}
	if lbs != 512 {
		shape += fmt.Sprintf(", %d B blocks", lbs)
	}
	kernel := k.key + " " + v.release
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | %s | %s, %s | %s | %s | %s | %.2fx | %s | %.1f%% |",
		kernel, shape, med("blkcopy"), k.path, off.spread(func(r *copyRun) float64 { return float64(r.summary.OffloadRequests) }, "%.0f"),
		med("onload"), med("dd"), ref, vsOnload, refRatio, 100*hostReads))
}

// runLength prints 1 2 4 4 4 as "1, 2, 4x3".
func runLength(v []int) string {
	var parts []string
	for i := 0; i < len(v); {
		j := i
		for j < len(v) && v[j] == v[i] {
			j++
		}
		if j-i > 1 {
			parts = append(parts, fmt.Sprintf("%dx%d", v[i], j-i))
		} else {
			parts = append(parts, strconv.Itoa(v[i]))
		}
		i = j
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
