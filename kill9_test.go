package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/state"
)

// The kill -9 test: a --state copy of 512 MiB, run as its own process,
// is killed with SIGKILL at random moments (right after it started
// writing, while it replaces its state file, anywhere), then run again,
// the same command, until it exits 0 (at least 20 kills per case, over as
// many copies as it takes). The destination must then equal the source
// range byte for byte, nothing outside the range may have changed, and
// reruns must have resumed past byte 0. Cases: two loop devices on tmpfs
// and on disk (O_DIRECT onload), two files on tmpfs and on disk
// (copy_file_range), and 512 MiB moved by 100 MiB within one loop device
// (backward, overlapping). About a minute as root under -race.
//
// A kill is not a power cut: what the process wrote is in the page cache
// or on the device either way. The record's promise under a power cut
// (only what an fdatasync covered is counted) is tested in
// internal/copier (TestCrashAtAnyMoment...), which drops unsynced writes,
// and belongs in the VM rig (kill QEMU, boot again on the same images).
//
// To land kills inside a state file replacement, those runs get
// BLKCOPY_TEST_STATE_RENAME_DELAY=150ms, a test seam in internal/state
// that sleeps between the temporary file's fsync and its rename; the test
// kills when the temporary exists.

// killStateEvery replaces the checkpoints' 2-second period in the copies
// killed here (BLKCOPY_TEST_STATE_EVERY): they take 0.2-1.5 s, and the
// first checkpoint waits a period (internal/copier/checkpoint.go).
const killStateEvery = 50 * time.Millisecond

const (
	killCopyLen = 512 << 20
	killMinimum = 20 // kills per case
)

type killCase struct {
	name string
	// setup makes the source and destination and returns the copy's
	// arguments and how to check the result.
	setup func(t *testing.T) killSetup
}

type killSetup struct {
	src, dst       string
	srcOff, dstOff int64
	stateDir       string
	// check compares the destination with what an uninterrupted copy
	// gives, the range and around it; reset undoes the copy.
	check, reset func(t *testing.T)
	// overlap: the copy moves data within one device; its finished
	// record stays, marked done.
	overlap bool
	// cached: the copy goes into the page cache (files on disk) and is
	// done writing before its first checkpoint's fdatasync returns, so
	// its record does not advance before the end: no rerun can resume
	// past byte 0 (on disk, loop devices written with O_DIRECT prove the
	// resumption; here the kills prove the rest).
	cached bool
}

func TestKill9AtRandomMomentsThenRerunGivesAnExactCopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the kill -9 test attaches loop devices and copies 512 MiB several times; run the tests as root (as CI does)")
	}
	if testing.Short() {
		t.Skip("skipping the kill -9 test in -short mode (it copies 512 MiB dozens of times)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("skipping: losetup (util-linux) is not installed")
	}
	shm := "/dev/shm"
	if st, err := os.Stat(shm); err != nil || !st.IsDir() {
		t.Skip("skipping: no /dev/shm for the tmpfs-backed cases")
	}
	disk := diskDir(t)
	sentinelPath = filepath.Join(tempIn(t, shm), "sentinel")
	writeImage(t, sentinelPath, sentinelSize, 0)
	cases := []killCase{
		{"loop devices on tmpfs", func(t *testing.T) killSetup { return twoLoops(t, tempIn(t, shm)) }},
		{"loop devices on disk", func(t *testing.T) killSetup {
			if disk == "" {
				t.Skip("skipping: the module directory is on tmpfs; no disk-backed file system to put loop images on")
			}
			return twoLoops(t, tempIn(t, disk))
		}},
		{"files on tmpfs", func(t *testing.T) killSetup { return twoFiles(t, tempIn(t, shm)) }},
		{"files on disk", func(t *testing.T) killSetup {
			if disk == "" {
				t.Skip("skipping: the module directory is on tmpfs")
			}
			s := twoFiles(t, tempIn(t, disk))
			s.cached = true
			return s
		}},
		{"overlapping copy within one loop device (backward)", func(t *testing.T) killSetup { return overlapLoop(t, tempIn(t, shm)) }},
	}
	for _, kc := range cases {
		t.Run(kc.name, func(t *testing.T) { runKillCase(t, kc) })
	}
}

func runKillCase(t *testing.T, kc killCase) {
	began := time.Now()
	s := kc.setup(t)
	rec := filepath.Join(s.stateDir, "copy.state")
	args := []string{s.src, s.dst, "--src-offset", strconv.FormatInt(s.srcOff, 10), "--dst-offset", strconv.FormatInt(s.dstOff, 10),
		"--len", strconv.FormatInt(killCopyLen, 10), "--state", rec}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12))

	// One copy without kills: it must be right, and it tells how long a
	// copy takes, so that random kills land while the copy runs.
	t0 := time.Now()
	if out, err := blkcopyRun(t, args).CombinedOutput(); err != nil {
		t.Fatalf("copy without kills: %v\n%s", err, out)
	}
	full := time.Since(t0)
	s.check(t)
	settled(t, s, rec, args)
	s.reset(t)

	var kills, resumed, runs, chains int
	kinds := map[string]int{}
	var lastResume int64
	for kills < killMinimum {
		chains++
		for i := 0; ; i++ {
			// A new copy starts with a kill during a state file
			// replacement (its first save, or its first checkpoint) or
			// just after its first checkpoint; then come kills of every
			// kind in turn.
			kind := []string{"state replacement", "after a checkpoint", "first chunk", "random"}[(i+chains)%4]
			if kills >= killMinimum {
				kind = "none"
			}
			before := loadRecord(t, rec)
			if before != nil && before.Done > 0 {
				resumed++
			}
			runs++
			if kind == "after a checkpoint" && (s.cached || before != nil && before.Done >= killCopyLen/2) {
				kind = "random" // the run may not checkpoint again before its end
			}
			out, killed, err := killRun(t, args, rec, kind, full, before, rng)
			if killed {
				kills++
				kinds[kind]++
				// Killed at any moment, the state file is whole.
				if r := loadRecord(t, rec); r != nil && before != nil && r.Done < before.Done {
					t.Fatalf("the record went back from %d to %d", before.Done, r.Done)
				}
				continue
			}
			if err != nil {
				t.Fatalf("run %d (%s): %v\n%s", runs, kind, err, out)
			}
			if before != nil && before.Done > 0 {
				want := fmt.Sprintf("resumed from byte %d of %d", before.Done, killCopyLen)
				if !strings.Contains(out, want) {
					t.Errorf("run %d resumed a record of %d bytes but does not say %q:\n%s", runs, before.Done, want, out)
				}
				lastResume = before.Done
			}
			break
		}
		s.check(t)
		settled(t, s, rec, args)
		if kills < killMinimum {
			s.reset(t)
		}
	}
	t.Logf("%d kills (%v) in %d runs, %d copies; %d runs resumed past byte 0 (the last from %d); an uninterrupted copy takes %v; %v in all",
		kills, kinds, runs, chains, resumed, lastResume, full.Round(time.Millisecond), time.Since(began).Round(100*time.Millisecond))
	if resumed == 0 && !s.cached {
		t.Error("no rerun resumed past byte 0: every kill started the copy over")
	}
	// A kill after a checkpoint may come too late where the copy ends
	// right after its first checkpoint (files on disk); the others always
	// land.
	for _, k := range []string{"first chunk", "state replacement"} {
		if kinds[k] == 0 {
			t.Errorf("no kill of the kind %q landed", k)
		}
	}
}

// killRun runs the copy once and kills it as kind says: "first chunk" just
// after the run wrote its first record (right before its first write),
// "state replacement" while a temporary state file waits to be renamed,
// "random" at a random moment of the time the rest of the copy should
// take, "after a checkpoint" a few ms after the record advanced (with
// writes in flight past it), "none" not at all. It reports whether the kill landed before the
// copy finished.
func killRun(t *testing.T, args []string, rec, kind string, full time.Duration, before *state.State, rng *rand.Rand) (string, bool, error) {
	t.Helper()
	c := blkcopyRun(t, args)
	if kind == "state replacement" {
		c.Env = append(c.Env, "BLKCOPY_TEST_STATE_RENAME_DELAY=150ms")
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	var doneBefore int64
	if before != nil {
		doneBefore = before.Done
	}
	deadline := time.Now().Add(30 * time.Second)
	var when <-chan time.Time
	switch kind {
	case "random":
		left := 1.0
		if before != nil {
			left = float64(killCopyLen-before.Done) / killCopyLen
		}
		d := time.Duration(rng.Float64() * 0.9 * float64(full) * left)
		when = time.After(d)
	case "first chunk", "state replacement":
		// Polled below.
	default:
		when = nil
	}
	// State replacement: kill during the run's first save (its first
	// checkpoint, with writes in flight) or, in a new copy, maybe during
	// the second; a resumed run may not save again before its end.
	seen, want := 0, 1
	if before == nil {
		want += rng.IntN(2)
	}
	tmpWas := false
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return out.String(), false, err
		case <-when:
			return killNow(c, exited, &out)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			c.Process.Kill()
			<-exited
			t.Fatalf("run with kill %q did not end in 30 s:\n%s", kind, out.String())
		}
		switch kind {
		case "first chunk":
			if written(c.Process.Pid) >= 64<<10 {
				// The copy has written its first bytes (more than
				// the state file probe): kill within the next few ms.
				time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
				return killNow(c, exited, &out)
			}
		case "after a checkpoint":
			if r, err := state.Load(rec); err == nil && r != nil && r.Done > doneBefore {
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
				return killNow(c, exited, &out)
			}
		case "state replacement":
			_, err := os.Stat(rec + ".tmp")
			tmp := err == nil
			if tmp && !tmpWas {
				if seen++; seen == want {
					return killNow(c, exited, &out)
				}
			}
			tmpWas = tmp
		}
	}
}

// settled: the record of a finished copy is gone, except an overlapping
// copy's, which stays marked done so that running it again does nothing;
// the test removes it to start the next copy.
func settled(t *testing.T, s killSetup, rec string, args []string) {
	t.Helper()
	r := loadRecord(t, rec)
	switch {
	case !s.overlap && r != nil:
		t.Fatalf("state file still there after the copy finished: %+v", r)
	case s.overlap && (r == nil || r.Done != killCopyLen):
		t.Fatalf("record of the finished overlapping copy: %+v; want it kept, all done", r)
	case s.overlap:
		// Running it again (as after a kill just before exit 0) does
		// nothing: moving the data twice would not be the same result.
		out, err := blkcopyRun(t, args).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nothing left to copy") {
			t.Fatalf("the finished overlapping copy again: %v\n%s", err, out)
		}
		s.check(t)
		os.Remove(rec)
	}
}

// blkcopyRun is blkcopyCommand with the race detector's one-second sleep
// at exit turned off (go test -race builds the binary with it): the kills
// are timed against the copy, not against that sleep; and with the
// checkpoint period of killStateEvery.
func blkcopyRun(t *testing.T, args []string) *exec.Cmd {
	c := blkcopyCommand(t, args...)
	c.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "BLKCOPY_TEST_STATE_EVERY="+killStateEvery.String())
	return c
}

func killNow(c *exec.Cmd, exited chan error, out *bytes.Buffer) (string, bool, error) {
	c.Process.Signal(syscall.SIGKILL)
	err := <-exited
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return out.String(), true, nil
		}
	}
	return out.String(), false, err // it finished (or failed) first
}

// written is what process pid has written with write system calls and
// copy_file_range so far (wchar in /proc/PID/io), 0 when unknown.
func written(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func loadRecord(t *testing.T, path string) *state.State {
	t.Helper()
	r, err := state.Load(path)
	if err != nil {
		t.Fatalf("after a kill: %v", err)
	}
	return r
}

// diskDir is a directory on the disk the module lives on, or "" when that
// is a tmpfs too (fdatasync would prove nothing there).
func diskDir(t *testing.T) string {
	var fs unix.Statfs_t
	if err := unix.Statfs(".", &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
		return ""
	}
	return "."
}

func tempIn(t *testing.T, parent string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "blkcopy-kill-")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ = filepath.Abs(dir)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Sizes around the 512 MiB range: the source has data before and after
// it, the destination sentinel bytes on both sides.
const (
	killSrcOff  = 32<<20 + 512
	killDstOff  = 48<<20 + 4096
	killSrcSize = killSrcOff + killCopyLen + 16<<20
	killDstSize = killDstOff + killCopyLen + 32<<20
	killSeed    = 2026
	sentinel    = 0xA5
)

// writeImage writes size bytes to path: the sentinel when seed is 0, else
// an 8 MiB pseudo-random block again and again with every 4 KiB stamped
// with its own offset, so that no two 4 KiB blocks of the image are alike
// and a block copied to the wrong place shows. A block at a time: no
// 512 MiB in memory.
func writeImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8<<20)
	if seed == 0 {
		for i := range buf {
			buf[i] = sentinel
		}
	} else {
		rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42}).Read(buf)
	}
	for done := int64(0); done < size; {
		b := buf[:min(int64(len(buf)), size-done)]
		if seed != 0 {
			for k := 0; k+8 <= len(b); k += 4096 {
				binary.LittleEndian.PutUint64(b[k:], uint64(done)+uint64(k))
			}
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		done += int64(len(b))
	}
}

// attach makes a direct-I/O loop device over img and detaches it (only it)
// when the test ends.
func attach(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--direct-io=on", "--sector-size", "512", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// sameBytes compares n bytes of a at aOff with b at bOff (with cmp(1),
// which is fast whatever go test's flags) and fails naming the first
// difference.
func sameBytes(t *testing.T, what, a string, aOff int64, b string, bOff, n int64) {
	t.Helper()
	out, err := exec.Command("cmp", "-i", fmt.Sprintf("%d:%d", aOff, bOff), "-n", strconv.FormatInt(n, 10), a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s at offset %d differs from %s at offset %d (%v): %s", what, b, bOff, a, aOff, err, out)
	}
}

// allSentinel checks that n bytes of path at off are the sentinel.
func allSentinel(t *testing.T, what, path string, off, n int64) {
	t.Helper()
	if n > sentinelSize {
		t.Fatalf("%s: %d bytes is more than the sentinel file holds", what, n)
	}
	sameBytes(t, what+" (sentinel bytes, never written)", sentinelPath, 0, path, off, n)
}

// sentinelPath is a file of sentinelSize sentinel bytes, made by the test.
var sentinelPath string

const sentinelSize = 64 << 20

// twoLoops: a source and a destination loop device over images in dir
// (different disks: the copy goes through the host, O_DIRECT).
func twoLoops(t *testing.T, dir string) killSetup {
	srcImg, dstImg := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	writeImage(t, srcImg, killSrcSize, killSeed)
	writeImage(t, dstImg, killDstSize, 0)
	src, dst := attach(t, srcImg), attach(t, dstImg)
	// The images are what the devices hold (blkcopy writes with O_DIRECT,
	// and a direct-I/O loop device writes its image with O_DIRECT): check
	// and reset through them, fast and past the devices' page cache.
	return killSetup{src: src, dst: dst, srcOff: killSrcOff, dstOff: killDstOff, stateDir: dir,
		check: func(t *testing.T) { checkTwo(t, srcImg, dstImg) },
		reset: func(t *testing.T) { resetRange(t, dstImg) }}
}

// twoFiles: regular files in dir (copy_file_range between them).
func twoFiles(t *testing.T, dir string) killSetup {
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	writeImage(t, src, killSrcSize, killSeed)
	writeImage(t, dst, killDstSize, 0)
	return killSetup{src: src, dst: dst, srcOff: killSrcOff, dstOff: killDstOff, stateDir: dir,
		check: func(t *testing.T) {
			checkTwo(t, src, dst)
			if st, err := os.Stat(dst); err != nil || st.Size() != killDstSize {
				t.Fatalf("destination file size changed: %v %v", st, err)
			}
		},
		reset: func(t *testing.T) { resetRange(t, dst) }}
}

func checkTwo(t *testing.T, src, dst string) {
	t.Helper()
	sameBytes(t, "copied range", src, killSrcOff, dst, killDstOff, killCopyLen)
	allSentinel(t, "before the range", dst, 0, killDstOff)
	allSentinel(t, "after the range", dst, killDstOff+killCopyLen, killDstSize-killDstOff-killCopyLen)
}

// resetRange puts the sentinel back over the destination range.
func resetRange(t *testing.T, dst string) {
	t.Helper()
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{sentinel}, 8<<20)
	for done := int64(0); done < killCopyLen; done += int64(len(buf)) {
		if _, err := f.WriteAt(buf, killDstOff+done); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// overlapLoop: one loop device; 512 MiB moved up by 100 MiB within it, so
// the copy runs backward, in chunks no longer than the distance, each one
// reading bytes an earlier copy may have moved already. A pristine image
// of the device gives the expected bytes.
func overlapLoop(t *testing.T, dir string) killSetup {
	const srcOff, dstOff, size = 1<<20 + 512, 101<<20 + 512, 640 << 20
	img, pristine := filepath.Join(dir, "disk.img"), filepath.Join(dir, "pristine.img")
	writeImage(t, img, size, killSeed)
	writeImage(t, pristine, size, killSeed)
	dev := attach(t, img)
	return killSetup{src: dev, dst: dev, srcOff: srcOff, dstOff: dstOff, stateDir: dir, overlap: true,
		check: func(t *testing.T) {
			sameBytes(t, "moved range", pristine, srcOff, img, dstOff, killCopyLen)
			sameBytes(t, "before the range", pristine, 0, img, 0, dstOff)
			sameBytes(t, "after the range", pristine, dstOff+killCopyLen, img, dstOff+killCopyLen, size-dstOff-killCopyLen)
		},
		reset: func(t *testing.T) {
			t.Helper()
			in, err := os.Open(pristine)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			out, err := os.OpenFile(img, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			if _, err := io.Copy(out, in); err != nil {
				t.Fatal(err)
			}
			if err := out.Sync(); err != nil {
				t.Fatal(err)
			}
		}}
}
