package vm

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Host-side parts of the rig that other VM users (the offload benchmark,
// bench --offload) share with the suite: finding a static busybox, Debian's
// kernel and the seed kernels.

// StaticBusybox returns a busybox that runs with no shared libraries in a
// guest: $BLKCOPY_VM_BUSYBOX, else Debian's busybox-static at /bin/busybox
// (the plain busybox package puts a dynamically linked one there).
func StaticBusybox() (string, error) {
	for _, p := range []string{os.Getenv("BLKCOPY_VM_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox"} {
		if p == "" {
			continue
		}
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := false
		for _, prog := range f.Progs {
			dynamic = dynamic || prog.Type == elf.PT_INTERP
		}
		f.Close()
		if !dynamic {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox; run test/vm/fetch.sh (apt-get install busybox-static)")
}

// DebianKernel runs fetchScript (test/vm/fetch.sh) with "kernel" and
// returns Debian's current kernel and its modules directory from the
// script's cache, downloading them the first time. The script's log goes
// to stderr.
func DebianKernel(fetchScript string) (kernel, modules string, err error) {
	cmd := exec.Command(fetchScript, "kernel")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("fetch Debian's kernel with %s: %w", fetchScript, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "KERNEL="); ok {
			kernel = v
		}
		if v, ok := strings.CutPrefix(line, "MODULES="); ok {
			modules = v
		}
	}
	if kernel == "" || modules == "" {
		return "", "", fmt.Errorf("%s kernel printed no KERNEL= and MODULES= lines:\n%s", fetchScript, out)
	}
	return kernel, modules, nil
}

// SeedKernelDir is where ../shared/seed-kernel/build.sh leaves
// bzImage-fixed and bzImage-faithful: $BLKCOPY_SEED_KERNEL_DIR, default
// ~/.cache/blkcopy-seed-kernel.
func SeedKernelDir() string {
	if d := os.Getenv("BLKCOPY_SEED_KERNEL_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "blkcopy-seed-kernel")
}
