package sparse

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type run struct {
	off, n int64
	zero   bool
}

func splitRuns(t *testing.T, p []byte, off, lo, hi, grain int64) []run {
	t.Helper()
	var runs []run
	err := Split(p, off, lo, hi, grain, func(o, n int64, z bool) error {
		runs = append(runs, run{o, n, z})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func TestSplitFindsWholeZeroBlocksInsideTheRangeOnly(t *testing.T) {
	const g = 4096
	data := func(blocks ...bool) []byte { // true = zero block
		p := make([]byte, len(blocks)*g)
		for i, z := range blocks {
			if !z {
				for j := range g {
					p[i*g+j] = byte(j%251 + 1)
				}
			}
		}
		return p
	}
	tests := []struct {
		name        string
		p           []byte
		off, lo, hi int64
		want        []run
	}{
		{"all data", data(false, false), 0, 0, 2 * g, []run{{0, 2 * g, false}}},
		{"all zero", data(true, true), 0, 0, 2 * g, []run{{0, 2 * g, true}}},
		{"zero in the middle", data(false, true, true, false), 0, 0, 4 * g, []run{{0, g, false}, {g, 2 * g, true}, {3 * g, g, false}}},
		{"zero at the end", data(false, true), 0, 0, 2 * g, []run{{0, g, false}, {g, g, true}}},
		{"zero at the start", data(true, false), 0, 0, 2 * g, []run{{0, g, true}, {g, g, false}}},
		// The window of a direct write: bytes before lo are the
		// destination's own, read back; they are never a zero run.
		{"zero block outside [lo,hi) stays data", data(true, true, true), 0, 100, 3*g - 1, []run{{0, g, false}, {g, g, true}, {2 * g, g, false}}},
		{"offset not on the grain", data(true, true, true)[:3*g-100], 100, 100, 3 * g, []run{{100, g - 100, false}, {g, 2 * g, true}}},
		{"one zero byte is not a run", make([]byte, 10), 5, 5, 15, []run{{5, 10, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitRuns(t, tt.p, tt.off, tt.lo, tt.hi, g)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("runs %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSplitTilesTheBuffer: runs are in order, cover the buffer exactly, and
// a zero run really holds zeroes, on random mixtures.
func TestSplitTilesTheBuffer(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		n := r.IntN(64<<10) + 1
		p := make([]byte, n)
		for j := 0; j < n; j += 512 {
			if r.IntN(3) == 0 {
				for k := j; k < min(j+512, n); k++ {
					p[k] = byte(r.IntN(256))
				}
			}
		}
		off := int64(r.IntN(10000))
		lo, hi := off+int64(r.IntN(n)), off+int64(n)-int64(r.IntN(n))
		grain := int64(512 << r.IntN(4))
		next := off
		for _, run := range splitRuns(t, p, off, lo, hi, grain) {
			if run.off != next || run.n <= 0 {
				t.Fatalf("case %d: run %+v does not continue at %d", i, run, next)
			}
			if run.zero && (run.off%grain != 0 || run.n%grain != 0 || run.off < lo || run.off+run.n > hi || !IsZero(p[run.off-off:run.off-off+run.n])) {
				t.Fatalf("case %d: zero run %+v is not whole zero blocks of %d inside [%d,%d)", i, run, grain, lo, hi)
			}
			next = run.off + run.n
		}
		if next != off+int64(n) {
			t.Fatalf("case %d: runs end at %d, want %d", i, next, off+int64(n))
		}
	}
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 4096, 16 << 10, 16<<10 + 1, 100000} {
		p := make([]byte, n)
		if !IsZero(p) {
			t.Errorf("%d zero bytes: IsZero false", n)
		}
		if n > 0 {
			p[n-1] = 1
			if IsZero(p) {
				t.Errorf("%d bytes with the last one set: IsZero true", n)
			}
		}
	}
}

// BenchmarkSplitRandom is the cost zero detection adds to the onload copy
// of data that holds no zeroes: one 8 MiB buffer, 4 KiB grain.
func BenchmarkSplitRandom(b *testing.B) {
	p := make([]byte, 8<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		_ = Split(p, 0, 0, int64(len(p)), 4096, func(int64, int64, bool) error { return nil })
	}
}

// BenchmarkSplitZero is the worst case: a buffer of zeroes is read whole.
func BenchmarkSplitZero(b *testing.B) {
	p := make([]byte, 8<<20)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		_ = Split(p, 0, 0, int64(len(p)), 4096, func(int64, int64, bool) error { return nil })
	}
}
