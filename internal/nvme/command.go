package nvme

import "encoding/binary"

// The Copy command (NVM Command Set Specification 1.2, section 3.3.2):
//
//	opcode 19h (host to controller: the data is the list of source ranges)
//	CDW10-11  SDLBA: first destination LBA (CDW10 bits 31:0, CDW11 63:32)
//	CDW12     bits 7:0 NR, number of source ranges, 0-based
//	          bits 11:8 DESFMT, descriptor format
//	          bits 15:12 PRINFOR, 19:16 CETYPE, 23:20 DTYPE, 24 STCW,
//	          25 STCR, 29:26 PRINFOW, 30 FUA, 31 LR: all left 0
//	CDW13-15  directives, tags for protection information: 0
//
// Source ranges are copied in list order to consecutive destination LBAs
// ("the LBAs specified by Source Range 0 are copied to the lowest numbered
// LBAs specified by the SDLBA field", same section).
const opCopy = 0x19

// Source range entry layouts (NVM Command Set 1.2, Figures 39 and 40): both
// formats have SLBA at bytes 15:08 and NLB (0-based) in bits 15:00 of bytes
// 19:16; format 0h entries are 32 bytes, format 1h entries 40 (its
// expected reference and storage tags grow to 80 bits). Everything else
// (source namespace, command extension, fast-copy-only, expected tags) is
// reserved or ignored without protection information, and left 0.
const (
	rangeSLBA = 8
	rangeNLB  = 16
)

// rangeSize is the size of one source range entry in descriptor format f.
func rangeSize(f uint8) int {
	if f == 1 {
		return 40
	}
	return 32
}

// srcRange is one source range: blocks logical blocks from slba.
type srcRange struct {
	slba   uint64
	blocks int64
}

// copyCmd is one Copy command: its source ranges land one after the other
// from sdlba on.
type copyCmd struct {
	sdlba  uint64
	ranges []srcRange
	blocks int64 // sum of the ranges' blocks
	first  int64 // blocks from the start of the Copy call to this command
}

// copyShape is what one Copy command may carry on a namespace.
type copyShape struct {
	rangeBlocks int64 // blocks per source range (MSSRL, at most MCL)
	maxRanges   int   // source ranges per command (MSRC + 1)
	cmdBlocks   int64 // blocks per command (MCL, at most maxRanges ranges)
}

func shapeOf(n Namespace) copyShape {
	return copyShape{rangeBlocks: n.RangeBlocks(), maxRanges: n.MaxRanges(), cmdBlocks: n.CommandBlocks()}
}

// splitCopy cuts a copy of blocks logical blocks from srcLBA to dstLBA into
// Copy commands of the namespace's shape: each command as many ranges as
// MSRC and MCL allow, each range at most MSSRL blocks. The commands tile
// the copy exactly and in order; only the last command and its last range
// may be short.
func splitCopy(srcLBA, dstLBA uint64, blocks int64, s copyShape) []copyCmd {
	if blocks <= 0 || s.rangeBlocks <= 0 || s.maxRanges <= 0 || s.cmdBlocks <= 0 {
		return nil
	}
	var cmds []copyCmd
	for done := int64(0); done < blocks; {
		c := copyCmd{sdlba: dstLBA + uint64(done), first: done}
		for len(c.ranges) < s.maxRanges && c.blocks < s.cmdBlocks && done < blocks {
			n := min(s.rangeBlocks, s.cmdBlocks-c.blocks, blocks-done)
			c.ranges = append(c.ranges, srcRange{slba: srcLBA + uint64(done), blocks: n})
			c.blocks += n
			done += n
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// encodeRanges lays out the source range list of a Copy command in
// descriptor format f, in a page-aligned buffer.
func encodeRanges(f uint8, ranges []srcRange) []byte {
	size := rangeSize(f)
	buf := alignedBuffer(size * len(ranges))
	for i, r := range ranges {
		e := buf[i*size : (i+1)*size]
		binary.LittleEndian.PutUint64(e[rangeSLBA:], r.slba)
		binary.LittleEndian.PutUint16(e[rangeNLB:], uint16(r.blocks-1))
	}
	return buf
}

// copyCDW12 is Command Dword 12 of a Copy with nr source ranges in
// descriptor format f: NR (0-based) and DESFMT, no protection information
// actions or checks, no FUA, no limited retry, no directives.
func copyCDW12(nr int, f uint8) uint32 {
	return uint32(nr-1)&0xff | uint32(f&0xf)<<8
}

// command turns c into the NVMe command for namespace nsid.
func (c copyCmd) command(nsid uint32, f uint8) *command {
	return &command{
		opcode: opCopy,
		nsid:   nsid,
		cdw10:  uint32(c.sdlba),
		cdw11:  uint32(c.sdlba >> 32),
		cdw12:  copyCDW12(len(c.ranges), f),
		data:   encodeRanges(f, c.ranges),
	}
}
