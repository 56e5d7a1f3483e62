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
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
			const size = 32 << 20
			data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			for i := 0; i < size; i += 4096 {
				binary.LittleEndian.PutUint32(data[i:], uint32(i)) // no two blocks alike, so a misplaced block shows
			}
			if err := os.WriteFile(src, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, bytes.Repeat([]byte{0xAA}, 40<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			// Small I/Os through the host make the copy slow enough to
			// interrupt; the progress bar tells when it is under way.
			c := blkcopyCommand(t, src, dst, "--src-offset", "4096", "--dst-offset", "1M", "--len", "24M",
				"--mode", "onload", "--chunk", "4K", "--progress", "always")
			if tt.json {
				c.Args = append(c.Args, "--json")
			}
			var stdout bytes.Buffer
			c.Stdout = &stdout
			stderr, err := c.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			// Read raw bytes, not lines: the bar redraws with \r and its
			// first frame is not terminated until the next one.
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
			var resume string
			for _, line := range strings.Split(all.String(), "\n") {
				if r, ok := strings.CutPrefix(line, "blkcopy: resume with: "); ok {
					resume = r
				}
			}
			err = c.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 130 {
				t.Fatalf("exit: %v, want status 130; stderr:\n%s", err, all.String())
			}
			if resume == "" {
				t.Fatalf("no resume command printed; stderr:\n%s", all.String())
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
	dir := t.TempDir()
	src, dst, rec := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img"), filepath.Join(dir, "copy.state")
	const size = 32 << 20
	data := make([]byte, size)
	for i := 0; i < size; i += 4096 {
		binary.LittleEndian.PutUint32(data[i:], uint32(i)+1)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, bytes.Repeat([]byte{0xAA}, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c := blkcopyCommand(t, src, dst, "--src-offset", "4096", "--dst-offset", "1M", "--len", "24M",
		"--mode", "onload", "--chunk", "4K", "--progress", "always", "--state", rec)
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
			c.Process.Signal(syscall.SIGTERM)
			signalled = true
		}
		if rerr != nil {
			break
		}
	}
	var ee *exec.ExitError
	if err := c.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want status 130; stderr:\n%s", err, all.String())
	}
	var resume string
	var done int64
	for _, line := range strings.Split(all.String(), "\n") {
		if r, ok := strings.CutPrefix(line, "blkcopy: resume with: "); ok {
			resume = r
		}
		fmt.Sscanf(line[strings.LastIndex(line, "\r")+1:], "blkcopy: interrupted after %d of", &done)
	}
	want := fmt.Sprintf("--src-offset 4096 --dst-offset 1048576 --len 25165824 --state %s --mode onload --chunk 4096 --progress always", rec)
	if !strings.HasSuffix(resume, want) {
		t.Fatalf("resume command %q; want the whole request again with --state, ending %q", resume, want)
	}
	if !strings.Contains(all.String(), "progress recorded in state file "+rec) || done <= 0 {
		t.Errorf("the interrupt report does not say the progress (%d bytes) is in the state file:\n%s", done, all.String())
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
