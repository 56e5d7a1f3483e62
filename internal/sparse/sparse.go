// Package sparse keeps holes and zeroes from being moved as data: it finds
// a regular file's data with SEEK_DATA/SEEK_HOLE, spots blocks of zeroes in
// a buffer that was read, and makes a range of a destination read as zeroes
// with the cheapest means it has (nothing past the end of a file, a punched
// hole inside it, a write-zeroes request on a block device), writing zero
// bytes only where nothing cheaper exists.
package sparse

import "fmt"

// Mode is the user's --sparse, in cp's words.
type Mode int

const (
	// Auto skips a file source's holes, turns zero blocks found in what
	// the host reads into holes or write-zeroes, and leaves offloaded
	// copies (copy_file_range between files, a device's own copy) alone:
	// they move zeroes without the host reading them.
	Auto Mode = iota
	// Always is Auto, and between regular files reads the data extents
	// through the host to find zero blocks in them too (cp --sparse=always)
	// instead of handing them to copy_file_range.
	Always
	// Never writes every byte as data, for users who need the blocks
	// allocated: blkcopy's behaviour before --sparse existed.
	Never
)

func (m Mode) String() string {
	switch m {
	case Always:
		return "always"
	case Never:
		return "never"
	}
	return "auto"
}

// ParseMode parses --sparse.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return Auto, nil
	case "always":
		return Always, nil
	case "never":
		return Never, nil
	}
	return Auto, fmt.Errorf("invalid sparse mode %q: want auto, always or never", s)
}

func alignDown(x, a int64) int64 { return x - x%a }

func alignUp(x, a int64) int64 { return alignDown(x+a-1, a) }
