// Package plan turns a copy request into an ordered sequence of chunks, each
// to be copied either by offload (copy_file_range, which the storage may do
// itself) or by onload (read and write through host memory).
//
// The package is pure arithmetic: it does no I/O and imports nothing of the
// project, so every rule below is checked by table tests and a fuzz target.
//
// Offload chunks must start and end on the logical block size, because the
// kernel's block copy path rejects anything else, and must not exceed
// copy_max_bytes, because that is the largest request the block layer sends.
// Bytes that cannot meet those rules (an unaligned head or tail, or a whole
// range whose source and destination are misaligned to each other) are
// onloaded; everything that can be offloaded is.
//
// When source and destination are the same device and their ranges overlap,
// users expect the result of a copy through a temporary buffer (memmove).
// Copying in one pass would read bytes an earlier chunk already overwrote, so
// the chunks run backwards (from the end of the range) when the destination
// lies after the source, and forwards when it lies before. In addition no
// chunk may be longer than the distance between source and destination, so
// that no chunk overlaps itself: the kernel rejects a copy_file_range whose
// ranges overlap on one device with EINVAL, and the offload canary (reading a
// chunk back from both sides after offloading it) can only compare the two
// sides when writing the destination did not change the source.
package plan

import (
	"fmt"
	"iter"
	"math"
)

// Method says how a chunk is copied.
type Method uint8

const (
	// Onload copies through host memory with read and write.
	Onload Method = iota
	// Offload copies with copy_file_range, letting the storage move the data.
	Offload
)

func (m Method) String() string {
	switch m {
	case Onload:
		return "onload"
	case Offload:
		return "offload"
	}
	return fmt.Sprintf("Method(%d)", uint8(m))
}

// Chunk is one copy step: Len bytes from Src to Dst, by Method.
type Chunk struct {
	Src, Dst, Len int64 // offsets in the same address space as Input.Src/Dst
	Method        Method
}

// Input describes a copy request and the limits that shape its chunks.
type Input struct {
	// Src and Dst are byte offsets. When SameDevice is set both are offsets
	// on the same whole disk: a partition's offsets must already be shifted
	// by the partition start, or an overlap between a partition and its disk
	// goes unnoticed.
	Src, Dst int64
	// Len is the number of bytes to copy; it must be positive.
	Len int64
	// SameDevice says that source and destination are the same underlying
	// disk or file, so overlapping ranges must be handled.
	SameDevice bool
	// BlockSize is the alignment unit for offload chunks: the logical block
	// size, or 1 for regular files. It must be a power of two.
	BlockSize int64
	// OffloadMax is the most bytes in one offload chunk (copy_max_bytes);
	// 0 means no offload at all, every chunk is onloaded.
	OffloadMax int64
	// OnloadMax is the most bytes in one onload chunk; 0 means unlimited,
	// because the onload engine pipelines its buffers within one chunk.
	OnloadMax int64
	// Backward runs the chunks from the end of the range even when the
	// ranges do not overlap (then any order gives the same result): the
	// rest of an interrupted backward copy keeps that order, so that its
	// finished part stays one suffix of the whole range.
	Backward bool
}

// segment is a run of the range copied by one method and split into pieces
// of at most piece bytes. Pieces start at off + k*piece in both directions,
// so offload pieces stay aligned whichever way the plan runs.
type segment struct {
	off, len, piece int64 // off is relative to Input.Src/Dst
	method          Method
}

func (s segment) count() int64 {
	n := s.len / s.piece
	if s.len%s.piece != 0 {
		n++
	}
	return n
}

// chunk returns piece k of the segment.
func (s segment) chunk(in *Input, k int64) Chunk {
	off := k * s.piece
	l := min(s.piece, s.len-off)
	return Chunk{Src: in.Src + s.off + off, Dst: in.Dst + s.off + off, Len: l, Method: s.method}
}

// Plan is the ordered chunk sequence for one Input. Its size does not depend
// on Len: chunks are computed as they are iterated.
type Plan struct {
	in       Input
	segs     [3]segment // head, middle, tail; only the first nsegs are used
	nsegs    int
	backward bool
	overlap  bool
	reason   string
}

// New validates in and returns its plan.
func New(in Input) (*Plan, error) {
	if err := validate(in); err != nil {
		return nil, err
	}
	p := &Plan{in: in}
	if in.SameDevice && in.Src == in.Dst {
		return p, nil
	}
	dist := distance(in.Src, in.Dst)
	p.overlap = in.SameDevice && dist < in.Len
	p.backward = p.overlap && in.Dst > in.Src || in.Backward

	// limit caps a piece size by the overlap distance, so that no chunk
	// overlaps itself.
	limit := func(n int64) int64 {
		if p.overlap {
			return min(n, dist)
		}
		return n
	}
	onPiece := limit(in.Len)
	if in.OnloadMax > 0 {
		onPiece = limit(min(in.OnloadMax, in.Len))
	}

	head, middle, reason := split(in)
	p.reason = reason
	if middle == 0 {
		p.add(segment{off: 0, len: in.Len, piece: onPiece, method: Onload})
		return p, nil
	}
	// Src and Dst are congruent modulo BlockSize here, so the distance is a
	// multiple of it and capping by it keeps offload pieces aligned.
	offPiece := limit(in.OffloadMax &^ (in.BlockSize - 1))
	p.add(segment{off: 0, len: head, piece: onPiece, method: Onload})
	p.add(segment{off: head, len: middle, piece: offPiece, method: Offload})
	p.add(segment{off: head + middle, len: in.Len - head - middle, piece: onPiece, method: Onload})
	return p, nil
}

func (p *Plan) add(s segment) {
	if s.len > 0 {
		p.segs[p.nsegs] = s
		p.nsegs++
	}
}

func validate(in Input) error {
	switch {
	case in.Src < 0:
		return fmt.Errorf("plan: source offset %d is negative", in.Src)
	case in.Dst < 0:
		return fmt.Errorf("plan: destination offset %d is negative", in.Dst)
	case in.Len <= 0:
		return fmt.Errorf("plan: length %d is not positive", in.Len)
	case in.Src > math.MaxInt64-in.Len:
		return fmt.Errorf("plan: source offset %d plus length %d overflows int64", in.Src, in.Len)
	case in.Dst > math.MaxInt64-in.Len:
		return fmt.Errorf("plan: destination offset %d plus length %d overflows int64", in.Dst, in.Len)
	case in.BlockSize < 1 || in.BlockSize&(in.BlockSize-1) != 0:
		return fmt.Errorf("plan: block size %d is not a positive power of two", in.BlockSize)
	case in.OffloadMax < 0:
		return fmt.Errorf("plan: offload limit %d is negative", in.OffloadMax)
	case in.OnloadMax < 0:
		return fmt.Errorf("plan: onload limit %d is negative", in.OnloadMax)
	}
	return nil
}

// split returns the onload head and the offloadable middle of the range (the
// tail is the rest), and why some bytes cannot be offloaded. A zero middle
// means the whole range is onloaded.
func split(in Input) (head, middle int64, reason string) {
	bs := in.BlockSize
	switch {
	case in.OffloadMax == 0:
		return 0, 0, ""
	case in.OffloadMax < bs:
		return 0, 0, fmt.Sprintf("offload limit of %d bytes is smaller than the %d-byte block size", in.OffloadMax, bs)
	case in.Src&(bs-1) != in.Dst&(bs-1):
		return 0, 0, fmt.Sprintf("source and destination offsets differ modulo the %d-byte block size", bs)
	}
	head = min(in.Len, (bs-in.Src&(bs-1))&(bs-1))
	middle = (in.Len - head) &^ (bs - 1)
	tail := in.Len - head - middle
	switch {
	case middle == 0:
		reason = fmt.Sprintf("the %d-byte range holds no whole aligned %d-byte block", in.Len, bs)
	case head > 0 && tail > 0:
		reason = fmt.Sprintf("unaligned head of %d bytes and tail of %d bytes", head, tail)
	case head > 0:
		reason = fmt.Sprintf("unaligned head of %d bytes", head)
	case tail > 0:
		reason = fmt.Sprintf("unaligned tail of %d bytes", tail)
	}
	return head, middle, reason
}

func distance(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// All yields the chunks in execution order.
func (p *Plan) All() iter.Seq[Chunk] {
	return func(yield func(Chunk) bool) {
		if p.backward {
			for i := p.nsegs - 1; i >= 0; i-- {
				s := p.segs[i]
				for k := s.count() - 1; k >= 0; k-- {
					if !yield(s.chunk(&p.in, k)) {
						return
					}
				}
			}
			return
		}
		for i := range p.nsegs {
			s := p.segs[i]
			for k := range s.count() {
				if !yield(s.chunk(&p.in, k)) {
					return
				}
			}
		}
	}
}

// Backward reports whether chunks run from the end of the range to its
// start: same device, overlapping ranges, destination after source (or
// Input.Backward).
func (p *Plan) Backward() bool { return p.backward }

// Overlapping reports whether source and destination ranges overlap on the
// same device, so that every chunk is capped by their distance.
func (p *Plan) Overlapping() bool { return p.overlap }

// Noop reports whether there is nothing to copy: the same device with equal
// source and destination offsets. Such a plan has no chunks.
func (p *Plan) Noop() bool { return p.in.SameDevice && p.in.Src == p.in.Dst }

// Reason says why offload cannot be used for some bytes of the range, or is
// empty when every byte offloads or offload was not asked for (OffloadMax 0).
func (p *Plan) Reason() string { return p.reason }

// Stats counts the chunks and bytes of a plan by method.
type Stats struct {
	Chunks, OffloadChunks, OnloadChunks int64
	OffloadBytes, OnloadBytes           int64
}

// Stats returns the plan's counts, computed without iterating.
func (p *Plan) Stats() Stats {
	var st Stats
	for _, s := range p.segs[:p.nsegs] {
		n := s.count()
		st.Chunks += n
		if s.method == Offload {
			st.OffloadChunks += n
			st.OffloadBytes += s.len
		} else {
			st.OnloadChunks += n
			st.OnloadBytes += s.len
		}
	}
	return st
}
