package sparse

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Extent is a run of a file that is all data or all hole.
type Extent struct {
	Off, Len int64
	Hole     bool
}

// NextExtent returns the extent of f that starts at off, cut at end: data
// up to the next hole, or a hole up to the next data. A file system without
// SEEK_DATA (EINVAL, EOPNOTSUPP) is all data, which is what the kernel's
// generic implementation reports too. The lseek moves f's file offset;
// blkcopy only does positional I/O, so nothing depends on it.
func NextExtent(f *os.File, off, end int64) (Extent, error) {
	if off >= end {
		return Extent{Off: off}, nil
	}
	fd := int(f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data at or after off: the rest is a hole (or past the end).
		return Extent{Off: off, Len: end - off, Hole: true}, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return Extent{Off: off, Len: end - off}, nil
	case err != nil:
		return Extent{}, fmt.Errorf("seek %s at offset %d (SEEK_DATA): %w", f.Name(), off, err)
	}
	if data > off {
		return Extent{Off: off, Len: min(data, end) - off, Hole: true}, nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return Extent{}, fmt.Errorf("seek %s at offset %d (SEEK_HOLE): %w", f.Name(), off, err)
	}
	return Extent{Off: off, Len: min(hole, end) - off}, nil
}
