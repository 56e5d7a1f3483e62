package plan

import (
	"slices"
	"strings"
	"testing"
)

func on(src, dst, n int64) Chunk  { return Chunk{Src: src, Dst: dst, Len: n, Method: Onload} }
func off(src, dst, n int64) Chunk { return Chunk{Src: src, Dst: dst, Len: n, Method: Offload} }

const mib = 1 << 20

func TestPlanChunks(t *testing.T) {
	tests := []struct {
		name     string
		in       Input
		want     []Chunk
		backward bool
		reason   string // substring; "" means Reason must be empty
	}{
		{
			name: "aligned copy between devices offloads in limit-sized chunks",
			in:   Input{Src: 0, Dst: 4096, Len: 10240, BlockSize: 512, OffloadMax: 4096},
			want: []Chunk{off(0, 4096, 4096), off(4096, 8192, 4096), off(8192, 12288, 2048)},
		},
		{
			name:   "unaligned head goes to onload",
			in:     Input{Src: 100, Dst: 1124, Len: 924, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{on(100, 1124, 412), off(512, 1536, 512)},
			reason: "unaligned head of 412 bytes",
		},
		{
			name:   "unaligned tail goes to onload",
			in:     Input{Src: 0, Dst: 8192, Len: 1000, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{off(0, 8192, 512), on(512, 8704, 488)},
			reason: "unaligned tail of 488 bytes",
		},
		{
			name:   "unaligned head and tail go to onload around an offloaded middle",
			in:     Input{Src: 100, Dst: 612, Len: 2000, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{on(100, 612, 412), off(512, 1024, 1536), on(2048, 2560, 52)},
			reason: "unaligned head of 412 bytes and tail of 52 bytes",
		},
		{
			name:   "offsets that differ modulo the block size onload everything",
			in:     Input{Src: 0, Dst: 100, Len: 4096, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{on(0, 100, 4096)},
			reason: "differ modulo the 512-byte block size",
		},
		{
			name:   "offload limit below the block size onloads everything",
			in:     Input{Src: 0, Dst: 4096, Len: 4096, BlockSize: 512, OffloadMax: 256},
			want:   []Chunk{on(0, 4096, 4096)},
			reason: "smaller than the 512-byte block size",
		},
		{
			name: "offload limit is rounded down to the block size",
			in:   Input{Src: 0, Dst: 4096, Len: 2048, BlockSize: 512, OffloadMax: 1000},
			want: []Chunk{off(0, 4096, 512), off(512, 4608, 512), off(1024, 5120, 512), off(1536, 5632, 512)},
		},
		{
			name:   "range inside one block onloads it whole",
			in:     Input{Src: 100, Dst: 100, Len: 300, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{on(100, 100, 300)},
			reason: "holds no whole aligned 512-byte block",
		},
		{
			name:   "head and tail with no whole block between merge into one onload chunk",
			in:     Input{Src: 500, Dst: 1012, Len: 100, BlockSize: 512, OffloadMax: mib},
			want:   []Chunk{on(500, 1012, 100)},
			reason: "holds no whole aligned",
		},
		{
			name: "zero offload limit onloads everything in one chunk without a reason",
			in:   Input{Src: 0, Dst: 4096, Len: 12345, BlockSize: 512},
			want: []Chunk{on(0, 4096, 12345)},
		},
		{
			name: "onload limit splits onload chunks",
			in:   Input{Src: 0, Dst: 4096, Len: 2500, BlockSize: 512, OnloadMax: 1000},
			want: []Chunk{on(0, 4096, 1000), on(1000, 5096, 1000), on(2000, 6096, 500)},
		},
		{
			name: "regular files with block size 1 offload every byte",
			in:   Input{Src: 3, Dst: 7, Len: 10, BlockSize: 1, OffloadMax: 4},
			want: []Chunk{off(3, 7, 4), off(7, 11, 4), off(11, 15, 2)},
		},
		{
			name:     "overlap with dst after src copies backwards",
			in:       Input{Src: 0, Dst: 1024, Len: 3072, SameDevice: true, BlockSize: 512, OffloadMax: mib},
			want:     []Chunk{off(2048, 3072, 1024), off(1024, 2048, 1024), off(0, 1024, 1024)},
			backward: true,
		},
		{
			name: "overlap with dst before src copies forwards",
			in:   Input{Src: 1024, Dst: 0, Len: 3072, SameDevice: true, BlockSize: 512, OffloadMax: mib},
			want: []Chunk{off(1024, 0, 1024), off(2048, 1024, 1024), off(3072, 2048, 1024)},
		},
		{
			name:     "overlap caps onload chunks at the distance",
			in:       Input{Src: 0, Dst: 100, Len: 300, SameDevice: true, BlockSize: 512, OffloadMax: mib},
			want:     []Chunk{on(200, 300, 100), on(100, 200, 100), on(0, 100, 100)},
			backward: true,
			reason:   "differ modulo",
		},
		{
			name: "overlap keeps the offload limit when it is below the distance",
			in:   Input{Src: 4096, Dst: 0, Len: 8192, SameDevice: true, BlockSize: 512, OffloadMax: 2048},
			want: []Chunk{off(4096, 0, 2048), off(6144, 2048, 2048), off(8192, 4096, 2048), off(10240, 6144, 2048)},
		},
		{
			name: "overlap backwards runs tail, middle and head in reverse with aligned offload chunks",
			in:   Input{Src: 100, Dst: 1124, Len: 2000, SameDevice: true, BlockSize: 512, OffloadMax: mib},
			want: []Chunk{
				on(2048, 3072, 52),
				off(1536, 2560, 512), off(512, 1536, 1024),
				on(100, 1124, 412),
			},
			backward: true,
			reason:   "unaligned head of 412 bytes and tail of 52 bytes",
		},
		{
			name:     "ranges overlapping by one byte still cap chunks at the distance",
			in:       Input{Src: 0, Dst: 4095, Len: 4096, SameDevice: true, BlockSize: 1, OffloadMax: mib},
			want:     []Chunk{off(4095, 8190, 1), off(0, 4095, 4095)},
			backward: true,
		},
		{
			name: "non-overlapping ranges on the same device copy forwards without a distance cap",
			in:   Input{Src: 0, Dst: 4096, Len: 4096, SameDevice: true, BlockSize: 512, OffloadMax: mib},
			want: []Chunk{off(0, 4096, 4096)},
		},
		{
			name:     "Backward runs a non-overlapping copy from the end (the rest of a resumed backward copy)",
			in:       Input{Src: 0, Dst: 8192, Len: 5000, SameDevice: true, BlockSize: 512, OffloadMax: 2048, OnloadMax: 1000, Backward: true},
			want:     []Chunk{on(4608, 12800, 392), off(4096, 12288, 512), off(2048, 10240, 2048), off(0, 8192, 2048)},
			backward: true,
			reason:   "unaligned tail of 392 bytes",
		},
		{
			name: "same offsets on different devices still copy",
			in:   Input{Src: 512, Dst: 512, Len: 1024, BlockSize: 512, OffloadMax: mib},
			want: []Chunk{off(512, 512, 1024)},
		},
		{
			name: "same offsets on the same device copy nothing",
			in:   Input{Src: 512, Dst: 512, Len: 1024, SameDevice: true, BlockSize: 512, OffloadMax: mib},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.in)
			if err != nil {
				t.Fatalf("New(%+v): %v", tt.in, err)
			}
			got := slices.Collect(p.All())
			if !slices.Equal(got, tt.want) {
				t.Errorf("chunks:\n got %v\nwant %v", got, tt.want)
			}
			if p.Backward() != tt.backward {
				t.Errorf("Backward() = %v, want %v", p.Backward(), tt.backward)
			}
			if r := p.Reason(); (tt.reason == "") != (r == "") || !strings.Contains(r, tt.reason) {
				t.Errorf("Reason() = %q, want it to contain %q", r, tt.reason)
			}
			if noop := len(tt.want) == 0; p.Noop() != noop {
				t.Errorf("Noop() = %v, want %v", p.Noop(), noop)
			}
			checkPlan(t, tt.in, p)
		})
	}
}

func TestNewRejectsInvalidInput(t *testing.T) {
	const maxInt64 = 1<<63 - 1
	valid := Input{Src: 0, Dst: 4096, Len: 4096, BlockSize: 512, OffloadMax: mib}
	tests := []struct {
		name   string
		change func(*Input)
		msg    string
	}{
		{"negative source offset is refused", func(in *Input) { in.Src = -1 }, "source offset -1"},
		{"negative destination offset is refused", func(in *Input) { in.Dst = -512 }, "destination offset -512"},
		{"zero length is refused", func(in *Input) { in.Len = 0 }, "length 0"},
		{"negative length is refused", func(in *Input) { in.Len = -4096 }, "length -4096"},
		{"source end past int64 is refused", func(in *Input) { in.Src = maxInt64 - 100 }, "overflows"},
		{"destination end past int64 is refused", func(in *Input) { in.Dst = maxInt64 }, "overflows"},
		{"zero block size is refused", func(in *Input) { in.BlockSize = 0 }, "block size 0"},
		{"block size that is not a power of two is refused", func(in *Input) { in.BlockSize = 1536 }, "block size 1536"},
		{"negative offload limit is refused", func(in *Input) { in.OffloadMax = -1 }, "offload limit -1"},
		{"negative onload limit is refused", func(in *Input) { in.OnloadMax = -1 }, "onload limit -1"},
	}
	if _, err := New(valid); err != nil {
		t.Fatalf("New(%+v) of the unchanged input: %v", valid, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid
			tt.change(&in)
			p, err := New(in)
			if err == nil {
				t.Fatalf("New(%+v) = %v, want an error", in, p)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("New(%+v) error %q does not mention %q", in, err, tt.msg)
			}
		})
	}
}

func TestMethodString(t *testing.T) {
	for m, want := range map[Method]string{Onload: "onload", Offload: "offload", 7: "Method(7)"} {
		if got := m.String(); got != want {
			t.Errorf("Method(%d).String() = %q, want %q", uint8(m), got, want)
		}
	}
}

// hugeInput is a 1 TiB-range copy whose overlap distance of 4 KiB gives
// 2^38 chunks: materialising them would need terabytes.
var hugeInput = Input{Src: 0, Dst: 4096, Len: 1 << 50, SameDevice: true, BlockSize: 512, OffloadMax: mib}

func TestHugePlanIteratesLazily(t *testing.T) {
	p, err := New(hugeInput)
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if want := int64(1<<50) / 4096; st.Chunks != want || st.OffloadChunks != want || st.OffloadBytes != 1<<50 {
		t.Errorf("Stats() = %+v, want %d offload chunks of all %d bytes", st, want, int64(1<<50))
	}
	var first []Chunk
	for c := range p.All() {
		first = append(first, c)
		if len(first) == 3 {
			break
		}
	}
	want := []Chunk{
		off(1<<50-4096, 1<<50, 4096),
		off(1<<50-8192, 1<<50-4096, 4096),
		off(1<<50-12288, 1<<50-8192, 4096),
	}
	if !slices.Equal(first, want) {
		t.Errorf("first chunks = %v, want %v", first, want)
	}

	take := func(n int) func() {
		return func() {
			i := 0
			for range p.All() {
				if i++; i == n {
					break
				}
			}
		}
	}
	few := testing.AllocsPerRun(10, take(3))
	many := testing.AllocsPerRun(10, take(1<<16))
	if few > 4 || many != few {
		t.Errorf("allocations: %v for 3 chunks, %v for 65536 chunks; want a handful, independent of the chunk count", few, many)
	}
	if a := testing.AllocsPerRun(10, func() { _ = p.Stats() }); a != 0 {
		t.Errorf("Stats() allocates %v times, want 0", a)
	}
}

func BenchmarkIterate(b *testing.B) {
	p, err := New(hugeInput)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for range p.All() {
		if n++; n == b.N {
			break
		}
	}
}
