package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sample is one timed run of one tool.
type sample struct {
	secs      float64 // wall clock, until the copy was on stable storage
	cpu       float64 // user + sys of the tool and its children
	maxRSSKiB int64
	ok        bool  // the run succeeded and cmp found the copy right
	allocated int64 // the sparse rows: space the copy takes (stat blocks)
}

// runTimed runs argv under /usr/bin/time and takes CPU time and peak RSS
// from it. Not from this process's wait4: Go starts children with
// CLONE_VM|CLONE_VFORK, and the kernel folds the high-water RSS of the mm
// a process leaves at execve into its ru_maxrss, so every child would
// report at least the bench's own RSS. time(1) forks a small process of
// its own first.
func runTimed(ctx context.Context, argv []string) (sample, error) {
	stats, err := os.CreateTemp("", "bench-time-")
	if err != nil {
		return sample{}, err
	}
	stats.Close()
	defer os.Remove(stats.Name())
	timed := append([]string{"/usr/bin/time", "-f", "%U %S %M", "-o", stats.Name()}, argv...)
	cmd := exec.CommandContext(ctx, timed[0], timed[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	out, err := os.ReadFile(stats.Name())
	if err != nil {
		return sample{}, err
	}
	var user, sys float64
	var rss int64
	if _, err := fmt.Sscan(string(out), &user, &sys, &rss); err != nil {
		return sample{}, fmt.Errorf("/usr/bin/time output %q: %w", out, err)
	}
	return sample{secs: elapsed.Seconds(), cpu: user + sys, maxRSSKiB: rss}, nil
}

// run executes a setup or check command whose output only matters when it
// fails.
func run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// sameRange compares n bytes of a and b, reading both with O_DIRECT when
// they are block devices (the copies wrote around the buffer cache, and
// cmp(1) through that cache in 4 KiB reads took longer than the copies).
// It is independent of the tools under test, so a fast wrong copy cannot
// pass.
func sameRange(ctx context.Context, a, b string, n int64) error {
	fa, err := openForCompare(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := openForCompare(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	const block = 8 << 20
	bufA, bufB := alignedBuffer(block), alignedBuffer(block)
	for off := int64(0); off < n; off += block {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(block, n-off)
		// O_DIRECT wants whole blocks; every size here is a multiple of 4M.
		if _, err := fa.ReadAt(bufA[:m], off); err != nil {
			return fmt.Errorf("compare: read %s at offset %d: %w", a, off, err)
		}
		if _, err := fb.ReadAt(bufB[:m], off); err != nil {
			return fmt.Errorf("compare: read %s at offset %d: %w", b, off, err)
		}
		if !bytes.Equal(bufA[:m], bufB[:m]) {
			i := 0
			for bufA[i] == bufB[i] {
				i++
			}
			return fmt.Errorf("%s and %s differ at offset %d", a, b, off+int64(i))
		}
	}
	return nil
}

func openForCompare(p string) (*os.File, error) {
	flags := os.O_RDONLY
	if isBlockDevice(p) {
		flags |= unix.O_DIRECT
	}
	return os.OpenFile(p, flags, 0)
}

// alignedBuffer returns n bytes aligned for O_DIRECT.
func alignedBuffer(n int) []byte {
	const align = 4096
	raw := make([]byte, n+align)
	shift := (align - int(uintptr(unsafe.Pointer(&raw[0]))%align)) % align
	return raw[shift : shift+n]
}

func isBlockDevice(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// series is the counted samples of one tool in one scenario, in round order.
type series struct {
	tool    string
	samples []sample
}

// good is the samples of runs that succeeded.
func (s series) good() []sample {
	var v []sample
	for _, x := range s.samples {
		if x.ok {
			v = append(v, x)
		}
	}
	return v
}

func (s series) mibps(n int64) []float64 {
	var v []float64
	for _, x := range s.good() {
		v = append(v, float64(n)/(1<<20)/x.secs)
	}
	return v
}

func (s series) secs() []float64 {
	var v []float64
	for _, x := range s.good() {
		v = append(v, x.secs)
	}
	return v
}

// cpuPerGiB is total user+sys over total GiB copied.
func (s series) cpuPerGiB(n int64) float64 {
	var cpu float64
	good := s.good()
	for _, x := range good {
		cpu += x.cpu
	}
	return cpu / (float64(n) * float64(len(good)) / (1 << 30))
}

func (s series) peakRSSMiB() float64 {
	var peak int64
	for _, x := range s.good() {
		peak = max(peak, x.maxRSSKiB)
	}
	return float64(peak) / 1024
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// speedRatios divides a's speed by b's round by round: each pair ran back
// to back, so drift of the machine (other jobs, page cache) cancels.
func speedRatios(a, b series) []float64 {
	var r []float64
	for i := range min(len(a.samples), len(b.samples)) {
		if a.samples[i].ok && b.samples[i].ok {
			r = append(r, b.samples[i].secs/a.samples[i].secs)
		}
	}
	return r
}

func minMax(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 0
	}
	return slices.Min(v), slices.Max(v)
}
