//go:build vmtest

package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
)

// The power-loss test of --state (issue 12): a copy within an NVMe
// namespace, with its state file on ext4 on another namespace, is cut by
// killing QEMU (SIGKILL: no shutdown, no sync; what the guest kernel had
// not written to its disks is gone), then the VM boots again on the same
// images and runs the same command, until it finishes. The images are then
// compared on the host with what an uninterrupted copy gives.
//
// What this proves and what it does not: the guest's page cache (the state
// file, ext4's journal) is lost as in a power cut, so the state file's own
// durability (fsync, rename, directory fsync) and the resume are tested.
// QEMU completes a write once the host has it, so a write the guest saw
// complete survives; the loss of a drive's volatile write cache is tested
// by internal/copier's crash tests, which drop writes no fdatasync covered.

// The copy: namespace P, from plSrc to plDst, plLen bytes. P is throttled
// so that the copy takes seconds on every path (QEMU's throttling holds the
// device's own Copy I/O too): about 16 s, since each boot's first
// checkpoint comes after 2 s and its fdatasync waits seconds behind the
// throttled writes, after which the checkpoints' 2% time bound spaces the
// next ones far apart (checkpoint.go).
const (
	plSrc = 1 * mib
	plDst = 72 * mib
	plLen = 64 * mib
	// Cuts land this long after the guest saw a new record.
	plCutMin, plCutMax = 300 * time.Millisecond, 1500 * time.Millisecond
	plCuts             = 2 // power cuts in mid-copy per case
)

var plDisks = []disk{
	{id: "P", ctrl: "nvme-p", nsid: 1, size: 144 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7, throttleBPS: 8 * mib},
	{id: "S", ctrl: "nvme-p", nsid: 2, size: 32 * mib, lbs: 512, mssrl: 256, mcl: 1024, msrc: 7},
}

func TestVMPowerLoss(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not found (apt-get install e2fsprogs): the state file lives on ext4 in the guest")
	}
	qemu, bins := rigSetup(t)
	kernels := guestKernels(t)
	cases := []struct {
		kernel, mode string
		path         string // the offload path a finished run reports; "" = onload
	}{
		{"debian", "auto", "nvme"},
		{"seed-fixed", "auto", "copy_file_range"},
		{"seed-fixed", "onload", ""},
	}
	for _, c := range cases {
		t.Run(c.kernel+"/"+c.mode, func(t *testing.T) {
			i := slices.IndexFunc(kernels, func(k guestKernel) bool { return k.name == c.kernel })
			if i < 0 {
				t.Skipf("kernel %s is not in this run (BLKCOPY_VM_KERNEL names another)", c.kernel)
			}
			k := kernels[i]
			requireKernel(t, k)
			powerLoss(t, qemu, mkfs, k, c.mode, c.path, bins)
		})
	}
}

// plBoot is what one boot's console said.
type plBoot struct {
	found    int64 // -1: no state file at boot
	records  []int64
	exit     int // -1: blkcopy did not finish
	result   map[string]any
	leftover bool // the state file outlived exit 0
}

func parsePLBoot(t *testing.T, lines []string) plBoot {
	b := plBoot{found: -1, exit: -1}
	for _, line := range lines {
		_, rest, ok := strings.Cut(line, "POWERLOSS ")
		if !ok {
			continue
		}
		key, val, _ := strings.Cut(rest, " ")
		num := func() int64 {
			n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if err != nil {
				t.Fatalf("guest line %q: %v", line, err)
			}
			return n
		}
		switch key {
		case "FOUND":
			b.found = num()
		case "RECORDED":
			b.records = append(b.records, num())
		case "EXIT":
			b.exit = int(num())
		case "JSON":
			if err := json.Unmarshal([]byte(val), &b.result); err != nil {
				t.Errorf("blkcopy's JSON %q: %v", val, err)
			}
		case "STATE-LEFT":
			b.leftover = true
		}
	}
	return b
}

func powerLoss(t *testing.T, qemu, mkfs string, k guestKernel, mode, wantPath string, bins map[string][]byte) {
	work := t.TempDir()
	// P: random bytes everywhere, so that every byte outside the
	// destination range is a sentinel. S: an empty ext4 file system.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12))
	orig := make([]byte, plDisks[0].size)
	for i := range orig {
		orig[i] = byte(rng.Uint32())
	}
	pImg, sImg := filepath.Join(work, "P.img"), filepath.Join(work, "S.img")
	if err := os.WriteFile(pImg, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sImg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sImg, plDisks[1].size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", sImg).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", sImg, err, out)
	}
	want := bytes.Clone(orig)
	copy(want[plDst:plDst+plLen], orig[plSrc:plSrc+plLen])

	cuts := 0
	var last plBoot
	for phase := 1; ; phase++ {
		if phase > 2*plCuts+3 {
			t.Fatalf("the copy did not finish in %d boots", phase-1)
		}
		initrd := filepath.Join(work, fmt.Sprintf("initramfs-%d.cpio", phase))
		writePLInitramfs(t, initrd, k, bins, phase, mode)
		args := qemuArgs(t, work, k.kernel, initrd, filepath.Join(work, "trace.log"), plDisks)

		// Cut the power a random moment after the guest saw the record
		// advance past where this boot started, while cuts are due.
		var (
			mu      sync.Mutex
			trigger int64 = -1
			timer   *time.Timer
		)
		found := int64(0)
		cut := cuts < plCuts
		lines, killed := bootWatch(t, qemu, args, func(line string, kill func()) {
			_, rest, ok := strings.Cut(line, "POWERLOSS ")
			if !ok || !cut {
				return
			}
			key, val, _ := strings.Cut(rest, " ")
			n, _ := strconv.ParseInt(val, 10, 64)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case key == "FOUND":
				found = n
			case key == "RECORDED" && n > found && timer == nil:
				trigger = n
				delay := plCutMin + time.Duration(rng.Int64N(int64(plCutMax-plCutMin)))
				t.Logf("host: the record reached %d bytes; cutting the power in %s", n, delay.Round(time.Millisecond))
				timer = time.AfterFunc(delay, kill)
			}
		})
		if timer != nil {
			timer.Stop()
		}
		b := parsePLBoot(t, lines)
		if phase > 1 && last.exit < 0 {
			// After a cut in mid-copy: the record the guest saw a while
			// before the cut must have survived it, and the rerun starts
			// there.
			if b.found < 0 {
				t.Fatalf("boot %d: no state file after the power cut (the guest saw a record of %d bytes before it)", phase, lastTrigger(last))
			}
			if b.found < lastTrigger(last) {
				t.Errorf("boot %d: the state file records %d bytes, less than the %d the guest saw at least %s before the cut", phase, b.found, lastTrigger(last), plCutMin)
			}
		}
		if killed && b.exit < 0 {
			cuts++
			t.Logf("boot %d: power cut in mid-copy (record at boot %d, last seen %v)", phase, b.found, b.records)
			last = b
			last.records = []int64{trigger}
			continue
		}
		if b.exit < 0 {
			t.Fatalf("boot %d: the guest did not report blkcopy's exit (see its log above)", phase)
		}
		if b.exit != 0 {
			t.Fatalf("boot %d: blkcopy exited %d: %v", phase, b.exit, b.result)
		}
		checkPLResult(t, b, mode, wantPath)
		break
	}
	if cuts < plCuts {
		t.Errorf("only %d of %d power cuts landed in mid-copy: the copy is too short for this test", cuts, plCuts)
	}
	got, err := os.ReadFile(pImg)
	if err != nil {
		t.Fatal(err)
	}
	if i := onloadtest.FirstDiff(got, want); i >= 0 {
		where := "outside the destination range (a sentinel)"
		if i >= plDst && i < plDst+plLen {
			where = fmt.Sprintf("in the destination range, %d bytes in", i-plDst)
		}
		t.Fatalf("after %d power cuts, namespace P differs from an uninterrupted copy at byte %d, %s", cuts, i, where)
	}
	t.Logf("after %d power cuts the copy is byte-identical, sentinels intact", cuts)
}

func lastTrigger(b plBoot) int64 {
	if len(b.records) == 0 {
		return 0
	}
	return b.records[len(b.records)-1]
}

func checkPLResult(t *testing.T, b plBoot, mode, wantPath string) {
	num := func(k string) int64 {
		v, ok := b.result[k].(float64)
		if !ok {
			t.Fatalf("blkcopy's JSON has no number %q: %v", k, b.result)
		}
		return int64(v)
	}
	if b.found <= 0 || num("resumed_from") <= 0 {
		t.Errorf("the finishing run did not resume past byte 0 (state file at boot: %d bytes, resumed_from %d)", b.found, num("resumed_from"))
	}
	if r, n := num("resumed_from"), num("bytes"); r+n != plLen {
		t.Errorf("resumed_from %d + bytes %d != the copy's %d", r, n, plLen)
	}
	if mode == "auto" && num("offloaded_bytes") != num("bytes") {
		t.Errorf("offloaded_bytes %d != bytes %d: the resumed copy was not offloaded (%v)", num("offloaded_bytes"), num("bytes"), b.result["fallback_reason"])
	}
	if p, _ := b.result["offload_path"].(string); p != wantPath {
		t.Errorf("offload_path %q, want %q", p, wantPath)
	}
	if b.leftover {
		t.Error("the state file is still there after the copy finished (it is removed on success)")
	}
}

func writePLInitramfs(t *testing.T, path string, k guestKernel, bins map[string][]byte, phase int, mode string) {
	writeGuestInitramfs(t, path, k, bins, map[string]string{
		"guest/env": guestEnv(k.kind, plDisks),
		"guest/powerloss.env": fmt.Sprintf("PHASE=%d\nMODE=%s\nSRC_OFF=%d\nDST_OFF=%d\nLEN=%d\n",
			phase, mode, plSrc, plDst, plLen),
	})
}
