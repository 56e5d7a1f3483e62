package main

import (
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// Ratios pair runs of the same round and leave out rounds where either
// copy failed, so one bad run cannot shift the pairing.
func TestSpeedRatiosPairRoundsAndSkipFailures(t *testing.T) {
	blk := series{samples: []sample{{secs: 1, ok: true}, {secs: 9, ok: false}, {secs: 2, ok: true}}}
	dd := series{samples: []sample{{secs: 2, ok: true}, {secs: 1, ok: true}, {secs: 3, ok: true}}}
	got := speedRatios(blk, dd)
	if want := []float64{2, 1.5}; !slices.Equal(got, want) {
		t.Errorf("speedRatios = %v, want %v", got, want)
	}
}

func TestSeriesCountsOnlyGoodRuns(t *testing.T) {
	s := series{samples: []sample{
		{secs: 1, cpu: 0.5, maxRSSKiB: 4096, ok: true},
		{secs: 100, cpu: 50, maxRSSKiB: 1 << 20, ok: false},
		{secs: 2, cpu: 1.5, maxRSSKiB: 8192, ok: true},
	}}
	const n = 1 << 30
	if got, want := s.mibps(n), []float64{1024, 512}; !slices.Equal(got, want) {
		t.Errorf("mibps = %v, want %v", got, want)
	}
	if got := s.cpuPerGiB(n); got != 1 {
		t.Errorf("cpuPerGiB = %v, want 1 (2 s over 2 GiB)", got)
	}
	if got := s.peakRSSMiB(); got != 8 {
		t.Errorf("peakRSSMiB = %v, want 8", got)
	}
}
