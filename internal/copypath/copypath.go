// Package copypath is the shape every offload path has: a way to make the
// storage copy a range itself (copy_file_range on a kernel with copy
// offload, NVMe Copy by passthrough, SCSI EXTENDED COPY, ...). The copier
// holds an ordered list of paths, opens the first one that serves a pair of
// endpoints, and drives it chunk by chunk, keeping the behaviour contract
// (the canary, memmove order, exact fallback, interrupt and resume) in one
// place. A new path is a new package that implements Path, plus one entry
// in that list.
package copypath

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// Endpoint is one opened side of a copy as a path sees it.
type Endpoint struct {
	Path  string
	File  *os.File
	Block bool          // block device, else regular file
	Dev   *sysfs.Device // block devices only; nil when sysfs could not tell
	Size  int64         // bytes
	LBS   int64         // logical block size; 1 for regular files
	// Disk names what is really shared (the whole disk, or the inode) and
	// Start is where this endpoint begins on it, in bytes (a partition's
	// start, 0 otherwise).
	Disk  string
	Start int64
}

// Pair is what a path is asked to serve.
type Pair struct {
	Src, Dst Endpoint
	// Overlap: source and destination ranges share bytes of one disk. The
	// copier then runs one request at a time, each no longer than the
	// distance, in memmove order.
	Overlap bool
}

// SameDisk reports whether both ends sit on the same disk (or file).
func (p Pair) SameDisk() bool { return p.Src.Disk == p.Dst.Disk }

// Path is one way to offload.
type Path interface {
	// Name is the path's name in JSON (offload_path) and --offload-path.
	Name() string
	// Open prepares the path for a pair. An error wrapping ErrUnavailable
	// means the path cannot serve it; its text is the reason, in words a
	// user reads in `fallback_reason` and `blkcopy limits`. Any other error
	// is a real failure.
	Open(p Pair) (Session, error)
}

// Session copies for one pair. Copy may be called from several goroutines
// at once (up to Limits().InFlight), on disjoint ranges.
type Session interface {
	Limits() Limits
	// Copy copies n bytes from srcOff to dstOff (offsets in the opened
	// files, as the user gave them, not whole-disk offsets). Offsets and n
	// are multiples of Limits().Align and n <= Limits().Request. It returns
	// the bytes copied, always a prefix of the range, so the copier can
	// fall back at the exact byte. An error for which Unavailable is true
	// means the path stopped serving (fall back); any other is real.
	// progress, when not nil, is told of bytes as they complete.
	Copy(ctx context.Context, dstOff, srcOff, n int64, progress func(int64)) (int64, error)
	// Requests is the number of system calls or device commands issued so
	// far (JSON offload_requests).
	Requests() int64
	// Close releases what Open took.
	Close() error
}

// Limits shape the chunks the copier hands a session.
type Limits struct {
	// Unit is the most bytes one device request carries (copy_max_bytes;
	// MSSRL blocks; ...); the copier keeps chunk boundaries on multiples
	// of it so that every request the kernel or device sees is whole.
	Unit int64
	// Align: offsets and lengths are multiples of it (the logical block
	// size; 1 between regular files).
	Align int64
	// Request is the most bytes handed to one Copy call: many units, so
	// that one call keeps the device busy, yet small enough that a call
	// takes well under a second and interrupts stay live.
	Request int64
	// Command, when > Unit, is what one device command carries (a device
	// that takes several units per command, like NVMe Copy with several
	// source ranges): requests of more than one command are whole
	// commands, or the last command of each is a partial one. 0: Unit.
	Command int64
	// InFlight is how many Copy calls may run at once when ranges do not
	// overlap.
	InFlight int
	// Canary: the first chunk copied must be read back and compared,
	// because this path has been seen to report success without copying
	// (bytes, 0 = no canary needed).
	Canary int64
}

// CanaryMax caps the canary: it moves three times its size through the
// host (the source read, the poison written, the destination read back),
// one command at a time, before the copy proper starts. An 8 MiB canary
// cost about 24 MiB of host reads and 8 MiB of writes per copy (VM rig,
// 2026-11-28, bench --offload, 8 MiB ranges); a 1 MiB one cost 0.1 s of
// each 128 MiB EXTENDED COPY over iSCSI, where the host moves about 25
// MiB/s and sg_xcopy, which checks nothing, was 15% faster. 64 KiB still
// goes to the device as one command of 16 to 128 blocks and catches what
// the canary is for: a path that reports success and moves nothing, or
// moves the wrong bytes.
const CanaryMax = 64 << 10

// CanaryFor is the canary of a path with this unit and block size: one
// unit, at most CanaryMax, in whole blocks.
func CanaryFor(unit, align int64) int64 {
	align = max(align, 1)
	return max(align, min(unit, CanaryMax)/align*align)
}

// ErrUnavailable marks "this path cannot serve here": fall back, not fail.
var ErrUnavailable = errors.New("offload path unavailable")

// Unavailablef returns an error wrapping ErrUnavailable whose text is only
// the formatted reason.
func Unavailablef(format string, args ...any) error {
	return &unavailable{msg: fmt.Sprintf(format, args...)}
}

// Unavailable wraps err (keeping it for errors.Is/As) as "path unavailable".
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &unavailable{msg: err.Error(), err: err}
}

type unavailable struct {
	msg string
	err error
}

func (u *unavailable) Error() string { return u.msg }
func (u *unavailable) Unwrap() []error {
	if u.err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, u.err}
}

// IsUnavailable reports whether err says the path cannot serve (fall back).
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// CheckRequest refuses a Copy request outside the contract: negative,
// not whole blocks of align bytes, past either end's range (every device
// command must stay inside the partitions the user named), or, when both
// ends share a disk, with source and destination overlapping within the
// request, which no device copy command orders (NVMe Copy leaves it
// undefined; LIO's EXTENDED COPY loops forward in pieces and reads what it
// already wrote). The copier never sends such requests; op names the
// command in the error ("NVMe Copy"). These are real errors, not reasons
// to fall back.
func CheckRequest(op string, src, dst Endpoint, align, dstOff, srcOff, n int64) error {
	path := src.Path + " -> " + dst.Path
	switch {
	case n < 0 || srcOff < 0 || dstOff < 0:
		return fmt.Errorf("%s %s at offset %d: negative length or offset (%d bytes to offset %d)", op, path, srcOff, n, dstOff)
	case srcOff%align != 0 || dstOff%align != 0 || n%align != 0:
		return fmt.Errorf("%s %s at offset %d: %d bytes to offset %d are not whole %d-byte blocks", op, path, srcOff, n, dstOff, align)
	case srcOff > src.Size-n:
		return fmt.Errorf("%s %s at offset %d: %d bytes reach past the end of %s (%d bytes)", op, path, srcOff, n, src.Path, src.Size)
	case dstOff > dst.Size-n:
		return fmt.Errorf("%s %s at offset %d: %d bytes to offset %d reach past the end of %s (%d bytes)", op, path, srcOff, n, dstOff, dst.Path, dst.Size)
	}
	if src.Disk == dst.Disk {
		if d := (src.Start + srcOff) - (dst.Start + dstOff); n > 0 && d < n && -d < n {
			return fmt.Errorf("%s %s at offset %d: source and destination overlap within one request (%d bytes to offset %d)", op, path, srcOff, n, dstOff)
		}
	}
	return nil
}

// InOrder sends n device commands, send(i) for i = 0..n-1, up to depth of
// them at once, and tells ok(i) of each success in order of i, from the
// calling goroutine: a command that succeeded after an earlier one failed
// is not reported, so what ok saw is always a prefix the caller may count
// as done. Nothing is retried: after a failure no further command is sent,
// and those already sent run to their end. It returns nil when all
// succeeded, else the first failure in order, or ctx's error when it was
// cancelled before every command was sent.
func InOrder(ctx context.Context, n, depth int, send func(i int) error, ok func(i int)) error {
	depth = max(depth, 1)
	errs := make([]error, n)
	finished := make([]bool, n)
	results := make(chan int, n)
	var (
		next, inflight, prefix int
		stop                   error // why no further command is sent
	)
	for {
		for stop == nil && inflight < depth && next < n {
			if err := ctx.Err(); err != nil {
				stop = err
				break
			}
			i := next
			next++
			inflight++
			go func() {
				errs[i] = send(i)
				results <- i
			}()
		}
		if inflight == 0 {
			break
		}
		i := <-results
		inflight--
		finished[i] = true
		if errs[i] != nil && stop == nil {
			stop = errs[i]
		}
		for prefix < n && finished[prefix] && errs[prefix] == nil {
			ok(prefix)
			prefix++
		}
	}
	switch {
	case prefix == n:
		return nil
	case prefix < next:
		return errs[prefix] // the first failure in order
	default:
		return stop // cancelled before the rest was sent
	}
}

// Passthrough is the frame of a Copy by device commands that bypass the
// page cache (NVMe Copy, SCSI EXTENDED COPY): refuse what the contract
// forbids (check), write back cached pages of both ranges, send the
// commands, and drop the destination's cached pages whatever happened, for
// a failed command may have written part of its range. A failure to drop
// is reported with a real error, and instead of an "unavailable" one: the
// fallback would leave stale pages too.
func Passthrough(ctx context.Context, n int64, check, writeBack func() error, send func() (int64, error), drop func() error) (int64, error) {
	if err := check(); err != nil || n == 0 {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := writeBack(); err != nil {
		return 0, err
	}
	done, err := send()
	if derr := drop(); derr != nil {
		if err != nil && !IsUnavailable(err) {
			err = errors.Join(err, derr)
		} else {
			err = derr
		}
	}
	return done, err
}
