package copier

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/copypath"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// verdictPath answers Open with a fixed error (nil: it serves) and records
// what it was asked.
type verdictPath struct {
	name   string
	err    error
	pair   copypath.Pair
	flags  int // the source descriptor's open flags
	opened bool
	closed *bool
}

func (p *verdictPath) Name() string { return p.name }
func (p *verdictPath) Open(pair copypath.Pair) (copypath.Session, error) {
	p.pair, p.opened = pair, true
	p.flags, _ = unix.FcntlInt(pair.Src.File.Fd(), unix.F_GETFL, 0)
	if p.err != nil {
		return nil, p.err
	}
	p.closed = new(bool)
	return &closeSession{closed: p.closed}, nil
}

type closeSession struct {
	copypath.Session
	closed *bool
}

func (s *closeSession) Close() error { *s.closed = true; return nil }

func TestPathForNamesTheFirstPathThatServesACopyWithinTheDevice(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	failure := errors.New("Identify Controller: input/output error")
	tests := []struct {
		name       string
		paths      []*verdictPath
		wantName   string
		wantPassed []string
		wantErr    string
		wantAsked  int // paths whose Open ran
	}{
		{"first serves", []*verdictPath{{name: "kernel"}, {name: "nvme"}}, "kernel", nil, "", 1},
		{"second serves after the first's reason",
			[]*verdictPath{{name: "kernel", err: copypath.Unavailablef("kernel lacks copy offload")}, {name: "nvme"}},
			"nvme", []string{"kernel: kernel lacks copy offload"}, "", 2},
		{"none serves: onload, every reason",
			[]*verdictPath{{name: "kernel", err: copypath.Unavailablef("kernel lacks copy offload")},
				{name: "nvme", err: copypath.Unavailablef("namespace 1 reports no Copy limits (MSSRL 0)")}},
			"", []string{"kernel: kernel lacks copy offload", "nvme: namespace 1 reports no Copy limits (MSSRL 0)"}, "", 2},
		{"a real failure stops, as it stops a copy",
			[]*verdictPath{{name: "kernel", err: copypath.Unavailablef("kernel lacks copy offload")}, {name: "nvme", err: failure}, {name: "later"}},
			"", []string{"kernel: kernel lacks copy offload"}, "nvme: Identify Controller: input/output error", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var paths []copypath.Path
			for _, p := range tt.paths {
				paths = append(paths, p)
			}
			swap(t, &offloadPaths, paths)
			name, passed, err := PathFor(sysfs.Sys{}, img)
			if name != tt.wantName || !reflect.DeepEqual(passed, tt.wantPassed) {
				t.Errorf("PathFor = %q, %q; want %q, %q", name, passed, tt.wantName, tt.wantPassed)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && err.Error() != tt.wantErr {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
			if tt.wantErr != "" && !errors.Is(err, failure) {
				t.Errorf("error %v does not wrap the path's error", err)
			}
			for i, p := range tt.paths {
				if asked := i < tt.wantAsked; p.opened != asked {
					t.Errorf("path %s asked = %v, want %v", p.name, p.opened, asked)
				}
				if !p.opened {
					continue
				}
				if p.pair.Src.File != p.pair.Dst.File || !p.pair.SameDisk() || p.pair.Overlap || p.pair.Src.Path != img {
					t.Errorf("path %s was asked about %+v, want one file as both ends of a non-overlapping copy", p.name, p.pair)
				}
				if p.flags&unix.O_ACCMODE != unix.O_RDONLY || p.flags&unix.O_EXCL != 0 {
					t.Errorf("path %s got a descriptor opened with flags %#x, want read-only without O_EXCL", p.name, p.flags)
				}
				if p.closed != nil && !*p.closed {
					t.Errorf("path %s served but its session was not closed", p.name)
				}
			}
		})
	}
}

func TestPathForReportsAnOpenFailure(t *testing.T) {
	swap(t, &offloadPaths, []copypath.Path{&verdictPath{name: "kernel"}})
	name, passed, err := PathFor(sysfs.Sys{}, filepath.Join(t.TempDir(), "missing"))
	if name != "" || passed != nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PathFor(missing) = %q, %q, %v; want no path and the stat error", name, passed, err)
	}
}
