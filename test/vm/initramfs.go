// Package vm holds the parts of blkcopy's QEMU test rig that need no VM:
// packing the guest's initramfs and choosing the kernel modules it loads.
// The suite itself is vm_test.go, built with the vmtest tag.
package vm

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Initramfs collects the guest's files in memory and writes them as an
// uncompressed newc cpio archive, the format the kernel unpacks into its
// rootfs. Written here rather than with cpio(1): a host without cpio
// produces an empty archive and a kernel panic that says nothing about why.
type Initramfs struct {
	entries []cpioEntry
	seen    map[string]bool
}

type cpioEntry struct {
	name string
	mode uint32
	data []byte
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
)

// AddFile adds a regular file and the directories above it.
func (r *Initramfs) AddFile(name string, perm fs.FileMode, data []byte) {
	r.addParents(name)
	r.add(cpioEntry{name: name, mode: modeFile | uint32(perm.Perm()), data: data})
}

// AddSymlink adds name pointing at target.
func (r *Initramfs) AddSymlink(name, target string) {
	r.addParents(name)
	r.add(cpioEntry{name: name, mode: modeSymlink | 0o777, data: []byte(target)})
}

// AddDir adds an empty directory (mount points: /proc, /sys, /dev).
func (r *Initramfs) AddDir(name string) {
	r.addParents(name)
	r.add(cpioEntry{name: name, mode: modeDir | 0o755})
}

// AddDynamic adds a dynamically linked program at its own path with the
// shared libraries ldd(1) names, at theirs, and the loader: enough for a
// guest with no libc to run it, given LD_LIBRARY_PATH (the guest has no
// ld.so.cache to find the multiarch directories by).
func (r *Initramfs) AddDynamic(prog string) error {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", prog, err)
	}
	files := []string{prog}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			files = append(files, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			files = append(files, f[0]) // the loader
		}
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("%s for %s: %w", p, prog, err)
		}
		r.AddFile(p, 0o755, data)
	}
	return nil
}

func (r *Initramfs) addParents(name string) {
	dir := filepath.Dir(strings.TrimPrefix(name, "/"))
	if dir == "." {
		return
	}
	r.addParents(dir)
	r.add(cpioEntry{name: dir, mode: modeDir | 0o755})
}

func (r *Initramfs) add(e cpioEntry) {
	e.name = strings.TrimPrefix(e.name, "/")
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if r.seen[e.name] {
		return
	}
	r.seen[e.name] = true
	r.entries = append(r.entries, e)
}

// WriteTo writes the archive: each entry in the order added (parents come
// first, as the kernel creates no missing directories), then the trailer.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	var buf bytes.Buffer
	for i, e := range r.entries {
		writeCpio(&buf, uint32(i+1), e)
	}
	writeCpio(&buf, 0, cpioEntry{name: "TRAILER!!!"})
	return buf.WriteTo(w)
}

func writeCpio(buf *bytes.Buffer, ino uint32, e cpioEntry) {
	nlink := uint32(1)
	if e.mode&modeDir == modeDir {
		nlink = 2
	}
	// newc header: magic, then 13 eight-digit hex fields: ino, mode, uid,
	// gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	// rdevminor, namesize (with its NUL), check.
	fmt.Fprintf(buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, 0, 0, len(e.name)+1, 0)
	buf.WriteString(e.name)
	buf.WriteByte(0)
	pad4(buf)
	buf.Write(e.data)
	pad4(buf)
}

func pad4(buf *bytes.Buffer) {
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
}

// Module is one kernel module to insmod in the guest.
type Module struct {
	Name string // as modinfo spells it, "nvme_core"
	Path string // file under the modules directory
}

// ModuleOrder returns the modules to load for wanted, each after the
// modules it depends on. Debian's kernel package ships no modules.dep (depmod
// runs at install time), so the dependencies come from each module's own
// modinfo "depends=" field. Wanted modules that are built into the kernel
// (listed in modules.builtin) are left out; one that is neither built in nor
// present is an error.
func ModuleOrder(modulesDir string, wanted []string) ([]Module, error) {
	files, err := indexModules(modulesDir)
	if err != nil {
		return nil, err
	}
	builtin := builtinModules(modulesDir)

	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, wantedBy string) error
	visit = func(name, wantedBy string) error {
		name = canonicalModule(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle", name)
		case 2:
			return nil
		}
		path, ok := files[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("module %s (for %s): not found under %s", name, wantedBy, modulesDir)
		}
		state[name] = 1
		deps, err := moduleDepends(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: path})
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, "the test"); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// canonicalModule folds '-' to '_': the kernel treats them as the same
// character in module names, and file names use either.
func canonicalModule(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return canonicalModule(base)
}

func indexModules(dir string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files[moduleName(path)] = path
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules: %w", err)
	}
	return files, nil
}

func builtinModules(dir string) map[string]bool {
	builtin := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return builtin // a kernel without the list: every module must exist as a file
	}
	for _, line := range strings.Fields(string(data)) {
		builtin[moduleName(line)] = true
	}
	return builtin
}

// ReadModule returns a module file's ELF image, decompressed when the
// kernel packs its modules (.ko.xz, .ko.zst, .ko.gz), since busybox insmod
// may lack the decompressor.
func ReadModule(path string) ([]byte, error) {
	var tool string
	switch filepath.Ext(path) {
	case ".ko":
		return os.ReadFile(path)
	case ".xz":
		tool = "xz"
	case ".zst":
		tool = "zstd"
	case ".gz":
		tool = "gzip"
	default:
		return nil, fmt.Errorf("module %s: unknown compression", path)
	}
	out, err := exec.Command(tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("decompress module %s with %s: %w", path, tool, err)
	}
	return out, nil
}

func moduleDepends(path string) ([]string, error) {
	data, err := ReadModule(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	return parseDepends(info), nil
}

// parseDepends reads the "depends=a,b" entry of a .modinfo section, a list
// of NUL-terminated key=value strings.
func parseDepends(modinfo []byte) []string {
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for _, d := range strings.Split(string(v), ",") {
			if d != "" {
				deps = append(deps, d)
			}
		}
		sort.Strings(deps)
		return deps
	}
	return nil
}
