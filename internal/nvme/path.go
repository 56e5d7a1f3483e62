// Package nvme copies within an NVMe namespace by the device's own Copy
// command (NVM command set opcode 19h), sent through the kernel's
// passthrough ioctl. It works on every kernel, needs CAP_SYS_ADMIN, and
// serves where the controller sets ONCS bit 8; the copy never crosses host
// memory. It is an offload path (copypath.Path) named "nvme".
//
// Passthrough bypasses the block layer and so the page cache: a Copy reads
// what is on the device and writes around cached pages. Each request
// therefore writes back dirty cached pages of its source and destination
// ranges first and drops cached pages of its destination range after, see
// session.writeBack and session.drop.
package nvme

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/ioctl"
	"github.com/blkcopy/blkcopy/internal/pagecache"
)

// Defaults for Path's zero fields.
const (
	// DefaultRequest caps one Copy call: a few to a few dozen commands,
	// which QEMU and real drives finish in well under a second, so
	// progress and interrupts stay live.
	DefaultRequest = 64 << 20
	// DefaultInFlight is how many Copy calls the copier may run at once.
	DefaultInFlight = 4
	// DefaultDepth is how many commands one Copy call keeps in flight:
	// with several calls at once, up to InFlight x Depth commands queue
	// on the device; when the ranges overlap the copier runs one call at
	// a time and Depth alone keeps the device busy. Each command in
	// flight holds a thread in the passthrough ioctl. In the VM rig
	// (QEMU, 64 MiB within a namespace of 64 KiB ranges, 16 a command,
	// 5 rounds, 2026-11-27) 16 copied in a median 141 ms against 162 ms
	// with 4; commands of one range each, 16 or 64 in flight, took
	// 370-610 ms: QEMU runs a command's ranges one after another, but the
	// guest's cost per ioctl is what dominates, so ranges per command
	// stay as many as MSRC and MCL allow. With 512 MiB (2026-11-28, 4
	// rounds) 4 calls of 16 commands copied in 0.87-1.12 s, 4 of 4 in
	// 1.06-1.11 s, 2 of 8 in 0.93-1.13 s; the threads the ioctls hold did
	// not lengthen the process's exit.
	DefaultDepth = 16
)

// Path is NVMe Copy by passthrough as an offload path. The zero value uses
// the defaults above.
type Path struct {
	Request  int64 // most bytes in one Copy call (0: DefaultRequest)
	InFlight int   // Copy calls at once (0: DefaultInFlight)
	Depth    int   // commands in flight within one Copy call (0: DefaultDepth)
}

// Name is the path's name in JSON (offload_path) and --offload-path.
func (Path) Name() string { return "nvme" }

// namespaceDisk matches the kernel's names of NVMe namespace block devices:
// nvme<controller>n<namespace>, or nvme<subsystem>n<namespace> for a
// multipath head. Per-path nodes (nvme0c1n1) are hidden and never opened.
var namespaceDisk = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)

// IsNamespace reports whether disk (a kernel block device name such as
// "nvme0n1") is an NVMe namespace, whose partitions and itself this path
// can serve.
func IsNamespace(disk string) bool { return namespaceDisk.MatchString(disk) }

// Seams for the system calls outside passthru: tests record the cache
// maintenance and its order around the commands, and stand in for the
// whole-disk node.
var (
	syncRange  = pagecache.WriteBackRange
	dropRange  = pagecache.DropRange
	openDisk   = os.Open
	deviceSize = ioctl.Size
)

// Open decides whether NVMe Copy can serve the pair and with which limits.
// The reasons it gives are what `fallback_reason` and `blkcopy limits`
// show.
func (p Path) Open(pair copypath.Pair) (copypath.Session, error) {
	src, dst := pair.Src, pair.Dst
	if !src.Block || !dst.Block {
		return nil, copypath.Unavailablef("NVMe Copy works between block devices only")
	}
	srcDisk, err := namespaceOf(src)
	if err != nil {
		return nil, err
	}
	dstDisk, err := namespaceOf(dst)
	if err != nil {
		return nil, err
	}
	if !pair.SameDisk() || srcDisk != dstDisk {
		return nil, copypath.Unavailablef("source and destination are different NVMe namespaces (%s, %s); NVMe Copy copies within one namespace", srcDisk, dstDisk)
	}
	info, err := Identify(src.File)
	if err != nil {
		return nil, err
	}
	ns := info.Namespace
	dstID, err := namespaceID(dst.File)
	if err != nil {
		return nil, namespaceIDError(dst.Path, err)
	}
	if dstID != ns.ID {
		return nil, copypath.Unavailablef("source and destination are different NVMe namespaces (IDs %d and %d)", ns.ID, dstID)
	}
	format, err := info.CopyFormat()
	if err != nil {
		return nil, err
	}
	lba := ns.LBASize
	for _, e := range []copypath.Endpoint{src, dst} {
		switch {
		case e.LBS != lba:
			return nil, copypath.Unavailablef("namespace %d is formatted with %d-byte blocks but the kernel reports %d-byte blocks for %s", ns.ID, lba, e.LBS, e.Path)
		case e.Start%lba != 0:
			return nil, copypath.Unavailablef("%s starts at byte %d of namespace %d, not on a %d-byte block boundary", e.Path, e.Start, ns.ID, lba)
		case uint64(e.Start+e.Size) > ns.Blocks*uint64(lba):
			return nil, copypath.Unavailablef("%s (%d bytes from byte %d) extends past the end of namespace %d (%d blocks)", e.Path, e.Size, e.Start, ns.ID, ns.Blocks)
		}
	}

	s := &session{src: src, dst: dst, nsid: ns.ID, format: format, lba: lba, shape: shapeOf(ns), depth: p.Depth}
	if s.depth <= 0 {
		s.depth = DefaultDepth
	}
	unit := s.shape.rangeBlocks * lba
	cmdBytes := s.shape.cmdBlocks * lba
	req := p.Request
	if req <= 0 {
		req = DefaultRequest
	}
	// Whole commands where a command is smaller than the cap, else whole
	// ranges (a command of MCL blocks may be gigabytes).
	request := max(unit, req/unit*unit)
	if cmdBytes <= req {
		request = req / cmdBytes * cmdBytes
	}
	inFlight := p.InFlight
	if inFlight <= 0 {
		inFlight = DefaultInFlight
	}
	// The canary reads back one range (64 KiB at most): a status of success
	// is the device's word, but blkcopy has met copy paths that reported
	// success and moved nothing.
	s.lim = copypath.Limits{Unit: unit, Align: lba, Request: request, InFlight: inFlight, Canary: copypath.CanaryFor(unit, lba)}
	if cmdBytes <= req && cmdBytes > unit {
		s.lim.Command = cmdBytes
	}

	s.views = pagecache.Set{{File: src.File, Start: src.Start, Size: src.Size}}
	if dst.Dev.Name != src.Dev.Name {
		s.views = append(s.views, pagecache.View{File: dst.File, Start: dst.Start, Size: dst.Size})
	}
	if src.Dev.Partition && dst.Dev.Partition {
		// Buffered reads of the whole disk (udev's blkid, fdisk, a cmp
		// of the disk) cache its pages apart from the partitions' own.
		if f := openDiskView(srcDisk, ns.ID, int64(ns.Blocks)*lba); f != nil {
			s.disk = f
			s.views = append(s.views, pagecache.View{File: f, Size: int64(ns.Blocks) * lba})
		}
	}
	return s, nil
}

// namespaceOf returns the NVMe namespace (whole-disk name) e lives on, or
// why it has none.
//
// The name is checked, not only NVME_IOCTL_ID: device-mapper passes ioctls
// through to the device underneath (dm_blk_ioctl; for root even when the
// target maps only part of it), so a dm-linear device over part of a
// namespace answers NVME_IOCTL_ID, and Copy commands sent through it would
// land at the namespace's LBAs, not the dm device's.
func namespaceOf(e copypath.Endpoint) (string, error) {
	switch {
	case e.Dev == nil:
		return "", copypath.Unavailablef("cannot tell whether %s is an NVMe namespace (no sysfs entry)", e.Path)
	case len(e.Dev.Slaves) > 0 || !IsNamespace(e.Dev.Disk):
		return "", copypath.Unavailablef("%s is not an NVMe namespace or a partition of one", e.Path)
	}
	return e.Dev.Disk, nil
}

// openDiskView opens the namespace's whole-disk node for cache maintenance
// and checks that it is the namespace it should be. It gives up quietly:
// the view only widens the coherency guarantee; it is not needed for the
// copy.
func openDiskView(disk string, nsid uint32, size int64) *os.File {
	f, err := openDisk("/dev/" + disk)
	if err != nil {
		return nil
	}
	if id, err := namespaceID(f); err != nil || id != nsid {
		f.Close()
		return nil
	}
	if n, err := deviceSize(f); err != nil || n != size {
		f.Close()
		return nil
	}
	return f
}

type session struct {
	src, dst copypath.Endpoint
	nsid     uint32
	format   uint8 // source range descriptor format
	lba      int64 // bytes per logical block
	shape    copyShape
	depth    int
	lim      copypath.Limits
	views    pagecache.Set // one namespace: every view's Disk is ""
	disk     *os.File      // whole-disk node opened for views, or nil
	requests atomic.Int64
}

func (s *session) Limits() copypath.Limits { return s.lim }

// Requests is the number of Copy commands sent so far, failed ones too.
func (s *session) Requests() int64 { return s.requests.Load() }

func (s *session) Close() error {
	if s.disk == nil {
		return nil
	}
	return s.disk.Close()
}

// Copy copies n bytes from srcOff to dstOff (offsets in the opened files)
// with Copy commands on the namespace, up to the session's depth of them in
// flight. It returns the bytes of the commands that succeeded before the
// first one that did not, in order: a command that succeeded after an
// earlier one failed is not counted, and neither is the part a failed
// command may have copied (the caller redoes it; copying the same bytes
// twice is harmless, counting bytes that were not copied is not).
func (s *session) Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error) {
	srcAbs, dstAbs := s.src.Start+srcOff, s.dst.Start+dstOff
	return copypath.Passthrough(ctx, n,
		func() error { return s.check(dstOff, srcOff, n) },
		func() error { return s.writeBack(srcAbs, dstAbs, n) },
		func() (int64, error) {
			cmds := splitCopy(uint64(srcAbs/s.lba), uint64(dstAbs/s.lba), n/s.lba, s.shape)
			return s.run(ctx, cmds, dstOff, srcOff, progress)
		},
		func() error { return s.drop(dstAbs, n) })
}

// check refuses requests outside the contract: misaligned, past either
// end's range (every command must stay inside the partitions the user
// named), or with source and destination overlapping within the request,
// which a Copy command does not order (NVM Command Set 1.2, 3.3.2: the
// overlapping blocks "may be from any of" the ranges). The copier never
// sends such requests; these are real errors, not reasons to fall back.
func (s *session) check(dstOff, srcOff, n int64) error {
	return copypath.CheckRequest("NVMe Copy", s.src, s.dst, s.lba, dstOff, srcOff, n)
}

// run sends cmds, up to s.depth at once, and accounts for them in order.
func (s *session) run(ctx context.Context, cmds []copyCmd, dstOff, srcOff int64, progress func(int64)) (int64, error) {
	var done int64
	err := copypath.InOrder(ctx, len(cmds), s.depth, func(i int) error {
		s.requests.Add(1)
		return s.send(cmds[i], dstOff, srcOff)
	}, func(i int) {
		b := cmds[i].blocks * s.lba
		done += b
		if progress != nil {
			progress(b)
		}
	})
	return done, err
}

// send runs one Copy command through the destination's descriptor (the one
// opened for writing; Copy writes).
func (s *session) send(c copyCmd, dstOff, srcOff int64) error {
	result, status, err := passthru(s.dst.File, c.command(s.nsid, s.format))
	if err == nil && status == 0 {
		return nil
	}
	if errors.Is(err, unix.EINTR) {
		// Not a signal: the driver waits for passthrough commands without
		// interruption and answers EINTR when it cancelled the command
		// (nvme_execute_rq, NVME_REQ_CANCELLED).
		err = fmt.Errorf("%w (the driver cancelled the command after a timeout or a controller reset; it may have run in part)", err)
	}
	off := c.first * s.lba
	e := &Error{
		Op: "NVMe Copy", Path: s.src.Path + " -> " + s.dst.Path,
		Offset: srcOff + off, DstOffset: dstOff + off, Len: c.blocks * s.lba,
		Status: status, Result: result, Err: err,
	}
	if err != nil {
		if why := errnoUnavailable(err); why != "" {
			return copypath.Unavailable(fmt.Errorf("%s (%w)", why, e))
		}
		return e
	}
	if status.Unsupported() {
		return copypath.Unavailable(e)
	}
	return e
}

// writeBack writes back dirty cached pages of the source and destination
// ranges before a Copy. Source: another process may have written it
// buffered, and Copy reads the device, not the cache. Destination: a dirty
// page written back after the copy would overwrite the copied blocks with
// older data.
func (s *session) writeBack(srcAbs, dstAbs, n int64) error {
	for _, at := range [2]int64{srcAbs, dstAbs} {
		if err := s.views.WriteBack(syncRange, "NVMe Copy", "", at, n); err != nil {
			return err
		}
	}
	return nil
}

// drop drops cached pages of the destination range after the copy, so
// that a buffered read afterwards (cmp, dd without iflag=direct, a file
// system mounted later) reads the copied blocks from the device rather
// than what the cache held before.
func (s *session) drop(dstAbs, n int64) error {
	return s.views.Drop(dropRange, "NVMe Copy", "", dstAbs, n)
}
