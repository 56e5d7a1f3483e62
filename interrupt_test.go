package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// SIGTERM mid-copy: exit 130, a resume command on stderr, and running that
// command finishes the copy to the same bytes an uninterrupted copy gives.
func TestInterruptPrintsAResumeCommandThatFinishesTheCopy(t *testing.T) {
	for _, tt := range []struct {
		sig  syscall.Signal
		json bool
	}{{syscall.SIGTERM, false}, {syscall.SIGINT, false}, {syscall.SIGTERM, true}} {
		sig := tt.sig
		t.Run(fmt.Sprintf("%s json=%v", sig, tt.json), func(t *testing.T) {
			src, dst, data := interruptFixture(t)
			// Small I/Os through the host make the copy slow enough to
			// interrupt; the progress bar tells when it is under way.
			c := blkcopyCommand(t, src, dst, "--src-offset", "4096", "--dst-offset", "1M", "--len", "24M",
				"--mode", "onload", "--chunk", "4K", "--progress", "always")
			if tt.json {
				c.Args = append(c.Args, "--json")
			}
			var stdout bytes.Buffer
			c.Stdout = &stdout
			all, err := interruptOnceCopying(t, c, sig)
			var resume string
			for _, line := range strings.Split(all, "\n") {
				if r, ok := strings.CutPrefix(line, "blkcopy: resume with: "); ok {
					resume = r
				}
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 130 {
				t.Fatalf("exit: %v, want status 130; stderr:\n%s", err, all)
			}
			if resume == "" {
				t.Fatalf("no resume command printed; stderr:\n%s", all)
			}
			if tt.json {
				// One object, the interrupt report, and no second error object.
				var got struct {
					Interrupted   bool   `json:"interrupted"`
					ExitCode      int    `json:"exit_code"`
					DoneBytes     int64  `json:"done_bytes"`
					ResumeCommand string `json:"resume_command"`
				}
				dec := json.NewDecoder(&stdout)
				if err := dec.Decode(&got); err != nil {
					t.Fatalf("stdout is not JSON: %v", err)
				}
				if dec.More() {
					t.Errorf("more than one JSON object on stdout")
				}
				if !got.Interrupted || got.ExitCode != 130 || got.DoneBytes <= 0 || got.ResumeCommand != resume {
					t.Errorf("JSON interrupt report %+v does not match the stderr report (resume %q)", got, resume)
				}
			}
			args := strings.Fields(resume)[1:]
			for i, a := range args {
				switch a {
				case "--progress":
					args[i+1] = "never"
				case "--json":
					args[i] = "--quiet"
				}
			}
			if out, err := blkcopyCommand(t, args...).CombinedOutput(); err != nil {
				t.Fatalf("resume %s: %v: %s", resume, err, out)
			}
			got, _ := os.ReadFile(dst)
			want := bytes.Repeat([]byte{0xAA}, 40<<20)
			copy(want[1<<20:], data[4096:4096+24<<20])
			if !bytes.Equal(got, want) {
				t.Fatal("after the resume command the destination differs from an uninterrupted copy")
			}
		})
	}
}

// With --state, SIGTERM records the exact point in the state file too, and
// the printed resume command is the same request with --state: running it
// resumes from the record and says so.
func TestInterruptWithStateResumesFromTheStateFile(t *testing.T) {
	src, dst, data := interruptFixture(t)
	rec := filepath.Join(filepath.Dir(src), "copy.state")
	c := blkcopyCommand(t, src, dst, "--src-offset", "4096", "--dst-offset", "1M", "--len", "24M",
		"--mode", "onload", "--chunk", "4K", "--progress", "always", "--state", rec)
	all, err := interruptOnceCopying(t, c, syscall.SIGTERM)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want status 130; stderr:\n%s", err, all)
	}
	var resume string
	var done int64
	for _, line := range strings.Split(all, "\n") {
		if r, ok := strings.CutPrefix(line, "blkcopy: resume with: "); ok {
			resume = r
		}
		fmt.Sscanf(line[strings.LastIndex(line, "\r")+1:], "blkcopy: interrupted after %d of", &done)
	}
	want := fmt.Sprintf("--src-offset 4096 --dst-offset 1048576 --len 25165824 --state %s --mode onload --chunk 4096 --progress always", rec)
	if !strings.HasSuffix(resume, want) {
		t.Fatalf("resume command %q; want the whole request again with --state, ending %q", resume, want)
	}
	if !strings.Contains(all, "progress recorded in state file "+rec) || done <= 0 {
		t.Errorf("the interrupt report does not say the progress (%d bytes) is in the state file:\n%s", done, all)
	}
	args := strings.Fields(resume)[1:]
	args[len(args)-1] = "never" // --progress
	out, err := blkcopyCommand(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("resume %s: %v: %s", resume, err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("resumed from byte %d of 25165824", done)) {
		t.Errorf("the resume does not say it resumed from byte %d:\n%s", done, out)
	}
	got, _ := os.ReadFile(dst)
	wantDst := bytes.Repeat([]byte{0xAA}, 40<<20)
	copy(wantDst[1<<20:], data[4096:4096+24<<20])
	if !bytes.Equal(got, wantDst) {
		t.Fatal("after the resume the destination differs from an uninterrupted copy")
	}
	if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after the copy finished: %v", err)
	}
}

// interruptFixture makes a 32 MiB source, no two 4 KiB blocks alike (so a
// misplaced block shows), and a 40 MiB destination of 0xAA.
func interruptFixture(t *testing.T) (src, dst string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	src, dst = filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	const size = 32 << 20
	data = bytes.Repeat([]byte("0123456789abcdef"), size/16)
	for i := 0; i < size; i += 4096 {
		binary.LittleEndian.PutUint32(data[i:], uint32(i))
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, bytes.Repeat([]byte{0xAA}, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return src, dst, data
}

// interruptOnceCopying starts c (run with --progress always), sends it sig
// once the progress bar shows the copy under way, and returns its stderr
// and its exit error. It reads raw bytes, not lines: the bar redraws with
// \r and its first frame is not terminated until the next one.
func interruptOnceCopying(t *testing.T, c *exec.Cmd, sig syscall.Signal) (string, error) {
	t.Helper()
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	signalled := false
	buf := make([]byte, 4096)
	for {
		n, rerr := stderr.Read(buf)
		all.Write(buf[:n])
		if !signalled && strings.Contains(all.String(), "copying") {
			// The first frame is drawn once the copy has begun.
			c.Process.Signal(sig)
			signalled = true
		}
		if rerr != nil {
			break
		}
	}
	return all.String(), c.Wait()
}
