package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/blkcopy/blkcopy/internal/size"
)

type report struct {
	devices []deviceResult
	files   []fileResult
	rss     []deviceResult
	sparse  []sparseResult
	notes   []string
	targets []target
}

type target struct {
	what, value string
	met         bool
}

func (r *report) check(met bool, what, format string, args ...any) {
	r.targets = append(r.targets, target{what: what, value: fmt.Sprintf(format, args...), met: met})
}

// Thresholds from the project's performance issue.
const (
	shmRatio      = 1.15 // scenario A: blkcopy vs the faster dd
	shmCeiling    = 0.80 // scenario A: share of fio's read+write ceiling
	diskRatio     = 1.0  // scenario B
	cpuRatio      = 1.2  // CPU s/GiB vs the faster dd
	maxRSSMiB     = 32.0
	fileRatio     = 1.0  // ext4: blkcopy vs the faster cp
	reflinkSecond = 0.1  // XFS reflink: "milliseconds", including fsync
	sparseNoise   = 0.95 // random data: --sparse auto vs never, within noise
)

func (r *report) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\nblkcopy benchmark: %s on loop devices, %s files, %d counted runs per tool after %d warm-up, tools alternating\n",
		size.Format(cfg.size), size.Format(cfg.fileSize), cfg.runs, cfg.warmup)
	for _, d := range r.devices {
		r.printDevices(w, d)
	}
	for _, f := range r.files {
		r.printFiles(w, f)
	}
	for _, d := range r.sparse {
		r.printSparse(w, d)
	}
	if len(r.rss) > 0 {
		fmt.Fprintf(w, "\nblkcopy peak RSS by size (sparse loop devices on disk):\n")
		lo, hi := 1e18, 0.0
		for _, d := range r.rss {
			rss := d.series[0].peakRSSMiB()
			lo, hi = min(lo, rss), max(hi, rss)
			fmt.Fprintf(w, "  %-8s %6.1f MiB\n", size.Format(d.n), rss)
			r.check(rss > 0 && rss <= maxRSSMiB, "blkcopy peak RSS at "+size.Format(d.n), "%.1f MiB (<= %.0f MiB)", rss, maxRSSMiB)
		}
		r.check(hi-lo <= 4, "blkcopy peak RSS flat across sizes", "spread %.1f MiB (<= 4 MiB)", hi-lo)
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}

	fmt.Fprintf(w, "\nTargets:\n")
	for _, t := range r.targets {
		status := "met"
		if !t.met {
			status = "MISSED"
		}
		fmt.Fprintf(w, "  %-6s %-52s %s\n", status, t.what, t.value)
	}
	r.printMarkdown(w, cfg)
}

func (r *report) printDevices(w io.Writer, d deviceResult) {
	fmt.Fprintf(w, "\n%s, %s, O_DIRECT on both ends, cmp after every copy:\n", d.label, size.Format(d.n))
	fmt.Fprintf(w, "  %-10s %12s %17s %10s %9s\n", "tool", "median MiB/s", "min-max MiB/s", "CPU s/GiB", "peak RSS")
	for i, s := range d.series {
		if i == d.ceiling {
			continue
		}
		v := s.mibps(d.n)
		lo, hi := minMax(v)
		fmt.Fprintf(w, "  %-10s %12.1f %8.1f-%-8.1f %10.3f %5.1f MiB\n", s.tool, median(v), lo, hi, s.cpuPerGiB(d.n), s.peakRSSMiB())
	}
	if d.fioErr != nil {
		fmt.Fprintf(w, "  fio ceiling: not measured: %v\n", d.fioErr)
	}
	ceil, share := d.ceilingMiBps(), d.shareOfCeiling()
	if ceil > 0 {
		lo, hi := minMax(d.series[d.ceiling].mibps(d.n))
		fmt.Fprintf(w, "  fio ceiling (read source + write destination at once, direct, %s, one run per round): median %.1f MiB/s (%.1f-%.1f)\n",
			d.fio.setup, ceil, lo, hi)
		fmt.Fprintf(w, "    setup chosen from: %s\n", strings.Join(d.fio.tried, ", "))
	}
	if d.fasterDD < 0 {
		return
	}
	blk, dd := d.series[0], d.series[d.fasterDD]
	ratios := speedRatios(blk, dd)
	lo, hi := minMax(ratios)
	ratio := median(ratios)
	fmt.Fprintf(w, "  blkcopy / %s (the faster dd): median of per-pair ratios %.2fx (%.2f-%.2f)\n", dd.tool, ratio, lo, hi)
	if ceil > 0 {
		fmt.Fprintf(w, "  blkcopy = %.0f%% of the fio ceiling (median of per-round ratios)\n", 100*share)
	}

	want := diskRatio
	if strings.HasPrefix(d.label, "A") {
		want = shmRatio
		r.check(share >= shmCeiling, d.label+": blkcopy share of fio ceiling", "%.0f%% (>= %.0f%%)", 100*share, 100*shmCeiling)
	}
	r.check(ratio >= want, d.label+": blkcopy / "+dd.tool, "%.2fx (>= %.2fx)", ratio, want)
	for _, s := range d.series {
		if s.tool == "blkcopy never" {
			// Zero detection on random data must cost nothing beyond noise.
			nr := median(speedRatios(blk, s))
			fmt.Fprintf(w, "  blkcopy (--sparse auto) / blkcopy --sparse never: median of per-pair ratios %.2fx\n", nr)
			r.check(nr >= sparseNoise, d.label+": blkcopy auto / --sparse never", "%.2fx (>= %.2fx)", nr, sparseNoise)
		}
	}
	blkCPU, ddCPU := blk.cpuPerGiB(d.n), dd.cpuPerGiB(d.n)
	r.check(blkCPU <= cpuRatio*ddCPU, d.label+": CPU s/GiB vs "+dd.tool, "%.3f vs %.3f (<= %.1fx)", blkCPU, ddCPU, cpuRatio)
	rss := blk.peakRSSMiB()
	r.check(rss > 0 && rss <= maxRSSMiB, d.label+": blkcopy peak RSS", "%.1f MiB (<= %.0f MiB)", rss, maxRSSMiB)
}

func (r *report) printFiles(w io.Writer, f fileResult) {
	fmt.Fprintf(w, "\n%s, %s, page cache dropped (echo 3 > /proc/sys/vm/drop_caches) before every run, timed until fsync of the copy, cmp after:\n",
		f.label, size.Format(f.n))
	fmt.Fprintf(w, "  %-18s %10s %17s %10s %9s %10s\n", "tool", "median s", "min-max s", "CPU s/GiB", "peak RSS", "MiB/s")
	for _, s := range f.series {
		v := s.secs()
		lo, hi := minMax(v)
		fmt.Fprintf(w, "  %-18s %10.3f %8.3f-%-8.3f %10.3f %5.1f MiB %10.1f\n",
			s.tool, median(v), lo, hi, s.cpuPerGiB(f.n), s.peakRSSMiB(), float64(f.n)/(1<<20)/median(v))
	}
	blk := f.series[0]
	faster := 1
	for i := 1; i < len(f.series); i++ {
		fmt.Fprintf(w, "  blkcopy / %-18s median of per-pair speed ratios %.2fx\n", f.series[i].tool, median(speedRatios(blk, f.series[i])))
		if median(f.series[i].secs()) < median(f.series[faster].secs()) {
			faster = i
		}
	}
	if strings.HasPrefix(f.label, "XFS") {
		for _, s := range f.series[:2] {
			t := median(s.secs())
			r.check(t > 0 && t <= reflinkSecond, f.label+": "+s.tool+" time", "%.3f s (<= %.1f s)", t, reflinkSecond)
		}
		return
	}
	ratio := median(speedRatios(blk, f.series[faster]))
	r.check(ratio >= fileRatio, f.label+": blkcopy / "+f.series[faster].tool, "%.2fx (>= %.2fx)", ratio, fileRatio)
}

// printMarkdown prints the short table for the README.
func (r *report) printMarkdown(w io.Writer, cfg config) {
	if len(r.devices)+len(r.files) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFor the README (%d runs, medians):\n\n", cfg.runs)
	if len(r.devices) > 0 {
		fmt.Fprintln(w, "| scenario | size | blkcopy MiB/s | faster dd MiB/s | blkcopy/dd | fio ceiling MiB/s | % of ceiling | CPU s/GiB blkcopy / dd | blkcopy peak RSS |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, d := range r.devices {
			if d.fasterDD < 0 {
				continue
			}
			blk, dd := d.series[0], d.series[d.fasterDD]
			bm, dm := median(blk.mibps(d.n)), median(dd.mibps(d.n))
			share := "-"
			if d.ceilingMiBps() > 0 {
				share = fmt.Sprintf("%.0f%%", 100*d.shareOfCeiling())
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f (%s) | %.2fx | %.0f | %s | %.2f / %.2f | %.1f MiB |\n",
				d.label, size.Format(d.n), bm, dm, dd.tool, median(speedRatios(blk, dd)), d.ceilingMiBps(), share,
				blk.cpuPerGiB(d.n), dd.cpuPerGiB(d.n), blk.peakRSSMiB())
		}
		fmt.Fprintln(w)
	}
	if len(r.files) > 0 {
		fmt.Fprintln(w, "| file copy | size | blkcopy s | cp s | cp --reflink=never s |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		for _, f := range r.files {
			fmt.Fprintf(w, "| %s | %s |", f.label, size.Format(f.n))
			for _, s := range f.series {
				fmt.Fprintf(w, " %.3f |", median(s.secs()))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
}

// ceilingMiBps is the median of the fio runs, 0 without them.
func (d deviceResult) ceilingMiBps() float64 {
	if d.ceiling < 0 {
		return 0
	}
	return median(d.series[d.ceiling].mibps(d.n))
}

// shareOfCeiling compares blkcopy with the fio run of the same round.
func (d deviceResult) shareOfCeiling() float64 {
	if d.ceiling < 0 {
		return 0
	}
	return median(speedRatios(d.series[0], d.series[d.ceiling]))
}
