package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"
)

// blkcopyCommand runs this test binary as "blkcopy" (testscript.Main
// dispatches on the program name).
func blkcopyCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "blkcopy")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	return exec.Command(bin, args...)
}

func TestProgressBarOnlyOnATerminal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	if err := os.WriteFile(src, bytes.Repeat([]byte("blkcopy!"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		progress string
		tty      bool
		extra    []string
		wantBar  bool
	}{
		{"auto on a terminal shows the bar", "auto", true, nil, true},
		{"auto off a terminal is silent", "auto", false, nil, false},
		{"always shows it off a terminal", "always", false, nil, true},
		{"never hides it on a terminal", "never", true, nil, false},
		{"--json hides it on a terminal", "auto", true, []string{"--json"}, false},
		{"--quiet hides it on a terminal", "auto", true, []string{"--quiet"}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(dir, "dst"+string(rune('a'+i)))
			args := append([]string{src, dst, "--mode", "onload", "--progress", tt.progress}, tt.extra...)
			c := blkcopyCommand(t, args...)
			var stderr string
			if tt.tty {
				ptmx, tty, err := pty.Open()
				if err != nil {
					t.Skipf("no pseudo-terminal available: %v", err)
				}
				defer ptmx.Close()
				c.Stderr = tty
				var out bytes.Buffer
				c.Stdout = &out
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				tty.Close()
				done := make(chan []byte)
				go func() { b, _ := io.ReadAll(ptmx); done <- b }()
				if err := c.Wait(); err != nil {
					t.Fatalf("blkcopy: %v", err)
				}
				ptmx.Close()
				stderr = string(<-done)
			} else {
				var errb bytes.Buffer
				c.Stderr = &errb
				if err := c.Run(); err != nil {
					t.Fatalf("blkcopy: %v: %s", err, errb.String())
				}
				stderr = errb.String()
			}
			hasBar := strings.Contains(stderr, "100%") && strings.Contains(stderr, "copying")
			if hasBar != tt.wantBar {
				t.Errorf("progress bar shown = %v, want %v; stderr: %q", hasBar, tt.wantBar, stderr)
			}
			if !tt.wantBar && stderr != "" {
				t.Errorf("stderr not empty: %q", stderr)
			}
		})
	}
}
