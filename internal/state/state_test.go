package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() State {
	return State{
		Copy: Copy{
			Src:       Endpoint{Path: "/dev/loop1", Kind: Block, Device: "7:1", Size: 4 << 20},
			Dst:       Endpoint{Path: "/backup/disk.img", Kind: File, Device: "254:0", Inode: 1234},
			SrcOffset: 4096, DstOffset: 0, Length: 1 << 20, Direction: Forward,
		},
		Done:    65536,
		Updated: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
	}
}

func TestSaveThenLoadGivesTheSameRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.state")
	want := sample()
	if err := Save(path, &want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) || got.Version != Version {
		t.Errorf("loaded %+v\nsaved  %+v", *got, want)
	}
	if _, err := os.Stat(tempPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file is left behind after a save: %v", err)
	}
}

func TestMissingStateFileIsANewCopy(t *testing.T) {
	s, err := Load(filepath.Join(t.TempDir(), "none.state"))
	if s != nil || err != nil {
		t.Fatalf("Load of a missing file = %v, %v; want nil, nil", s, err)
	}
}

// A kill at any moment of a save leaves the old record or the new one:
// until the rename the file holds the old record, whole, while the new one
// sits complete and synced in the temporary.
func TestSaveReplacesTheFileAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.state")
	old := sample()
	if err := Save(path, &old); err != nil {
		t.Fatal(err)
	}
	checked := false
	swapHook(t, func() {
		checked = true
		s, err := Load(path)
		if err != nil || s.Done != old.Done {
			t.Errorf("before the rename, the state file reads %+v, %v; want the old record", s, err)
		}
		tmp, err := Load(tempPath(path))
		if err != nil || tmp.Done != 99<<10 {
			t.Errorf("before the rename, the temporary reads %+v, %v; want the whole new record", tmp, err)
		}
	})
	next := sample()
	next.Done = 99 << 10
	if err := Save(path, &next); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the hook between write and rename did not run")
	}
	if s, err := Load(path); err != nil || s.Done != next.Done {
		t.Fatalf("after the save the file reads %+v, %v; want the new record", s, err)
	}
}

func swapHook(t *testing.T, fn func()) {
	old := beforeRename
	beforeRename = fn
	t.Cleanup(func() { beforeRename = old })
}

// A save killed before its rename leaves a stray temporary: it changes
// nothing for Load, the next Save overwrites it, Remove removes it.
func TestAStrayTemporaryFromAKilledSaveIsHarmless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.state")
	rec := sample()
	if err := Save(path, &rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tempPath(path), []byte(`{"version": 1, "src": {"pa`), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Load(path); err != nil || s.Done != rec.Done {
		t.Fatalf("Load with a stray temporary = %+v, %v", s, err)
	}
	rec.Done = 1 << 20
	if err := Save(path, &rec); err != nil {
		t.Fatal(err)
	}
	if s, err := Load(path); err != nil || s.Done != 1<<20 {
		t.Fatalf("Load after the next save = %+v, %v", s, err)
	}
	if err := os.WriteFile(tempPath(path), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, tempPath(path)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after Remove: %v", p, err)
		}
	}
	if err := Remove(path); err != nil {
		t.Errorf("Remove of a removed state file: %v", err)
	}
}

func TestSaveIntoAMissingDirectoryFailsNamingTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "copy.state")
	rec := sample()
	err := Save(path, &rec)
	if err == nil || !strings.HasPrefix(err.Error(), "state file "+path+": ") {
		t.Fatalf("err = %v; want it to name the state file", err)
	}
}

// Truncated, foreign or impossible records are refused with a one-line
// error naming the file, never taken as "no record" or as zero progress.
func TestCorruptStateFilesAreRefused(t *testing.T) {
	good, goodPath := sample(), filepath.Join(t.TempDir(), "good.state")
	if err := Save(goodPath, &good); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(goodPath)
	valid := string(b)
	edit := func(old, new string) string {
		if !strings.Contains(valid, old) {
			t.Fatalf("sample record has no %q", old)
		}
		return strings.Replace(valid, old, new, 1)
	}
	tests := []struct {
		name, content, want string
	}{
		{"empty file", "", "truncated or empty (0 bytes)"},
		{"truncated in the middle", valid[:len(valid)/2], "truncated"},
		{"truncated by one byte", valid[:len(valid)-2], "truncated"},
		{"not JSON", "done=65536\n", "not a blkcopy state record"},
		{"another program's JSON", `{"name": "backup", "size": 12}`, "not a blkcopy state record"},
		{"a JSON array", `[1, 2, 3]`, "not a blkcopy state record"},
		{"no version", `{"done": 0}`, "no version"},
		{"a newer version", edit(`"version": 1`, `"version": 2`), "version 2 is not supported"},
		{"done past the length", edit(`"done": 65536`, `"done": 2097152`), "done 2097152 is outside the length 1048576"},
		{"negative done", edit(`"done": 65536`, `"done": -1`), "done -1 is outside"},
		{"zero length", edit(`"length": 1048576`, `"length": 0`), "length 0 is not positive"},
		{"unknown direction", edit(`"direction": "forward"`, `"direction": "sideways"`), `direction "sideways"`},
		{"unknown kind", edit(`"kind": "block"`, `"kind": "pipe"`), `source kind "pipe"`},
		{"a string where a number goes", edit(`"done": 65536`, `"done": "65536"`), "not a blkcopy state record"},
		{"two records", valid + valid, "data after the JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "copy.state")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Load(path)
			if err == nil {
				t.Fatalf("Load accepted it: %+v", s)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "state file "+path+": ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("err = %q; want one line naming the file and saying %q", msg, tt.want)
			}
		})
	}
}

func TestCheckNamesWhatDiffers(t *testing.T) {
	rec := sample()
	tests := []struct {
		name string
		edit func(c *Copy)
		want string // the whole message after "state file PATH: "; "" = same copy
	}{
		{"the same copy", func(c *Copy) {}, ""},
		{"length", func(c *Copy) { c.Length = 2 << 20 }, "length differs (state 1048576, request 2097152)"},
		{"source offset", func(c *Copy) { c.SrcOffset = 0 }, "source offset differs (state 4096, request 0)"},
		{"destination offset", func(c *Copy) { c.DstOffset = 512 }, "destination offset differs (state 0, request 512)"},
		{"direction", func(c *Copy) { c.Direction = Backward }, `direction differs (state "forward", request "backward")`},
		{"another source device", func(c *Copy) { c.Src.Device = "7:2" }, `source device differs (state "7:1", request "7:2")`},
		{"a source device that changed size", func(c *Copy) { c.Src.Size = 8 << 20 }, "source size differs (state 4194304, request 8388608)"},
		{"another source path", func(c *Copy) { c.Src.Path = "/dev/loop2" }, `source path differs (state "/dev/loop1", request "/dev/loop2")`},
		{"a replaced destination file", func(c *Copy) { c.Dst.Inode = 99 }, "destination inode differs (state 1234, request 99)"},
		{"a destination of another kind", func(c *Copy) { c.Dst.Kind = Block }, `destination kind differs (state "file", request "block")`},
		{"several fields", func(c *Copy) { c.Length, c.DstOffset = 4096, 8192 },
			"destination offset differs (state 0, request 8192); length differs (state 1048576, request 4096)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := rec.Copy
			tt.edit(&want)
			err := rec.Check("/var/lib/x.state", want)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check refused the same copy: %v", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want a *MismatchError", err)
			}
			if got := err.Error(); got != "state file /var/lib/x.state: "+tt.want {
				t.Errorf("err = %q\nwant %q", got, "state file /var/lib/x.state: "+tt.want)
			}
		})
	}
}

// A power cut means a reboot, after which the kernel may number and name
// the disks differently: a recorded stable ID decides, not the path.
func TestCheckMatchesBlockDevicesByStableIDAcrossReboots(t *testing.T) {
	rec := sample()
	rec.Src = Endpoint{Path: "/dev/nvme0n1", Kind: Block, Device: "259:0", Size: 4 << 20, ID: "wwid:eui.0011223344556677"}
	tests := []struct {
		name string
		edit func(e *Endpoint)
		want string // "" = same copy
	}{
		{"the same disk, renamed and renumbered", func(e *Endpoint) { e.Path, e.Device = "/dev/nvme1n1", "259:3" }, ""},
		{"another disk now at the recorded name", func(e *Endpoint) { e.ID = "wwid:eui.8899aabbccddeeff" },
			`source identity differs (state "wwid:eui.0011223344556677", request "wwid:eui.8899aabbccddeeff")`},
		{"no ID now (no sysfs): number and path decide", func(e *Endpoint) { e.ID, e.Device = "", "259:3" },
			`source device differs (state "259:0", request "259:3")`},
		{"the same disk, resized", func(e *Endpoint) { e.Size = 8 << 20 }, "source size differs (state 4194304, request 8388608)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := rec.Copy
			tt.edit(&want.Src)
			err := rec.Check("/s", want)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check refused the same copy: %v", err)
			case tt.want != "" && (err == nil || err.Error() != "state file /s: "+tt.want):
				t.Fatalf("err = %v\nwant %q", err, "state file /s: "+tt.want)
			}
		})
	}
}
