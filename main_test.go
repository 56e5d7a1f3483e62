package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/blkcopy/blkcopy/cmd"
	"github.com/blkcopy/blkcopy/internal/size"
)

// The CLI scripts in testdata/script run the real command (this test binary
// re-executed as "blkcopy") on image files.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"blkcopy": func() { os.Exit(cmd.Execute()) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkdata":   cmdMkdata,
			"fill":     cmdFill,
			"cmprange": cmdCmprange,
			"allbytes": cmdAllbytes,
			"status":   cmdStatus,
			"filesize": cmdFilesize,
			"attach":   cmdAttach,
			"mountdev": cmdMountdev,
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			case "mkfs":
				_, err := exec.LookPath("mkfs.ext4")
				return err == nil, nil
			case "shm":
				st, err := os.Stat("/dev/shm")
				return err == nil && st.IsDir(), nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

// atoi takes numbers as scripts write them: 4096, 0xAA, 2M.
func atoi(ts *testscript.TestScript, s string) int64 {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		if n, err = size.Parse(s); err != nil {
			ts.Fatalf("bad number %q: %v", s, err)
		}
	}
	return n
}

// mkdata FILE SIZE SEED: FILE of SIZE pseudo-random bytes from SEED.
func cmdMkdata(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: mkdata FILE SIZE SEED")
	}
	n, seed := atoi(ts, args[1]), atoi(ts, args[2])
	r := rand.New(rand.NewPCG(uint64(seed), 0x626c6b636f7079))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// fill FILE SIZE BYTE: FILE of SIZE copies of BYTE (a sentinel pattern).
func cmdFill(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: fill FILE SIZE BYTE")
	}
	b := bytes.Repeat([]byte{byte(atoi(ts, args[2]))}, int(atoi(ts, args[1])))
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

func readRange(ts *testscript.TestScript, name string, off, n int64) []byte {
	b, err := os.ReadFile(ts.MkAbs(name))
	ts.Check(err)
	if off < 0 || n < 0 || off+n > int64(len(b)) {
		ts.Fatalf("%s: range %d+%d outside its %d bytes", name, off, n, len(b))
	}
	return b[off : off+n]
}

// cmprange A AOFF B BOFF LEN: the ranges are equal (! for differ).
func cmdCmprange(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 5 {
		ts.Fatalf("usage: cmprange A AOFF B BOFF LEN")
	}
	n := atoi(ts, args[4])
	a := readRange(ts, args[0], atoi(ts, args[1]), n)
	b := readRange(ts, args[2], atoi(ts, args[3]), n)
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	switch {
	case i < len(a) && !neg:
		ts.Fatalf("%s and %s differ at byte %d of the range", args[0], args[2], i)
	case i == len(a) && neg:
		ts.Fatalf("%s and %s ranges are equal", args[0], args[2])
	}
}

// allbytes FILE OFF LEN BYTE: every byte of the range is BYTE; the
// sentinel check that nothing outside the destination range was written.
func cmdAllbytes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: allbytes FILE OFF LEN BYTE")
	}
	want := byte(atoi(ts, args[3]))
	for i, c := range readRange(ts, args[0], atoi(ts, args[1]), atoi(ts, args[2])) {
		if c != want {
			ts.Fatalf("%s: byte at offset %d is %#x, want sentinel %#x", args[0], atoi(ts, args[1])+int64(i), c, want)
		}
	}
}

// status N PROG ARGS...: run PROG and require exit status N; its output
// is kept for stdout/stderr checks like exec's.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROG [ARGS...]")
	}
	want := int(atoi(ts, args[0]))
	err := ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// filesize FILE N: FILE is N bytes long.
func cmdFilesize(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: filesize FILE N")
	}
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	if st.Size() != atoi(ts, args[1]) {
		ts.Fatalf("%s is %d bytes, want %s", args[0], st.Size(), args[1])
	}
}

// attach VAR FILE [LOSETUP-FLAGS...]: attach FILE to a loop device with
// direct I/O, put its path in $VAR, and detach it when the script ends.
func cmdAttach(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: attach VAR FILE [losetup flags]")
	}
	argv := append([]string{"-f", "--show", "--direct-io=on"}, args[2:]...)
	out, err := exec.Command("losetup", append(argv, ts.MkAbs(args[1]))...).CombinedOutput()
	if err != nil {
		ts.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	ts.Setenv(args[0], dev)
	ts.Defer(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			ts.Logf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
}

// mountdev DEV DIR: make an ext4 file system on DEV, mount it on DIR and
// unmount it when the script ends.
func cmdMountdev(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mountdev DEV DIR")
	}
	dir := ts.MkAbs(args[1])
	ts.Check(os.MkdirAll(dir, 0o755))
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", args[0]).CombinedOutput(); err != nil {
		ts.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", args[0], dir).CombinedOutput(); err != nil {
		ts.Fatalf("mount: %v: %s", err, out)
	}
	ts.Defer(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			ts.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
}
