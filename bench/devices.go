package main

import (
	"fmt"
	"strings"
)

// tool is one copier under test: argv copies n bytes from src to dst.
// measure, when set, replaces running argv and checking the copy: the fio
// ceiling takes its turn in the rotation but copies nothing.
type tool struct {
	name    string
	argv    func(src, dst string, n int64) []string
	measure func(n int64) (sample, error)
}

func deviceTools(blkcopy string) []tool {
	dd := func(bs int64) func(src, dst string, n int64) []string {
		return func(src, dst string, n int64) []string {
			return []string{"dd", "if=" + src, "of=" + dst,
				fmt.Sprintf("bs=%dM", bs>>20), fmt.Sprintf("count=%d", n/bs),
				"iflag=direct", "oflag=direct", "conv=fsync", "status=none"}
		}
	}
	return []tool{
		{name: "blkcopy", argv: func(src, dst string, n int64) []string {
			return []string{blkcopy, src, dst, "--len", fmt.Sprint(n), "--mode", "onload", "--progress", "never", "--quiet"}
		}},
		// --sparse never: the copy without zero detection, so the
		// rows show what looking for zeroes costs on random data.
		{name: "blkcopy never", argv: func(src, dst string, n int64) []string {
			return []string{blkcopy, src, dst, "--len", fmt.Sprint(n), "--mode", "onload", "--sparse", "never", "--progress", "never", "--quiet"}
		}},
		{name: "dd bs=1M", argv: dd(1 << 20)},
		{name: "dd bs=4M", argv: dd(4 << 20)},
	}
}

// deviceResult is what one block-device scenario measured.
type deviceResult struct {
	label    string
	n        int64
	series   []series // in deviceTools order; blkcopy first
	fio      fioCeiling
	fioErr   error
	fasterDD int // index into series
	ceiling  int // index into series of the fio runs, or -1
}

// runDevices copies the whole range of p with every tool, round-robin so
// the tools see the same state of the machine, and checks every copy.
func (b *bench) runDevices(label string, p devicePair, n int64, tools []tool, warmup, runs int) deviceResult {
	res := deviceResult{label: label, n: n}
	for _, t := range tools {
		res.series = append(res.series, series{tool: t.name})
	}
	for round := 0; round < warmup+runs && b.ctx.Err() == nil; round++ {
		for i, t := range tools {
			if b.ctx.Err() != nil {
				break
			}
			s, ok := b.deviceRun(p, n, t, round)
			if round >= warmup {
				s.ok = ok
				res.series[i].samples = append(res.series[i].samples, s)
			}
		}
	}
	res.fasterDD, res.ceiling = -1, -1
	for i, s := range res.series {
		if tools[i].measure != nil {
			res.ceiling = i
		}
		if !strings.HasPrefix(s.tool, "dd") {
			continue
		}
		if res.fasterDD < 0 || median(s.mibps(n)) > median(res.series[res.fasterDD].mibps(n)) {
			res.fasterDD = i
		}
	}
	return res
}

func (b *bench) deviceRun(p devicePair, n int64, t tool, round int) (sample, bool) {
	if t.measure != nil {
		s, err := t.measure(n)
		if err != nil {
			b.fail("%s: %v", t.name, err)
			return sample{}, false
		}
		b.logf("  %-10s round %d: %7.1f MiB/s", t.name, round, float64(n)/(1<<20)/s.secs)
		return s, true
	}
	if err := stamp(p.dst, n, round); err != nil {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	s, err := runTimed(b.ctx, t.argv(p.src, p.dst, n))
	if err != nil {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	if err := sameRange(b.ctx, p.src, p.dst, n); err != nil {
		b.fail("%s copied wrong data: %v", t.name, err)
		return s, false
	}
	b.logf("  %-10s round %d: %7.1f MiB/s  cpu %.2fs  rss %d KiB  (cmp ok)",
		t.name, round, float64(n)/(1<<20)/s.secs, s.cpu, s.maxRSSKiB)
	return s, true
}
