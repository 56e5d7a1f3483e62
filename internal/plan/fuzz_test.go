package plan

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// FuzzPlan maps arbitrary values onto small copies (offsets and lengths
// below 4 KiB, block sizes 1 to 512) so that every plan can be executed on a
// byte slice and compared with memmove.
func FuzzPlan(f *testing.F) {
	f.Add(uint16(0), uint16(1024), uint16(3072), true, uint8(9), uint16(4096), uint16(0))
	f.Add(uint16(100), uint16(1124), uint16(2000), true, uint8(9), uint16(8191), uint16(0))
	f.Add(uint16(1024), uint16(0), uint16(3072), true, uint8(9), uint16(2048), uint16(700))
	f.Add(uint16(0), uint16(100), uint16(300), true, uint8(9), uint16(4096), uint16(0))
	f.Add(uint16(3), uint16(7), uint16(10), false, uint8(0), uint16(4), uint16(3))
	f.Add(uint16(500), uint16(1012), uint16(100), false, uint8(9), uint16(512), uint16(0))
	f.Add(uint16(512), uint16(512), uint16(1024), true, uint8(9), uint16(512), uint16(0))
	f.Fuzz(func(t *testing.T, src, dst, length uint16, same bool, shift uint8, offMax, onMax uint16) {
		in := Input{
			Src:        int64(src % 4096),
			Dst:        int64(dst % 4096),
			Len:        1 + int64(length%4096),
			SameDevice: same,
			BlockSize:  1 << (shift % 10),
			OffloadMax: int64(offMax % 8192),
			OnloadMax:  int64(onMax % 5000),
		}
		p, err := New(in)
		if err != nil {
			t.Fatalf("New(%+v): %v", in, err)
		}
		checkPlan(t, in, p)
	})
}

// checkPlan checks every promise of a plan for a small input: tiling, order,
// limits, alignment, maximal offload, agreement of Stats, and that running
// the chunks gives the memmove result.
func checkPlan(t *testing.T, in Input, p *Plan) {
	t.Helper()
	var chunks []Chunk
	for c := range p.All() {
		chunks = append(chunks, c)
	}
	if in.SameDevice && in.Src == in.Dst {
		if !p.Noop() || len(chunks) != 0 || p.Stats() != (Stats{}) || p.Backward() || p.Reason() != "" {
			t.Fatalf("%+v: same offsets on one device: Noop %v, chunks %v, Stats %+v, Backward %v, Reason %q; want an empty no-op plan",
				in, p.Noop(), chunks, p.Stats(), p.Backward(), p.Reason())
		}
		return
	}
	if p.Noop() {
		t.Fatalf("%+v: Noop() is true for a copy that moves data", in)
	}

	dist := in.Dst - in.Src
	if dist < 0 {
		dist = -dist
	}
	overlap := in.SameDevice && dist < in.Len
	if want := overlap && in.Dst > in.Src || in.Backward; p.Backward() != want {
		t.Fatalf("%+v: Backward() = %v, want %v", in, p.Backward(), want)
	}
	if p.Overlapping() != overlap {
		t.Fatalf("%+v: Overlapping() = %v, want %v", in, p.Overlapping(), overlap)
	}
	offCap := in.OffloadMax &^ (in.BlockSize - 1)
	onCap := in.OnloadMax
	if onCap == 0 {
		onCap = math.MaxInt64
	}
	if overlap {
		offCap, onCap = min(offCap, dist), min(onCap, dist)
	}

	// Chunks are contiguous in execution order, so together with their total
	// this proves they tile the range exactly once.
	var st Stats
	next := in.Src // forward: where the next chunk must start
	if p.Backward() {
		next = in.Src + in.Len // backward: where the next chunk must end
	}
	for i, c := range chunks {
		if c.Len <= 0 {
			t.Fatalf("%+v: chunk %d %+v is empty", in, i, c)
		}
		if c.Dst-c.Src != in.Dst-in.Src {
			t.Fatalf("%+v: chunk %d %+v moves by %d, want %d", in, i, c, c.Dst-c.Src, in.Dst-in.Src)
		}
		if p.Backward() {
			if c.Src+c.Len != next {
				t.Fatalf("%+v: chunk %d %+v does not end at %d where the previous one started", in, i, c, next)
			}
			next = c.Src
		} else {
			if c.Src != next {
				t.Fatalf("%+v: chunk %d %+v does not start at %d where the previous one ended", in, i, c, next)
			}
			next = c.Src + c.Len
		}
		st.Chunks++
		switch c.Method {
		case Offload:
			st.OffloadChunks++
			st.OffloadBytes += c.Len
			bs := in.BlockSize
			if c.Src%bs != 0 || c.Dst%bs != 0 || c.Len%bs != 0 {
				t.Fatalf("%+v: offload chunk %d %+v is not aligned to %d bytes", in, i, c, bs)
			}
			if c.Len > offCap {
				t.Fatalf("%+v: offload chunk %d %+v exceeds its limit of %d bytes", in, i, c, offCap)
			}
		case Onload:
			st.OnloadChunks++
			st.OnloadBytes += c.Len
			if c.Len > onCap {
				t.Fatalf("%+v: onload chunk %d %+v exceeds its limit of %d bytes", in, i, c, onCap)
			}
		default:
			t.Fatalf("%+v: chunk %d %+v has an unknown method", in, i, c)
		}
		// Chunks are as large as their limits allow: two neighbours of one
		// method would otherwise have fitted into one.
		if i > 0 && chunks[i-1].Method == c.Method {
			limit := onCap
			if c.Method == Offload {
				limit = offCap
			}
			if chunks[i-1].Len+c.Len <= limit {
				t.Fatalf("%+v: chunks %d %+v and %d %+v fit in one chunk of at most %d bytes", in, i-1, chunks[i-1], i, c, limit)
			}
		}
	}
	if done := st.OffloadBytes + st.OnloadBytes; done != in.Len {
		t.Fatalf("%+v: chunks cover %d bytes, want %d", in, done, in.Len)
	}
	if got := p.Stats(); got != st {
		t.Fatalf("%+v: Stats() = %+v, iterating gives %+v", in, got, st)
	}

	// Offload covers exactly the aligned blocks of the range when the offsets
	// agree modulo the block size: onload only where alignment forces it.
	var wantOffload int64
	if offCap > 0 && in.Src%in.BlockSize == in.Dst%in.BlockSize {
		first := (in.Src + in.BlockSize - 1) / in.BlockSize * in.BlockSize
		last := (in.Src + in.Len) / in.BlockSize * in.BlockSize
		wantOffload = max(0, last-first)
	}
	if st.OffloadBytes != wantOffload {
		t.Fatalf("%+v: %d bytes offload, want %d", in, st.OffloadBytes, wantOffload)
	}
	if (p.Reason() == "") != (in.OffloadMax == 0 || st.OnloadBytes == 0) {
		t.Fatalf("%+v: Reason() = %q with %d of %d bytes onloaded and offload limit %d", in, p.Reason(), st.OnloadBytes, in.Len, in.OffloadMax)
	}

	checkMemmove(t, in, chunks)
}

// checkMemmove runs the chunks in order on byte slices (one slice when both
// ends are on the same device) and compares with a single memmove.
func checkMemmove(t *testing.T, in Input, chunks []Chunk) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(in.Src), uint64(in.Dst)))
	random := func(n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// A few bytes of slack past both ranges catch writes beyond their end.
	size := max(in.Src, in.Dst) + in.Len + 64
	var src, dst []byte
	if in.SameDevice {
		src = random(size)
		dst = src
	} else {
		src, dst = random(size), random(size)
	}
	want := bytes.Clone(dst)
	copy(want[in.Dst:in.Dst+in.Len], src[in.Src:in.Src+in.Len])
	for _, c := range chunks {
		copy(dst[c.Dst:c.Dst+c.Len], src[c.Src:c.Src+c.Len])
	}
	if !bytes.Equal(dst, want) {
		i := 0
		for dst[i] == want[i] {
			i++
		}
		t.Fatalf("%+v: running chunks %v differs from memmove first at byte %d", in, chunks, i)
	}
}

// FuzzNew feeds New arbitrary int64s: it must never panic, must refuse
// exactly the invalid inputs, and must plan the rest lazily.
func FuzzNew(f *testing.F) {
	f.Add(int64(0), int64(4096), int64(1<<50), true, int64(512), int64(1<<20), int64(0))
	f.Add(int64(math.MaxInt64-10), int64(0), int64(11), false, int64(1), int64(1), int64(1))
	f.Add(int64(-1), int64(0), int64(1), false, int64(512), int64(0), int64(0))
	f.Add(int64(1), int64(math.MaxInt64-1), int64(1), true, int64(1<<62), int64(math.MaxInt64), int64(math.MaxInt64))
	f.Add(int64(0), int64(1), int64(math.MaxInt64-1), true, int64(4096), int64(4096), int64(1))
	f.Fuzz(func(t *testing.T, src, dst, length int64, same bool, bs, offMax, onMax int64) {
		in := Input{Src: src, Dst: dst, Len: length, SameDevice: same, BlockSize: bs, OffloadMax: offMax, OnloadMax: onMax}
		p, err := New(in)
		valid := src >= 0 && dst >= 0 && length > 0 &&
			src <= math.MaxInt64-length && dst <= math.MaxInt64-length &&
			bs > 0 && bs&(bs-1) == 0 && offMax >= 0 && onMax >= 0
		if valid != (err == nil) {
			t.Fatalf("New(%+v) error = %v, valid = %v", in, err, valid)
		}
		if err != nil {
			return
		}
		st := p.Stats()
		if p.Noop() {
			if st != (Stats{}) {
				t.Fatalf("%+v: no-op plan has Stats %+v", in, st)
			}
			return
		}
		if st.OffloadBytes+st.OnloadBytes != length || st.OffloadChunks+st.OnloadChunks != st.Chunks || st.Chunks < 1 || st.Chunks > length {
			t.Fatalf("%+v: Stats() = %+v do not add up to %d bytes", in, st, length)
		}
		// Only the first chunks: a plan may hold up to 2^63 of them.
		n := 0
		for c := range p.All() {
			if c.Len <= 0 || c.Src < src || c.Src > src+length-c.Len || c.Dst-c.Src != dst-src {
				t.Fatalf("%+v: chunk %d %+v is empty or outside the range", in, n, c)
			}
			if n == 0 && !p.Backward() && c.Src != src {
				t.Fatalf("%+v: first chunk %+v of a forward plan does not start at the source offset", in, c)
			}
			if n == 0 && p.Backward() && c.Src+c.Len != src+length {
				t.Fatalf("%+v: first chunk %+v of a backward plan does not end at the end of the range", in, c)
			}
			if n++; n == 4 {
				break
			}
		}
	})
}
