package sparse

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/ioctl"
)

// Dest makes ranges of a copy's destination read as zeroes. It is safe for
// concurrent use on disjoint ranges: the onload copy's workers call Zero at
// once.
type Dest struct {
	f    *os.File
	path string
	// block: a block device, opened O_DIRECT; align is its logical block
	// size. Else a regular file; align is its file system's block size,
	// the unit a hole is punched in.
	block bool
	align int64
	// oldSize is a regular file's size before the copy: past it the file
	// reads as zeroes already and nothing needs doing.
	oldSize int64
	// writeZeroes: a block device's zero runs go as write-zeroes requests
	// (cleared when the kernel refuses them); else as zero data.
	writeZeroes atomic.Bool
	// noPunch is set once the file system refused to punch a hole.
	noPunch atomic.Bool
	// probing: the next zero run long enough is split between a plain
	// write and write-zeroes, both timed, and the faster way is kept;
	// slower records that write-zeroes lost.
	probing atomic.Bool
	slower  atomic.Bool

	once    sync.Once
	zbuf    []byte // page-aligned zeroes for plain zero writes
	zbufErr error
}

// DestConfig describes the destination. For a block device Align is its
// logical block size; WriteZeroes asks for write-zeroes requests.
type DestConfig struct {
	File        *os.File
	Block       bool
	Align       int64
	WriteZeroes bool
	// Probe (--sparse auto) measures write-zeroes against writing zeroes
	// on the first run of 2 MiB or more and keeps the faster; without it
	// write-zeroes is used whatever it costs (--sparse always).
	Probe bool
}

// NewDest prepares a destination; a regular file's size is taken now, so
// call it before the copy writes anything.
func NewDest(c DestConfig) (*Dest, error) {
	d := &Dest{f: c.File, path: c.File.Name(), block: c.Block, align: max(c.Align, 1)}
	d.writeZeroes.Store(c.WriteZeroes)
	d.probing.Store(c.WriteZeroes && c.Probe)
	if !c.Block {
		var st unix.Stat_t
		if err := unix.Fstat(int(c.File.Fd()), &st); err != nil {
			return nil, &os.PathError{Op: "fstat", Path: d.path, Err: err}
		}
		d.oldSize = st.Size
		// st_blksize is the file system block (ext4, XFS) or page
		// (tmpfs): a hole can only be punched in whole ones.
		d.align = max(int64(st.Blksize), 512)
	}
	return d, nil
}

// Grain is the destination's zero-detection block: a punched hole or a
// write-zeroes request covers whole ones, and 4 KiB at least, so scanning
// costs one test per 4 KiB.
func (d *Dest) Grain() int64 { return max(d.align, 4096) }

// Block says whether the destination is a block device.
func (d *Dest) Block() bool { return d.block }

// NoPunch reports whether the file system refused to punch holes, so zero
// runs over old data were written as zeroes.
func (d *Dest) NoPunch() bool { return d.noPunch.Load() }

// WriteZeroes reports whether write-zeroes requests are (still) in use.
func (d *Dest) WriteZeroes() bool { return d.writeZeroes.Load() }

// Slower reports whether write-zeroes measured slower than writing zeroes
// on this device, so zero runs were written as data after the probe.
func (d *Dest) Slower() bool { return d.slower.Load() }

// zeroOut is a test seam: tests make write-zeroes slow, which no device
// here is on demand.
var zeroOut = ioctl.ZeroOut

// probeBytes is what the probe writes as plain zeroes: 1 MiB is many
// device requests' worth, enough to time, little to spend.
const probeBytes = 1 << 20

// Zero makes [off, off+n) read as zeroes and changes nothing outside it.
func (d *Dest) Zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	if d.block {
		return d.zeroBlock(off, n)
	}
	return d.zeroFile(off, n)
}

// zeroFile: nothing past the old end of file (it reads as zeroes, and the
// copier sets the final size), a hole over whole file-system blocks of old
// data, zero bytes at partial blocks: punching a partial block would punch
// the whole block, bytes outside the range included.
func (d *Dest) zeroFile(off, n int64) error {
	end := min(off+n, d.oldSize)
	if off >= end {
		return nil
	}
	lo, hi := alignUp(off, d.align), alignDown(end, d.align)
	if lo >= hi || d.noPunch.Load() {
		return d.write(off, end-off)
	}
	if err := d.write(off, lo-off); err != nil {
		return err
	}
	if err := d.punch(lo, hi-lo); err != nil {
		return err
	}
	return d.write(hi, end-hi)
}

func (d *Dest) punch(off, n int64) error {
	for {
		err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
			// FAT, older NFS, ...: old bytes must still become zeroes.
			d.noPunch.Store(true)
			return d.write(off, n)
		}
		return fmt.Errorf("punch hole %s at offset %d (%d bytes): %w", d.path, off, n, err)
	}
}

// zeroBlock: one write-zeroes request over the whole logical blocks, a
// read-modify-write of a partial block at either edge (a hole of an
// unaligned source can start inside a block).
func (d *Dest) zeroBlock(off, n int64) error {
	end := off + n
	lo, hi := alignUp(off, d.align), alignDown(end, d.align)
	if lo >= hi {
		return d.patch(off, end)
	}
	if err := d.patch(off, lo); err != nil {
		return err
	}
	if d.writeZeroes.Load() {
		var err error
		if hi-lo >= 2*probeBytes && d.probing.CompareAndSwap(true, false) {
			var perr error
			if lo, err, perr = d.probe(lo, hi); perr != nil {
				return perr
			}
		} else {
			err = zeroOut(d.f, lo, hi-lo)
		}
		if err == nil {
			return d.patch(hi, end)
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
			// Named like every other failed write, so a medium error
			// reads the same whichever way the zeroes went.
			var se *os.SyscallError
			if errors.As(err, &se) {
				err = se
			}
			return fmt.Errorf("write %s at offset %d: %d bytes of zeroes by %w", d.path, lo, hi-lo, err)
		}
		// A driver or kernel without it: write the zeroes ourselves.
		d.writeZeroes.Store(false)
	}
	if err := d.write(lo, hi-lo); err != nil {
		return err
	}
	return d.patch(hi, end)
}

// probe zeroes [lo, hi) with a plain write of its first probeBytes and
// write-zeroes for the rest, and keeps write-zeroes only if it took no more
// time per byte: the kernel turns it into the device's own command, or into
// writes of its zero page where there is none, and a device (or a thin
// layer under it) may do that slower than a plain write. It returns where
// the write-zeroes part began and its error (wzErr, for the caller to
// judge), or the plain write's error.
func (d *Dest) probe(lo, hi int64) (wzLo int64, wzErr, err error) {
	began := time.Now()
	if err := d.write(lo, probeBytes); err != nil {
		return lo, nil, err
	}
	plain := time.Since(began).Seconds() / probeBytes
	lo += probeBytes
	began = time.Now()
	if err := zeroOut(d.f, lo, hi-lo); err != nil {
		return lo, err, nil
	}
	if wz := time.Since(began).Seconds() / float64(hi-lo); wz > plain {
		d.slower.Store(true)
		d.writeZeroes.Store(false)
	}
	return lo, nil, nil
}

// patch zeroes [off, end) inside one logical block of a block device,
// which O_DIRECT can only write whole.
func (d *Dest) patch(off, end int64) error {
	for off < end {
		b := alignDown(off, d.align)
		e := min(end, b+d.align)
		buf, err := mapZeroes(d.align)
		if err != nil {
			return err
		}
		if err := pread(d.f, buf, b); err != nil {
			_ = unix.Munmap(buf)
			return fmt.Errorf("read %s at offset %d: %w", d.path, b, err)
		}
		clear(buf[off-b : e-b])
		err = pwrite(d.f, buf, b)
		_ = unix.Munmap(buf)
		if err != nil {
			return fmt.Errorf("write %s at offset %d: %w", d.path, b, err)
		}
		off = e
	}
	return nil
}

// write writes n zero bytes at off (block-aligned on a block device).
func (d *Dest) write(off, n int64) error {
	if n <= 0 {
		return nil
	}
	d.once.Do(func() { d.zbuf, d.zbufErr = mapZeroes(1 << 20) })
	if d.zbufErr != nil {
		return d.zbufErr
	}
	for n > 0 {
		k := min(n, int64(len(d.zbuf)))
		if err := pwrite(d.f, d.zbuf[:k], off); err != nil {
			return fmt.Errorf("write %s at offset %d: %w", d.path, off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// Extend grows a regular file to size when it is shorter: a range that ends
// in a hole past the old end is written by nobody. It must not run while
// writes are in flight: one that ends past size would be cut.
func (d *Dest) Extend(size int64) error {
	if d.block {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: d.path, Err: err}
	}
	if st.Size >= size {
		return nil
	}
	if err := unix.Ftruncate(int(d.f.Fd()), size); err != nil {
		return fmt.Errorf("extend %s to %d bytes: %w", d.path, size, err)
	}
	return nil
}

// Close frees the zero buffer.
func (d *Dest) Close() error {
	if d.zbuf != nil {
		err := unix.Munmap(d.zbuf)
		d.zbuf = nil
		return err
	}
	return nil
}

// mapZeroes maps a page-aligned buffer (O_DIRECT needs the alignment) and
// writes its zeroes: an untouched anonymous mapping is backed by the shared
// zero page, which not every kernel lets O_DIRECT pin.
func mapZeroes(n int64) ([]byte, error) {
	buf, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("allocate %d bytes: %w", n, err)
	}
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 0
	}
	return buf, nil
}

func pread(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		m, err := unix.Pread(int(f.Fd()), p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if m == 0 {
			// Past the end of a device: nothing to keep.
			clear(p)
			return nil
		}
		p, off = p[m:], off+int64(m)
	}
	return nil
}

func pwrite(f *os.File, p []byte, off int64) error {
	for len(p) > 0 {
		m, err := unix.Pwrite(int(f.Fd()), p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return errors.New("short write")
		}
		p, off = p[m:], off+int64(m)
	}
	return nil
}
