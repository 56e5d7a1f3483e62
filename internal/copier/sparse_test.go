package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
	"github.com/blkcopy/blkcopy/internal/sparse"
	"github.com/blkcopy/blkcopy/internal/sysfs/sysfstest"
)

// The memmove oracle with holes and zeroes: the destination must read back
// as its old bytes with the range replaced by the source's, whatever
// --sparse does with holes and zero runs on the way, on every file system
// and block device.

// sparseSpan is a part of the sparse test source: random data ('d') or zero
// bytes written as data ('z'); everything else is a hole.
type sparseSpan struct {
	off, n int64
	kind   byte
}

const (
	kib       = 1 << 10
	chunk     = 64 * kib // the onload I/O size the tests set: chunk boundaries at 64 KiB
	sparseLen = 2<<20 + 1000
)

// sparseLayout puts holes and zero runs at every boundary: the 64 KiB chunk
// grid, the 4 KiB file-system block, a 512-byte sector, the range ends
// (the file starts with data and ends in a hole whose end is not on a
// block).
var sparseLayout = []sparseSpan{
	{0, 64 * kib, 'd'},                // data up to a chunk boundary; a hole from 64K to 192K spans the boundary at 128K
	{192 * kib, 4 * kib, 'd'},         // one fs block of data between two holes
	{200 * kib, 52 * kib, 'd'},        // data ...
	{252 * kib, 12 * kib, 'z'},        // ... a zero run across the chunk boundary at 256K ...
	{264 * kib, 36*kib + 512, 'd'},    // ... data ending inside a block
	{300*kib + 512, 3584, 'z'},        // zeroes to the next fs block
	{304 * kib, 208 * kib, 'z'},       // a long zero run over whole chunks (256K..512K)
	{1 << 20, 700, 'd'},               // a partial block of data in a sea of holes
	{1<<20 + 64*kib, 128 * kib, 'd'},  // two chunks of data
	{1<<20 + 192*kib, 64 * kib, 'z'},  // a whole chunk of zeroes
	{1<<20 + 256*kib, 4*kib + 1, 'd'}, // one byte into the next fs block, then a hole to the end
}

// writeSparseSource makes the layout at path and returns its bytes.
func writeSparseSource(t *testing.T, path string) []byte {
	t.Helper()
	content := make([]byte, sparseLen)
	rnd := onloadtest.RandomBytes(sparseLen, 77)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(sparseLen); err != nil {
		t.Fatal(err)
	}
	for _, s := range sparseLayout {
		if s.kind == 'd' {
			copy(content[s.off:s.off+s.n], rnd[s.off:s.off+s.n])
		}
		if _, err := f.WriteAt(content[s.off:s.off+s.n], s.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return content
}

// spanBytes counts the layout's bytes of the given kinds within [off, off+n).
func spanBytes(off, n int64, kinds string) int64 {
	var sum int64
	for _, s := range sparseLayout {
		if strings.IndexByte(kinds, s.kind) < 0 {
			continue
		}
		sum += max(0, min(s.off+s.n, off+n)-max(s.off, off))
	}
	return sum
}

// holeBytes counts the bytes within [off, off+n) that SEEK_DATA reports as
// hole: file systems keep data in whole 4 KiB blocks, so the rest of a
// block a sparseSpan touches is data too.
func holeBytes(off, n int64) int64 {
	var sum int64
	for b := int64(0); b < sparseLen; b += 4096 {
		if spanBytes(b, 4096, "dz") == 0 {
			sum += max(0, min(b+4096, off+n, sparseLen)-max(b, off))
		}
	}
	return sum
}

// allocated is the space a file takes on its file system (stat blocks).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// cpAllocated is the space cp --sparse=MODE takes for a copy of src made
// next to it: the bar is to take no more than cp.
func cpAllocated(t *testing.T, src, mode string) int64 {
	t.Helper()
	dst := src + ".cp"
	defer os.Remove(dst)
	if out, err := exec.Command("cp", "--sparse="+mode, src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if out, err := exec.Command("sync", dst).CombinedOutput(); err != nil {
		t.Fatalf("sync: %v: %s", err, out)
	}
	return allocated(t, dst)
}

// fileSystems returns directories on ext4 (the test's temp dir on this
// machine), tmpfs and XFS (made on a loop device when root and mkfs.xfs
// are there).
func fileSystems(t *testing.T) map[string]string {
	t.Helper()
	dirs := map[string]string{"tmp": t.TempDir()}
	var fs syscall.Statfs_t
	if syscall.Statfs(dirs["tmp"], &fs) == nil && fs.Type == 0xEF53 {
		dirs = map[string]string{"ext4": dirs["tmp"]}
	}
	if d, err := os.MkdirTemp("/dev/shm", "blkcopy-sparse-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs["tmpfs"] = d
	}
	if os.Geteuid() != 0 {
		t.Log("XFS case skipped: mounting needs root")
		return dirs
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Log("XFS case skipped: no mkfs.xfs (apt-get install xfsprogs)")
		return dirs
	}
	dev := sysfstest.Loop(t, 512<<20)
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount xfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	dirs["xfs"] = mnt
	return dirs
}

type rangeCase struct {
	name                string
	srcOff, dstOff, len int64
}

var sparseRanges = []rangeCase{
	{"whole file", 0, 0, sparseLen},
	{"shifted by a block", 4096, 8192, sparseLen - 4096},
	{"off every grid", 1000, 3000, sparseLen - 1000},
	{"starts and ends in holes", 70 * kib, 70*kib + 512, 1 << 20},
}

// oracle is the destination after a correct copy: old with [dstOff,
// dstOff+n) replaced, grown with zeroes when the range ends past it.
func oracle(old, src []byte, c rangeCase) []byte {
	want := append([]byte(nil), old...)
	if end := c.dstOff + c.len; end > int64(len(want)) {
		want = append(want, make([]byte, end-int64(len(want)))...)
	}
	copy(want[c.dstOff:], src[c.srcOff:c.srcOff+c.len])
	return want
}

func TestSparseFileCopiesReadBackAsTheSource(t *testing.T) {
	dsts := map[string]int64{"old data": sparseLen + 8192, "missing": -1, "shorter": 100 * kib}
	for fsName, dir := range fileSystems(t) {
		src := filepath.Join(dir, "src.img")
		content := writeSparseSource(t, src)
		for _, mode := range []sparse.Mode{sparse.Auto, sparse.Always, sparse.Never} {
			for dstName, oldSize := range dsts {
				for _, c := range sparseRanges {
					name := fmt.Sprintf("%s/%s/%s/%s", fsName, mode, dstName, c.name)
					t.Run(name, func(t *testing.T) {
						dst := filepath.Join(dir, "dst.img")
						os.Remove(dst)
						var old []byte
						if oldSize >= 0 {
							old = bytes.Repeat([]byte{sentinel}, int(oldSize))
							if err := os.WriteFile(dst, old, 0o644); err != nil {
								t.Fatal(err)
							}
						}
						sum, err := Run(context.Background(), Request{Src: src, Dst: dst, SrcOff: c.srcOff, DstOff: c.dstOff, Len: c.len, LenSet: true, Sparse: mode, BufSize: chunk, Verify: true})
						if err != nil {
							t.Fatal(err)
						}
						got, err := os.ReadFile(dst)
						if err != nil {
							t.Fatal(err)
						}
						want := oracle(old, content, c)
						if len(got) != len(want) {
							t.Fatalf("destination is %d bytes, want %d", len(got), len(want))
						}
						if i := onloadtest.FirstDiff(got, want); i >= 0 {
							t.Fatalf("destination differs at offset %d (range [%d,%d)): got %#x want %#x", i, c.dstOff, c.dstOff+c.len, got[i], want[i])
						}
						holes := holeBytes(c.srcOff, c.len)
						switch {
						case mode == sparse.Never && (sum.SparseBytes != 0 || sum.ZeroBytes != 0):
							t.Errorf("--sparse never: sparse_bytes %d, zero_bytes %d, want 0", sum.SparseBytes, sum.ZeroBytes)
						case mode != sparse.Never && sum.SparseBytes != holes:
							// SEEK_DATA may report holes as data (never the
							// other way round), but these file systems are exact.
							t.Errorf("sparse_bytes %d, want the %d bytes of holes in the range", sum.SparseBytes, holes)
						case mode == sparse.Always && c.name == "whole file" && sum.ZeroBytes < 256*kib:
							t.Errorf("--sparse always: zero_bytes %d, want the zero runs' whole blocks (%d bytes of zeroes)", sum.ZeroBytes, spanBytes(0, sparseLen, "z"))
						}
						if c.name != "whole file" {
							return
						}
						// Space: holes stay holes; with always the zero
						// runs too. 64 KiB of slack for the file system's
						// own rounding, or what cp takes with the same
						// --sparse: XFS keeps speculative preallocations of
						// a growing file as unwritten extents inside it.
						alloc := allocated(t, dst)
						switch {
						case mode == sparse.Never && alloc < sparseLen-4096:
							t.Errorf("--sparse never: %d bytes allocated, want all %d", alloc, sparseLen)
						case mode == sparse.Auto && alloc > max(spanBytes(0, sparseLen, "dz")+64*kib, cpAllocated(t, src, "auto")):
							t.Errorf("--sparse auto: %d bytes allocated, want at most the %d bytes of data and zeroes", alloc, spanBytes(0, sparseLen, "dz"))
						case mode == sparse.Always && alloc > max(spanBytes(0, sparseLen, "d")+64*kib, cpAllocated(t, src, "always")):
							t.Errorf("--sparse always: %d bytes allocated, want at most the %d bytes of data, or cp --sparse=always's %d", alloc, spanBytes(0, sparseLen, "d"), cpAllocated(t, src, "always"))
						}
					})
				}
			}
		}
	}
}

// diskLoop attaches a loop device over an image on the test's temp dir
// (ext4 here), where a write-zeroes request becomes an fallocate of the
// backing file, unlike /dev/shm's, where the kernel writes zero pages.
func diskLoop(t *testing.T, content []byte, sector int) string {
	t.Helper()
	dev := sysfstest.Loop(t, int64(len(content)), "--sector-size", strconv.Itoa(sector), "--direct-io=on")
	if err := os.WriteFile(dev, content, 0); err != nil {
		t.Fatal(err)
	}
	return dev
}

func TestSparseCopiesToAndFromBlockDevices(t *testing.T) {
	sysfstest.RequireRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	content := writeSparseSource(t, src)
	const devSize = 4 << 20
	old := bytes.Repeat([]byte{sentinel}, devSize)
	shm := loop(t, old)
	disk4k := diskLoop(t, old, 4096)
	partDisk := loop(t, old, "-P")
	part := sysfstest.AddPartition(t, partDisk, 1, 2048, devSize/512-2048-8)
	partOld := old[:devSize-1<<20-4096]

	for _, mode := range []sparse.Mode{sparse.Auto, sparse.Never} {
		for _, d := range []struct{ name, dev string }{{"loop on tmpfs", shm}, {"loop on ext4, 4K sectors", disk4k}, {"partition", part}} {
			for _, c := range sparseRanges {
				if d.dev == disk4k && (c.dstOff%4096 != 0 || c.len%4096 != 0) {
					c.dstOff, c.len = c.dstOff&^4095, c.len&^4095 // unaligned ranges are the 512-byte devices' case
				}
				t.Run(fmt.Sprintf("file to %s/%s/%s", d.name, mode, c.name), func(t *testing.T) {
					if err := os.WriteFile(d.dev, old[:len(devOld(d.dev, part, old, partOld))], 0); err != nil {
						t.Fatal(err)
					}
					sum, err := Run(context.Background(), Request{Src: src, Dst: d.dev, SrcOff: c.srcOff, DstOff: c.dstOff, Len: c.len, LenSet: true, Sparse: mode, BufSize: chunk, Sys: sys, Verify: true})
					if err != nil {
						t.Fatal(err)
					}
					got := onloadtest.ReadFile(t, d.dev)
					want := oracle(devOld(d.dev, part, old, partOld), content, c)
					if i := onloadtest.FirstDiff(got, want); i >= 0 {
						t.Fatalf("device differs at offset %d (range [%d,%d)): got %#x want %#x", i, c.dstOff, c.dstOff+c.len, got[i], want[i])
					}
					if mode == sparse.Auto && (sum.SparseBytes == 0 || sum.ZeroBytes == 0) {
						t.Errorf("sparse_bytes %d, zero_bytes %d: want both > 0 (holes skipped, zero runs written as write-zeroes)", sum.SparseBytes, sum.ZeroBytes)
					}
				})
			}
		}
	}

	// Block device sources: every byte is read (no SEEK_DATA on a
	// device), zero blocks become holes in the image or write-zeroes.
	img := make([]byte, devSize)
	copy(img, content)
	srcDev := loop(t, img)
	for _, mode := range []sparse.Mode{sparse.Auto, sparse.Never} {
		t.Run(fmt.Sprintf("loop to new image/%s", mode), func(t *testing.T) {
			dst := filepath.Join(dir, "image-"+mode.String())
			sum, err := Run(context.Background(), Request{Src: srcDev, Dst: dst, Sparse: mode, BufSize: chunk, Sys: sys, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := onloadtest.ReadFile(t, dst); !bytes.Equal(got, img) {
				t.Fatalf("image differs from the device at offset %d", onloadtest.FirstDiff(got, img))
			}
			alloc := allocated(t, dst)
			if mode == sparse.Auto && alloc > spanBytes(0, sparseLen, "d")+64*kib {
				t.Errorf("%d bytes allocated, want at most the %d bytes of data", alloc, spanBytes(0, sparseLen, "d"))
			}
			if mode == sparse.Never && alloc < devSize {
				t.Errorf("--sparse never: %d bytes allocated, want all %d", alloc, devSize)
			}
			if mode == sparse.Auto && sum.ZeroBytes < devSize-sparseLen {
				t.Errorf("zero_bytes %d, want at least the %d zero bytes past the data", sum.ZeroBytes, devSize-sparseLen)
			}
		})
		t.Run(fmt.Sprintf("loop to loop/%s", mode), func(t *testing.T) {
			if err := os.WriteFile(disk4k, old, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), Request{Src: srcDev, Dst: disk4k, Sparse: mode, BufSize: chunk, Sys: sys, Verify: true}); err != nil {
				t.Fatal(err)
			}
			if got := onloadtest.ReadFile(t, disk4k); !bytes.Equal(got, img) {
				t.Fatalf("device differs at offset %d", onloadtest.FirstDiff(got, img))
			}
		})
	}
}

// devOld is what a test device held before the copy.
func devOld(dev, part string, old, partOld []byte) []byte {
	if dev == part {
		return partOld
	}
	return old
}

func TestInterruptedSparseCopyResumesToTheSameResult(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	content := writeSparseSource(t, src)
	dsts := map[string]string{"file": filepath.Join(dir, "dst.img")}
	if os.Geteuid() == 0 {
		dsts["loop"] = loop(t, make([]byte, 4<<20))
	}
	for name, dst := range dsts {
		for _, mode := range []Mode{Auto, OnloadOnly} {
			t.Run(fmt.Sprintf("%s/%s", name, mode), func(t *testing.T) {
				old := bytes.Repeat([]byte{sentinel}, 3<<20)
				if name == "loop" {
					old = bytes.Repeat([]byte{sentinel}, 4<<20)
				}
				if err := os.WriteFile(dst, old, 0o644); err != nil {
					t.Fatal(err)
				}
				const n = sparseLen - 1000
				ctx, cancel := context.WithCancel(context.Background())
				var seen int64
				req := Request{Src: src, Dst: dst, SrcOff: 1000, DstOff: 4096, Len: n, LenSet: true, Mode: mode, BufSize: chunk, Sys: sys,
					Progress: func(k int64) {
						if seen += k; seen >= n/2 {
							cancel()
						}
					}}
				_, err := Run(ctx, req)
				var ie *InterruptedError
				if !errors.As(err, &ie) {
					t.Fatalf("err = %v, want InterruptedError", err)
				}
				if ie.Done <= 0 || ie.Done >= n {
					t.Fatalf("interrupted with done=%d of %d; want a partial copy", ie.Done, n)
				}
				req.SrcOff, req.DstOff, req.Len, req.Progress = ie.SrcOff, ie.DstOff, ie.Len, nil
				if _, err := Run(context.Background(), req); err != nil {
					t.Fatalf("resume: %v", err)
				}
				want := oracle(old, content, rangeCase{srcOff: 1000, dstOff: 4096, len: n})
				if got := onloadtest.ReadFile(t, dst); !bytes.Equal(got, want) {
					t.Fatalf("after resuming, the destination differs at offset %d", onloadtest.FirstDiff(got, want))
				}
			})
		}
	}
}

// Overlapping copies within one device or file, with holes and zero runs in
// the moved range: zero runs become write-zeroes or punched holes chunk by
// chunk in memmove order, and the result is still a memmove.
func TestOverlappingSparseCopyIsAMemmove(t *testing.T) {
	tests := []struct {
		name           string
		srcOff, dstOff int64
	}{
		{"destination after source (backward)", 0, 300 * kib},
		{"destination before source (forward)", 300 * kib, 4096 + 512},
	}
	const n = sparseLen - 300*kib
	for _, kind := range []string{"file", "loop"} {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "img")
				content := writeSparseSource(t, path)
				if kind == "loop" {
					sysfstest.RequireRoot(t)
					content = append(content, make([]byte, 4<<20-len(content))...) // whole sectors
					path = loop(t, content)
				}
				want := append([]byte(nil), content...)
				copy(want[tt.dstOff:], content[tt.srcOff:tt.srcOff+n])
				// Between files auto keeps copy_file_range; always reads
				// through the host, where zero runs are found.
				mode := sparse.Always
				if kind == "loop" {
					mode = sparse.Auto
				}
				sum, err := Run(context.Background(), Request{Src: path, Dst: path, SrcOff: tt.srcOff, DstOff: tt.dstOff, Len: n, LenSet: true, BufSize: chunk, Sys: sys, Verify: true, Sparse: mode})
				if err != nil {
					t.Fatal(err)
				}
				if sum.ZeroBytes == 0 {
					t.Errorf("zero_bytes 0: the zero runs in the moved range were written as data")
				}
				if got := onloadtest.ReadFile(t, path); !bytes.Equal(got, want) {
					t.Fatalf("not the memmove result: differs at offset %d", onloadtest.FirstDiff(got, want))
				}
			})
		}
	}
}

// --state with holes: the record counts holes as done like data, and the
// same command after an interrupt finishes a copy that reads back as the
// source, at the right size when the range ends in a hole past the end of
// a new file.
func TestSparseCopyWithStateResumesFromTheRecord(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	content := writeSparseSource(t, src)
	dsts := map[string]string{"new file": filepath.Join(dir, "dst.img")}
	if os.Geteuid() == 0 {
		dsts["loop"] = loop(t, bytes.Repeat([]byte{sentinel}, 4<<20))
	}
	for name, dst := range dsts {
		t.Run(name, func(t *testing.T) {
			var old []byte
			if name == "loop" {
				old = bytes.Repeat([]byte{sentinel}, 4<<20)
			}
			c := rangeCase{srcOff: 1000, dstOff: 4096, len: sparseLen - 1000}
			req := Request{Src: src, Dst: dst, SrcOff: c.srcOff, DstOff: c.dstOff, Len: c.len, LenSet: true, BufSize: chunk, Sys: sys, State: filepath.Join(dir, name+".state")}
			ie := interruptAt(t, req, c.len/2)
			if ie.Done <= 0 || ie.Done >= c.len {
				t.Fatalf("interrupted with %d of %d done; want a partial copy", ie.Done, c.len)
			}
			sum, err := Run(context.Background(), req)
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if sum.ResumedFrom != ie.Done {
				t.Errorf("resumed_from %d, want the %d the interrupt reported", sum.ResumedFrom, ie.Done)
			}
			want := oracle(old, content, c)
			got := onloadtest.ReadFile(t, dst)
			if len(got) != len(want) {
				t.Fatalf("destination is %d bytes, want %d", len(got), len(want))
			}
			if i := onloadtest.FirstDiff(got, want); i >= 0 {
				t.Fatalf("after resuming from the state file the destination differs at offset %d", i)
			}
		})
	}
}
