package copier

import (
	"fmt"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// PathFor tells `blkcopy limits` which offload path a copy within the device
// or file at path would take: the first path, in the copier's order, that
// serves a pair whose source and destination are both path (ranges apart),
// or "" when none does and the copy goes by onload. passed gives, in each
// path's own words and after its name ("copy_file_range: kernel lacks copy
// offload"), why the paths before it could not serve (every path, for
// onload): the words a copy reports as fallback_reason.
//
// path is opened as a copy opens its source: read-only, never O_EXCL.
// Nothing is copied. An error is a failure to open path, or a path's real
// failure (prefixed with its name), which would stop a copy too.
func PathFor(sys sysfs.Sys, path string) (name string, passed []string, err error) {
	e, err := openSource(sys, path)
	if err != nil {
		return "", nil, err
	}
	defer e.close()
	pair := copypath.Pair{Src: e.ep(), Dst: e.ep()}
	for _, p := range offloadPaths {
		s, err := p.Open(pair)
		if err == nil {
			_ = s.Close() // it only releases what Open took; nothing was copied
			return p.Name(), passed, nil
		}
		if !copypath.IsUnavailable(err) {
			return "", passed, fmt.Errorf("%s: %w", p.Name(), err)
		}
		passed = append(passed, p.Name()+": "+err.Error())
	}
	return "", passed, nil
}
