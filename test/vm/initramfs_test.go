package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseDepends(t *testing.T) {
	tests := []struct {
		name    string
		modinfo string
		want    []string
	}{
		{"none", "license=GPL\x00depends=\x00name=loop\x00", nil},
		{"several, sorted", "depends=t10-pi,crc64-rocksoft\x00name=nvme_core\x00", []string{"crc64-rocksoft", "t10-pi"}},
		{"no field", "license=GPL\x00", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseDepends([]byte(tc.modinfo)); !slices.Equal(got, tc.want) {
				t.Errorf("parseDepends = %q, want %q", got, tc.want)
			}
		})
	}
}

// cpioEntries reads back a newc archive: names, modes and contents.
func cpioEntries(t *testing.T, data []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	for len(data) > 0 {
		if len(data) < 110 || string(data[:6]) != "070701" {
			t.Fatalf("bad newc header at %q", data[:min(len(data), 16)])
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(data[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(data[110 : 110+namesize-1])
		off := (110 + namesize + 3) &^ 3
		body := data[off : off+size]
		data = data[(off+size+3)&^3:]
		if name == "TRAILER!!!" {
			if len(bytes.Trim(data, "\x00")) != 0 {
				t.Error("bytes after the trailer")
			}
			break
		}
		out = append(out, cpioEntry{name: name, mode: uint32(mode), data: body})
	}
	return out
}

func TestInitramfsWritesParentsFirst(t *testing.T) {
	var rd Initramfs
	rd.AddFile("/guest/lib.sh", 0o644, []byte("odd-length"))
	rd.AddSymlink("bin/sh", "busybox")
	rd.AddFile("bin/busybox", 0o755, []byte("elf"))
	rd.AddDir("proc")
	var buf bytes.Buffer
	if _, err := rd.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{"guest", modeDir | 0o755, nil},
		{"guest/lib.sh", modeFile | 0o644, []byte("odd-length")},
		{"bin", modeDir | 0o755, nil},
		{"bin/sh", modeSymlink | 0o777, []byte("busybox")},
		{"bin/busybox", modeFile | 0o755, []byte("elf")},
		{"proc", modeDir | 0o755, nil},
	}
	got := cpioEntries(t, buf.Bytes())
	if len(got) != len(want) {
		t.Fatalf("archive has %d entries, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].name != want[i].name || got[i].mode != want[i].mode || !bytes.Equal(got[i].data, want[i].data) {
			t.Errorf("entry %d = %s %o %q, want %s %o %q", i,
				got[i].name, got[i].mode, got[i].data, want[i].name, want[i].mode, want[i].data)
		}
	}
}

// On a real Debian kernel tree (fetch.sh kernel, or BLKCOPY_VM_MODULES),
// the NVMe driver comes after its whole dependency chain.
func TestModuleOrderLoadsDependenciesFirst(t *testing.T) {
	dir := os.Getenv("BLKCOPY_VM_MODULES")
	if dir == "" {
		cache := os.Getenv("BLKCOPY_VM_CACHE")
		if cache == "" {
			cache = filepath.Join(os.Getenv("HOME"), ".cache/blkcopy-vm")
		}
		matches, _ := filepath.Glob(filepath.Join(cache, "linux-image-*/lib/modules/*"))
		if len(matches) == 0 {
			t.Skip("no kernel modules tree: run test/vm/fetch.sh kernel or set BLKCOPY_VM_MODULES")
		}
		dir = matches[0]
	}
	mods, err := ModuleOrder(dir, []string{"nvme", "loop"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		deps, err := moduleDepends(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if p, ok := pos[canonicalModule(d)]; !ok || p > pos[m.Name] {
				t.Errorf("%s is loaded before its dependency %s", m.Name, d)
			}
		}
	}
	for _, name := range []string{"nvme_core", "nvme"} {
		if _, ok := pos[name]; !ok {
			t.Errorf("%s missing from %v", name, mods)
		}
	}
	if _, err := ModuleOrder(dir, []string{"no_such_module"}); err == nil {
		t.Error("ModuleOrder accepted a module that does not exist")
	}
}

// A dynamically linked program arrives with its libraries and the loader,
// each at its host path, so the guest's loader finds them there.
func TestAddDynamicBringsLibraries(t *testing.T) {
	prog, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls on this host:", err)
	}
	var rd Initramfs
	if err := rd.AddDynamic(prog); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := rd.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	var haveProg, haveLibc, haveLoader bool
	for _, e := range cpioEntries(t, buf.Bytes()) {
		if e.mode&modeFile == 0 || e.mode&modeDir == modeDir {
			continue
		}
		switch name := "/" + e.name; {
		case name == prog:
			haveProg = true
		case strings.HasSuffix(name, "/libc.so.6"):
			haveLibc = true
		case strings.Contains(name, "/ld-linux"):
			haveLoader = true
		}
	}
	if !haveProg || !haveLibc || !haveLoader {
		t.Errorf("archive for %s: program %v, libc %v, loader %v; want all three", prog, haveProg, haveLibc, haveLoader)
	}
}
