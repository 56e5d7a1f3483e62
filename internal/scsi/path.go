// Package scsi copies between SCSI logical units by the copy manager's own
// EXTENDED COPY (LID1, opcode 83h) sent through the SG_IO ioctl: the LUs
// (an array, the Linux SCSI target LIO) move the blocks themselves, which
// never cross host memory. It works on every kernel, needs CAP_SYS_RAWIO,
// and serves where a LU announces third-party copy (standard INQUIRY 3PC),
// has an NAA designator to be named by, and its copy manager implements
// identification CSCD descriptors (E4h) and block-to-block segments (02h).
// It is an offload path (copypath.Path) named "scsi-xcopy".
//
// Like every passthrough, EXTENDED COPY bypasses the page cache: each
// request writes back both ranges first and drops the destination range
// after (internal/pagecache).
package scsi

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"sync/atomic"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/ioctl"
	"github.com/blkcopy/blkcopy/internal/pagecache"
)

// Defaults for Path's zero fields.
const (
	// DefaultRequest caps one Copy call: a few commands, which LIO runs in
	// 55-372 ms each under QEMU and arrays faster, so progress and
	// interrupts stay live. (Rounded down to whole segments: 124 MiB, four
	// commands, on LIO with 512-byte blocks.)
	DefaultRequest = 128 << 20
	// DefaultInFlight is how many Copy calls the copier may run at once
	// on ranges that do not overlap: the copy manager (LIO's xcopy work
	// queue) runs commands of several callers at once.
	DefaultInFlight = 2
	// DefaultDepth is how many commands one Copy call keeps in flight:
	// with several calls at once, up to InFlight x Depth commands run in
	// the copy manager; when the ranges overlap the copier runs one call
	// at a time and Depth alone keeps the copy manager busy.
	DefaultDepth = 4
	// maxSegmentsPerCommand caps the segments packed into one command
	// where the copy manager takes several (LIO takes one): one command
	// cannot be interrupted, so it should stay short.
	maxSegmentsPerCommand = 8
	// maxSegmentBlocks: BLOCK DEVICE NUMBER OF BLOCKS is 16 bits (SPC-4
	// 6.4.6.5), whatever MAXIMUM SEGMENT LENGTH says.
	maxSegmentBlocks = 0xffff
	// unitBytes is the smallest request after the canary.
	unitBytes = 8 << 20
)

// Path is SCSI EXTENDED COPY by SG_IO as an offload path. The zero value
// uses the defaults above.
type Path struct {
	Request  int64 // most bytes in one Copy call (0: DefaultRequest)
	InFlight int   // Copy calls at once (0: DefaultInFlight)
	Depth    int   // commands at once within one Copy call (0: DefaultDepth)
}

// Name is the path's name in JSON (offload_path) and --offload-path.
func (Path) Name() string { return "scsi-xcopy" }

// sdDisk matches the SCSI disk driver's block device names (sda, sdz,
// sdaa, ...). The name is checked, not only that SG_IO works:
// device-mapper passes SG_IO through to the device underneath (for root
// even when it maps only part of it), so an EXTENDED COPY sent through a
// dm device would land at the LU's LBAs, not the dm device's.
var sdDisk = regexp.MustCompile(`^sd[a-z]+$`)

// IsDisk reports whether disk (a kernel block device name) is a SCSI disk,
// whose partitions and itself this path can serve.
func IsDisk(disk string) bool { return sdDisk.MatchString(disk) }

// Seams for the system calls besides the commands: tests record the cache
// maintenance and stand in for the whole-disk node.
var (
	syncRange  = pagecache.WriteBackRange
	dropRange  = pagecache.DropRange
	openDisk   = os.Open
	deviceSize = ioctl.Size
	identify   = Identify
)

// Open decides whether EXTENDED COPY can serve the pair and how. The
// reasons it gives are what `fallback_reason` and `blkcopy limits` show.
func (p Path) Open(pair copypath.Pair) (copypath.Session, error) {
	src, dst := pair.Src, pair.Dst
	if !src.Block || !dst.Block {
		return nil, copypath.Unavailablef("EXTENDED COPY works between block devices only")
	}
	for _, e := range []copypath.Endpoint{src, dst} {
		if err := scsiDisk(e); err != nil {
			return nil, err
		}
	}
	srcInfo, err := identify(src.File)
	if err != nil {
		return nil, err
	}
	dstInfo := srcInfo
	if src.Dev.Disk != dst.Dev.Disk {
		if dstInfo, err = identify(dst.File); err != nil {
			return nil, err
		}
	}
	if err := copyable(src, srcInfo); err != nil {
		return nil, err
	}
	if err := copyable(dst, dstInfo); err != nil {
		return nil, err
	}
	same := src.Dev.Disk == dst.Dev.Disk
	if !same && bytes.Equal(srcInfo.NAA.Value, dstInfo.NAA.Value) {
		// Two paths to one LU (multipath): the copier judges overlap by
		// disk name and would not see it.
		return nil, copypath.Unavailablef("%s and %s are the same SCSI LU (designator %s) through two paths; blkcopy cannot order an overlapping copy between them", src.Dev.Disk, dst.Dev.Disk, srcInfo.NAA)
	}
	lbs := srcInfo.BlockSize
	if dstInfo.BlockSize != lbs {
		return nil, copypath.Unavailablef("%s has %d-byte blocks and %s %d-byte blocks; blkcopy sends EXTENDED COPY only between LUs of one block size", src.Dev.Disk, lbs, dst.Dev.Disk, dstInfo.BlockSize)
	}
	cscds := []cscd{{designator: *srcInfo.NAA, blockLen: uint32(lbs)}}
	if !same {
		cscds = append(cscds, cscd{designator: *dstInfo.NAA, blockLen: uint32(lbs)})
	}
	// The command goes to the destination LU, through the descriptor
	// opened for writing: its copy manager's limits are the ones to keep.
	shape, err := shapeOf(dst.Dev.Disk, dstInfo.Params, len(cscds), lbs)
	if err != nil {
		return nil, err
	}

	s := &session{src: src, dst: dst, lbs: lbs, cscds: cscds, shape: shape, depth: p.Depth}
	if s.depth <= 0 {
		s.depth = DefaultDepth
	}
	seg := shape.segBlocks * lbs
	req := p.Request
	if req <= 0 {
		req = DefaultRequest
	}
	inFlight := p.InFlight
	if inFlight <= 0 {
		inFlight = DefaultInFlight
	}
	// The unit, where requests start after the canary, is 8 MiB, not a
	// whole segment: one command cannot be interrupted, and on a slow LU
	// a segment of 65535 blocks takes seconds. Smaller is slower: under
	// QEMU, 1 MiB units made a 64 MiB copy on LIO take 11 commands and
	// 0.5 s where whole segments took 4 commands and 0.3 s. The copier
	// grows requests from the unit by measured speed (about 250 ms each)
	// up to Request, whole segments.
	unit := min(seg, max(lbs, unitBytes/lbs*lbs))
	s.lim = copypath.Limits{
		Unit: unit, Align: lbs, Request: max(seg, req/seg*seg), InFlight: inFlight,
		// A GOOD status is the copy manager's word; blkcopy has met copy
		// paths that reported success and moved nothing. One small
		// command, cheap to read back.
		Canary: copypath.CanaryFor(unit, lbs),
	}
	// Past one command, requests are whole commands (all the segments
	// one takes), where a command fits in a request.
	if cmd := seg * int64(shape.segsPerCmd); cmd <= req && cmd > unit {
		s.lim.Request, s.lim.Command = req/cmd*cmd, cmd
	}
	s.views = s.views.Add(pagecache.View{File: src.File, Disk: src.Dev.Disk, Start: src.Start, Size: src.Size})
	s.views = s.views.Add(pagecache.View{File: dst.File, Disk: dst.Dev.Disk, Start: dst.Start, Size: dst.Size})
	for _, e := range []struct {
		ep   copypath.Endpoint
		info *Info
	}{{src, srcInfo}, {dst, dstInfo}} {
		if !e.ep.Dev.Partition {
			continue
		}
		// Buffered reads of the whole disk (udev's blkid, fdisk, a cmp
		// of the disk) cache its pages apart from the partitions' own.
		if f := s.diskView(e.ep.Dev.Disk, e.info); f != nil {
			s.views = s.views.Add(pagecache.View{File: f, Disk: e.ep.Dev.Disk, Size: int64(e.info.Blocks) * lbs})
		}
	}
	return s, nil
}

// scsiDisk says why e cannot be served, or nil when it is an sd disk or a
// partition of one.
func scsiDisk(e copypath.Endpoint) error {
	switch {
	case e.Dev == nil:
		return copypath.Unavailablef("cannot tell whether %s is a SCSI disk (no sysfs entry)", e.Path)
	case len(e.Dev.Slaves) > 0 || !IsDisk(e.Dev.Disk):
		return copypath.Unavailablef("%s is not a SCSI disk or a partition of one", e.Path)
	}
	return nil
}

// copyable says why the LU under e cannot take part in an EXTENDED COPY
// blkcopy sends, or nil.
func copyable(e copypath.Endpoint, info *Info) error {
	disk := e.Dev.Disk
	switch {
	case !info.ThirdPartyCopy:
		return copypath.Unavailablef("SCSI disk %s does not announce third-party copy (INQUIRY 3PC bit clear)", disk)
	case info.NAA == nil:
		return copypath.Unavailablef("SCSI disk %s has no NAA designator (VPD page 83h) to name it in an EXTENDED COPY", disk)
	case info.BlockSize != e.LBS:
		return copypath.Unavailablef("SCSI disk %s reports %d-byte blocks but the kernel %d-byte blocks for %s", disk, info.BlockSize, e.LBS, e.Path)
	case e.Start%info.BlockSize != 0:
		return copypath.Unavailablef("%s starts at byte %d of %s, not on a %d-byte block boundary", e.Path, e.Start, disk, info.BlockSize)
	case uint64(e.Start+e.Size) > info.Blocks*uint64(info.BlockSize):
		return copypath.Unavailablef("%s (%d bytes from byte %d) extends past the end of %s (%d blocks)", e.Path, e.Size, e.Start, disk, info.Blocks)
	}
	return nil
}

// copyShape is what one EXTENDED COPY carries on a copy manager.
type copyShape struct {
	segBlocks  int64 // blocks per segment
	segsPerCmd int
}

// shapeOf turns the copy manager's operating parameters into the shape of
// blkcopy's commands, or says why it cannot take them.
func shapeOf(disk string, p *OperatingParams, ncscd int, lbs int64) (copyShape, error) {
	switch {
	case p == nil:
		return copyShape{}, copypath.Unavailablef("SCSI disk %s does not report its copy operating parameters (RECEIVE COPY RESULTS)", disk)
	case !p.Implements(cscdIdentification) || !p.Implements(segBlockToBlock):
		return copyShape{}, copypath.Unavailablef("the copy manager of %s does not implement identification CSCD descriptors (E4h) and block-to-block segments (02h) (implements % x)", disk, p.Descriptors)
	case p.MaxCSCDs < ncscd:
		return copyShape{}, copypath.Unavailablef("the copy manager of %s takes %d CSCD descriptors per command, a copy between two LUs needs %d", disk, p.MaxCSCDs, ncscd)
	case p.MaxSegments < 1:
		return copyShape{}, copypath.Unavailablef("the copy manager of %s takes no segment descriptors", disk)
	}
	descs := uint32(ncscd * cscdLen)
	if p.MaxListLen < descs+segment02Len {
		return copyShape{}, copypath.Unavailablef("the copy manager of %s takes descriptor lists of %d bytes, one segment needs %d", disk, p.MaxListLen, descs+segment02Len)
	}
	blocks := int64(maxSegmentBlocks)
	if p.MaxSegmentLen > 0 {
		// SPC-4 6.18.4: the most bytes one segment descriptor may move.
		blocks = min(blocks, int64(p.MaxSegmentLen)/lbs)
	}
	// Whole MiB where a segment holds more than one: the copy manager's
	// own pieces (LIO: 512 KiB or 8 MiB) then stay aligned on the device.
	if mb := (1 << 20) / lbs; mb > 0 && blocks > mb {
		blocks = blocks / mb * mb
	}
	if blocks < 1 {
		return copyShape{}, copypath.Unavailablef("the copy manager of %s moves at most %d bytes per segment, less than one %d-byte block", disk, p.MaxSegmentLen, lbs)
	}
	segs := min(p.MaxSegments, int((p.MaxListLen-descs)/segment02Len), maxSegmentsPerCommand)
	return copyShape{segBlocks: blocks, segsPerCmd: segs}, nil
}

// diskView opens the whole-disk node of a partition for cache maintenance
// and checks that it is the LU it should be. It gives up quietly: the view
// only widens the coherency guarantee; the copy does not need it.
func (s *session) diskView(disk string, info *Info) *os.File {
	f, err := openDisk("/dev/" + disk)
	if err != nil {
		return nil
	}
	if n, err := deviceSize(f); err != nil || n != int64(info.Blocks)*info.BlockSize {
		f.Close()
		return nil
	}
	if other, err := identify(f); err != nil || other.NAA == nil || !bytes.Equal(other.NAA.Value, info.NAA.Value) {
		f.Close()
		return nil
	}
	s.disks = append(s.disks, f)
	return f
}

type session struct {
	src, dst copypath.Endpoint
	lbs      int64
	cscds    []cscd // source first; one when both ends are one LU
	shape    copyShape
	depth    int
	lim      copypath.Limits
	views    pagecache.Set
	disks    []*os.File // whole-disk nodes opened for views
	requests atomic.Int64
}

func (s *session) Limits() copypath.Limits { return s.lim }

// Requests is the number of EXTENDED COPY commands sent, failed ones and
// retries after a UNIT ATTENTION too.
func (s *session) Requests() int64 { return s.requests.Load() }

func (s *session) Close() error {
	var errs []error
	for _, f := range s.disks {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Copy copies n bytes from srcOff to dstOff (offsets in the opened files)
// with EXTENDED COPY commands, up to the session's depth of them at once,
// and returns the bytes of the commands that succeeded, in order, before
// the first that did not. A failed
// command may have copied part of its range; that part is not counted (the
// caller redoes it: copying the same bytes twice is harmless, counting
// bytes that were not copied is not).
func (s *session) Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	srcAbs, dstAbs := s.src.Start+srcOff, s.dst.Start+dstOff
	return copypath.Passthrough(ctx, n,
		func() error { return s.check(dstOff, srcOff, n) },
		func() error { return s.writeBack(srcAbs, dstAbs, n) },
		func() (int64, error) { return s.run(ctx, srcAbs, dstAbs, dstOff, srcOff, n, progress) },
		func() error { return s.views.Drop(dropRange, "EXTENDED COPY", s.dst.Dev.Disk, dstAbs, n) })
}

// run sends the commands of one call at once, up to the depth: they
// cannot meet each other, since the copier hands a call ranges that do not
// overlap (no longer than the distance on one LU), and LIO runs each in a
// work item of its own.
func (s *session) run(ctx context.Context, srcAbs, dstAbs, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	cmds := splitCopy(uint64(srcAbs/s.lbs), uint64(dstAbs/s.lbs), n/s.lbs, s.shape)
	offs := make([]int64, len(cmds))
	for i := 1; i < len(cmds); i++ {
		offs[i] = offs[i-1] + cmds[i-1].blocks*s.lbs
	}
	var done int64
	err := copypath.InOrder(ctx, len(cmds), s.depth, func(i int) error {
		return s.send(cmds[i], dstOff+offs[i], srcOff+offs[i])
	}, func(i int) {
		b := cmds[i].blocks * s.lbs
		done += b
		if progress != nil {
			progress(b)
		}
	})
	return done, err
}

// writeBack writes back dirty cached pages of the source range (another
// process may have written it buffered, and the copy manager reads the
// medium) and of the destination range (a dirty page written back after
// the copy would overwrite the copied blocks with older data).
func (s *session) writeBack(srcAbs, dstAbs, n int64) error {
	if err := s.views.WriteBack(syncRange, "EXTENDED COPY", s.src.Dev.Disk, srcAbs, n); err != nil {
		return err
	}
	return s.views.WriteBack(syncRange, "EXTENDED COPY", s.dst.Dev.Disk, dstAbs, n)
}

// check refuses requests outside the contract: misaligned, past either
// end's range (every command must stay inside the partitions the user
// named), or, on one LU, with source and destination overlapping within
// the request: LIO runs a segment as a forward loop of its own pieces, so
// a segment whose destination lies just after its source reads blocks it
// already overwrote. The copier never sends such requests; these are real
// errors, not reasons to fall back.
func (s *session) check(dstOff, srcOff, n int64) error {
	return copypath.CheckRequest("EXTENDED COPY", s.src, s.dst, s.lbs, dstOff, srcOff, n)
}

// copyCmd is one EXTENDED COPY: its segments, in order, from first blocks
// into the Copy call.
type copyCmd struct {
	segs   []segment
	blocks int64
}

// splitCopy cuts a copy of blocks blocks from srcLBA to dstLBA into
// commands of the shape: segments of at most segBlocks, at most segsPerCmd
// of them per command. The commands tile the copy exactly and in order.
func splitCopy(srcLBA, dstLBA uint64, blocks int64, sh copyShape) []copyCmd {
	if blocks <= 0 || sh.segBlocks <= 0 || sh.segsPerCmd <= 0 {
		return nil
	}
	var cmds []copyCmd
	for done := int64(0); done < blocks; {
		var c copyCmd
		for len(c.segs) < sh.segsPerCmd && done < blocks {
			n := min(sh.segBlocks, blocks-done)
			c.segs = append(c.segs, segment{src: srcLBA + uint64(done), dst: dstLBA + uint64(done), blocks: uint16(n)})
			c.blocks += n
			done += n
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// send runs one EXTENDED COPY through the destination's descriptor,
// once more after a UNIT ATTENTION (LUNs or capacity changed, a reset: the
// command did not run).
func (s *session) send(c copyCmd, dstOff, srcOff int64) error {
	param := parameterList(s.cscds, c.segs)
	for attempt := 0; ; attempt++ {
		s.requests.Add(1)
		resp, err := execute(s.dst.File, &request{cdb: extendedCopyCDB(uint32(len(param))), dir: dirOut, data: param})
		e := newError("EXTENDED COPY", s.src.Path+" -> "+s.dst.Path, resp, err)
		if e == nil {
			return nil
		}
		e.Offset, e.DstOffset, e.Len = srcOff, dstOff, c.blocks*s.lbs
		if e.verdict() == retry && attempt == 0 {
			continue
		}
		return e.classified()
	}
}
