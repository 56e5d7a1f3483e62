package cmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/blkcopy/blkcopy/internal/copier"
)

func TestExitCodesAreTheDocumentedOnes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"runtime error", fmt.Errorf("write /dev/loop1 at offset 4096: %w", fs.ErrPermission), 1},
		{"usage error", usageErrorf("invalid mode %q", "x"), 2},
		{"wrapped usage error", fmt.Errorf("context: %w", usageErrorf("bad")), 2},
		{"offload unavailable", &exitError{ExitNoOffload, copier.ErrOffloadUnavailable}, 3},
		{"verify mismatch", &exitError{ExitMismatch, &copier.MismatchError{}}, 4},
		{"interrupted", &exitError{ExitInterrupted, errors.New("x")}, 130},
		{"cancelled context", fmt.Errorf("read: %w", context.Canceled), 130},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exit code %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestResumeCommandRepeatsTheRequestForWhatIsLeft(t *testing.T) {
	o := &copyOptions{prog: "blkcopy", src: "/dev/sda", dst: "/backup/it's here.img", mode: "onload", sparse: "never", progress: "never", verify: true}
	o.chunk.N, o.chunk.IsSet = 1<<20, true
	got := o.resumeCommand(&copier.InterruptedError{SrcOff: 4096, DstOff: 8192, Len: 100})
	want := `blkcopy /dev/sda '/backup/it'\''s here.img' --src-offset 4096 --dst-offset 8192 --len 100 --mode onload --sparse never --chunk 1048576 --verify --progress never`
	if got != want {
		t.Errorf("resume command\n got %s\nwant %s", got, want)
	}
}

// With --state the state file says what is left: the resume command is
// the whole request again, which the record matches.
func TestResumeCommandWithStateRepeatsTheWholeRequest(t *testing.T) {
	o := &copyOptions{prog: "blkcopy", src: "/dev/sda", dst: "/dev/sdb", mode: "auto", progress: "auto", state: "/var/lib/b/copy.state"}
	got := o.resumeCommand(&copier.InterruptedError{Done: 1 << 20, Total: 8 << 20, SrcOff: 4096 + 1<<20, DstOff: 1 << 20, Len: 7 << 20, ReqSrcOff: 4096, ReqDstOff: 0})
	want := `blkcopy /dev/sda /dev/sdb --src-offset 4096 --dst-offset 0 --len 8388608 --state /var/lib/b/copy.state`
	if got != want {
		t.Errorf("resume command\n got %s\nwant %s", got, want)
	}
}

func TestShellQuoteOnlyQuotesWhatNeedsIt(t *testing.T) {
	tests := map[string]string{
		"/dev/nvme0n1p2":    "/dev/nvme0n1p2",
		"a b":               "'a b'",
		"":                  "''",
		"$(rm -rf /)":       "'$(rm -rf /)'",
		"it's":              `'it'\''s'`,
		"/dev/disk/by-id/x": "/dev/disk/by-id/x",
	}
	for in, want := range tests {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
