package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	"github.com/blkcopy/blkcopy/internal/size"
)

// The --sparse rows (issue 10): one sparse image of random data extents
// (about 7% of it) and holes, copied file -> file, from a disk-backed loop
// device holding the same bytes (holes as written zeroes) to an image, and
// from the image onto a loop device, each next to the tools people would
// use instead. Rounds alternate the tools; every copy is compared with its
// source and the space it takes is printed next to its time.

// sparseResult is one row's measurements.
type sparseResult struct {
	label    string
	n, data  int64 // bytes copied; bytes of data (not holes) in the image
	series   []series
	toDevice bool
}

// sparseImage writes an image of n bytes at path: random extents of 256 KiB
// to 4 MiB with holes of 8 to 44 MiB between them (about 7% data), and an
// extent at the very end, so tools that skip a trailing hole without
// setting the size (dd conv=sparse) still make a file of n bytes. It
// returns the data bytes.
func sparseImage(path string, n int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(10, 0))
	data := rand.NewChaCha8([32]byte{'s', 'p', 'a', 'r', 's', 'e'})
	const unit = 64 << 10
	write := func(off, k int64) error {
		buf := make([]byte, k)
		_, _ = data.Read(buf)
		_, err := f.WriteAt(buf, off)
		return err
	}
	var sum int64
	tail := min(n, 1<<20)
	for off := int64(rng.IntN(8<<20)) / unit * unit; ; {
		k := (256<<10 + int64(rng.IntN(15<<18))) / unit * unit
		if off+k > n-tail {
			break
		}
		if err := write(off, k); err != nil {
			return 0, err
		}
		sum += k
		off += k + (8<<20+int64(rng.IntN(36<<20)))/unit*unit
	}
	if err := write(n-tail, tail); err != nil {
		return 0, err
	}
	return sum + tail, f.Sync()
}

// allocatedBytes is the space path takes (stat blocks).
func allocatedBytes(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return -1
	}
	return st.Blocks * 512
}

// writtenCopy copies src to a new file dst writing every byte, zeroes
// included: a disk image whose zeroes are on the medium.
func writtenCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 4<<20)); err != nil {
		return err
	}
	return out.Sync()
}

func (b *bench) sparseScenarios(rep *report) {
	scenario := &cleanups{}
	defer scenario.run()
	n := b.cfg.sparseSize
	dir := b.cfg.dir
	img := filepath.Join(dir, "sparse-src.img")
	devImg := filepath.Join(dir, "sparse-dev.img")
	dstImg := filepath.Join(dir, "sparse-dst-dev.img")
	out := filepath.Join(dir, "sparse-out.img")
	scenario.add(func() { os.Remove(img); os.Remove(devImg); os.Remove(dstImg); os.Remove(out) })
	b.logf("sparse: writing a %s sparse image and a disk-backed loop device with the same bytes in %s", size.Format(n), dir)
	data, err := sparseImage(img, n)
	if err != nil {
		b.fail("sparse: setup: %v", err)
		return
	}
	if err := writtenCopy(img, devImg); err != nil {
		b.fail("sparse: setup: %v", err)
		return
	}
	if err := allocatedFile(dstImg, n); err != nil {
		b.fail("sparse: setup: %v", err)
		return
	}
	srcDev, err := attachLoop(b.ctx, scenario, devImg, true)
	if err != nil {
		b.fail("sparse: setup: %v", err)
		return
	}
	dstDev, err := attachLoop(b.ctx, scenario, dstImg, true)
	if err != nil {
		b.fail("sparse: setup: %v", err)
		return
	}
	b.logf("sparse: image %s: %s of data in %s; device %s (dio=%s), destination device %s (dio=%s)",
		img, size.Format(data), size.Format(n), srcDev, loopDirectIO(srcDev), dstDev, loopDirectIO(dstDev))

	blk := func(extra ...string) func(src, dst string, n int64) []string {
		return func(src, dst string, n int64) []string {
			return append([]string{b.cfg.blkcopy, src, dst, "--progress", "never", "--quiet"}, extra...)
		}
	}
	fixed := func(argv ...string) func(src, dst string, n int64) []string {
		return func(src, dst string, n int64) []string { return append(argv, src, dst) }
	}
	rows := []struct {
		label    string
		src, dst string
		toDevice bool
		tools    []tool
	}{
		{"sparse file -> file (ext4)", img, out, false, []tool{
			{name: "blkcopy", argv: blk()},
			{name: "cp", argv: fixed("cp")},
			{name: "cp --sparse=always", argv: fixed("cp", "--sparse=always")},
		}},
		{"loop device on disk -> image file", srcDev, out, false, []tool{
			{name: "blkcopy", argv: blk()},
			{name: "dd conv=sparse", argv: func(src, dst string, n int64) []string {
				return []string{"dd", "if=" + src, "of=" + dst, "bs=4M", "iflag=direct", "conv=sparse", "status=none"}
			}},
			{name: "qemu-img convert", argv: fixed("qemu-img", "convert", "-f", "raw", "-O", "raw")},
		}},
		{"sparse image -> loop device on disk", img, dstDev, true, []tool{
			{name: "blkcopy", argv: blk()},
			{name: "blkcopy --sparse never", argv: blk("--sparse", "never")},
			{name: "dd", argv: func(src, dst string, n int64) []string {
				return []string{"dd", "if=" + src, "of=" + dst, "bs=4M", "oflag=direct", "conv=fsync", "status=none"}
			}},
			{name: "qemu-img convert", argv: fixed("qemu-img", "convert", "-n", "-t", "none", "-f", "raw", "-O", "raw")},
		}},
	}
	for _, row := range rows {
		if b.ctx.Err() != nil {
			return
		}
		res := sparseResult{label: row.label, n: n, data: data, toDevice: row.toDevice}
		for _, t := range row.tools {
			res.series = append(res.series, series{tool: t.name})
		}
		b.logf("sparse: %s", row.label)
		for round := 0; round < b.cfg.warmup+b.cfg.runs && b.ctx.Err() == nil; round++ {
			for i, t := range row.tools {
				if b.ctx.Err() != nil {
					break
				}
				s, ok := b.sparseRun(row.src, row.dst, n, t, round, row.toDevice, dstImg)
				if round >= b.cfg.warmup {
					s.ok = ok
					res.series[i].samples = append(res.series[i].samples, s)
				}
			}
		}
		rep.sparse = append(rep.sparse, res)
	}
}

// sparseRun is one timed copy: a fresh output file (or a stamped device),
// caches dropped, the tool timed until its output is on disk, the output
// compared with the source and its space taken (the backing file's for a
// device).
func (b *bench) sparseRun(src, dst string, n int64, t tool, round int, toDevice bool, backing string) (sample, bool) {
	var s sample
	if toDevice {
		if err := stamp(dst, n, round); err != nil {
			b.fail("%s: %v", t.name, err)
			return s, false
		}
		if err := dropCaches(); err != nil {
			b.fail("drop caches: %v", err)
			return s, false
		}
		argv := t.argv(src, dst, n)
		if _, err := runTimed(b.ctx, []string{argv[0], "--help"}); err != nil {
			b.fail("%s: %v", t.name, err)
			return s, false
		}
		var err error
		if s, err = runTimed(b.ctx, argv); err != nil {
			b.fail("%s: %v", t.name, err)
			return s, false
		}
		if err := sameRange(b.ctx, src, dst, n); err != nil {
			b.fail("%s copied wrong data: %v", t.name, err)
			return s, false
		}
		s.allocated = allocatedBytes(backing)
	} else {
		var ok bool
		if s, ok = b.fileRun(src, dst, n, t, round); !ok {
			return s, false
		}
		s.allocated = allocatedBytes(dst)
	}
	b.logf("  %-22s round %d: %8.3fs  allocated %s  (cmp ok)", t.name, round, s.secs, size.Format(s.allocated))
	return s, true
}

// Targets from issue 10.
const (
	sparseFileRatio = 1.1  // file -> file: time <= 1.1x cp
	sparseSpaceOver = 0.01 // device -> image: space within 1% of the data
)

func (r *report) printSparse(w io.Writer, d sparseResult) {
	fmt.Fprintf(w, "\n%s, %s image with %s of data (%.1f%%), caches dropped before every run, timed until on disk, cmp after:\n",
		d.label, size.Format(d.n), size.Format(d.data), 100*float64(d.data)/float64(d.n))
	fmt.Fprintf(w, "  %-24s %10s %17s %14s %16s\n", "tool", "median s", "min-max s", "allocated", "blkcopy speedup")
	blk := d.series[0]
	for _, s := range d.series {
		v := s.secs()
		lo, hi := minMax(v)
		fmt.Fprintf(w, "  %-24s %10.3f %8.3f-%-8.3f %14s %15.2fx\n", s.tool, median(v), lo, hi, size.Format(s.allocatedMedian()), median(speedRatios(blk, s)))
	}
	bt := median(blk.secs())
	switch {
	case d.toDevice:
		for _, s := range d.series[1:] {
			ratio := median(speedRatios(blk, s))
			r.check(ratio > 1, d.label+": blkcopy / "+s.tool, "%.2fx (> 1x)", ratio)
		}
	case d.series[1].tool == "cp":
		cp := d.series[1]
		ct := median(cp.secs())
		r.check(bt <= sparseFileRatio*ct, d.label+": blkcopy time vs cp", "%.3f s vs %.3f s (<= %.1fx)", bt, ct, sparseFileRatio)
		r.check(blk.allocatedMedian() <= cp.allocatedMedian(), d.label+": blkcopy space vs cp", "%s vs %s", size.Format(blk.allocatedMedian()), size.Format(cp.allocatedMedian()))
	default:
		for _, s := range d.series[1:] {
			ratio := median(speedRatios(blk, s))
			r.check(ratio > 1, d.label+": blkcopy / "+s.tool, "%.2fx (> 1x)", ratio)
		}
		a := blk.allocatedMedian()
		r.check(float64(a) <= float64(d.data)*(1+sparseSpaceOver), d.label+": blkcopy space vs data", "%s for %s of data (<= +%.0f%%)", size.Format(a), size.Format(d.data), 100*sparseSpaceOver)
	}
}

// allocatedMedian is the median space of the good runs.
func (s series) allocatedMedian() int64 {
	var v []float64
	for _, x := range s.good() {
		v = append(v, float64(x.allocated))
	}
	return int64(median(v))
}
