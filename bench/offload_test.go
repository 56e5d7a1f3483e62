package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseShapes(t *testing.T) {
	got, err := parseShapes(defaultShapes + "; lbs=4096,mssrl=64,mcl=256,msrc=3")
	if err != nil {
		t.Fatal(err)
	}
	want := []nsShape{{512, 128, 2048, 127}, {512, 2048, 16384, 15}, {4096, 64, 256, 3}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("shape %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "mssrl=128,mcl=64,msrc=1", "mssrl=128,mcl=2048", "mssrl=0,mcl=1,msrc=0",
		"mssrl=1,mcl=1,msrc=256", "lbs=1024,mssrl=1,mcl=1,msrc=0", "mssrl=1,mcl=1,msrc=0,x=1", "mssrl=a,mcl=1,msrc=0"} {
		if _, err := parseShapes(bad); err == nil {
			t.Errorf("parseShapes(%q): no error", bad)
		}
	}
}

// The nvme copy loop copies exactly [0, n) to [n, 2n) in commands of the
// shape blkcopy's NVMe path uses.
func TestNVMeLoopScript(t *testing.T) {
	for _, tt := range []struct {
		shape      nsShape
		n          int64
		cmds       int
		rangesLast int
	}{
		{nsShape{512, 128, 2048, 127}, 64 << 20, 64, 16},
		{nsShape{512, 2048, 16384, 15}, 64 << 20, 8, 8},
		{nsShape{512, 2048, 16384, 15}, 12 << 20, 2, 4},
		{nsShape{4096, 64, 100, 3}, 1 << 20, 3, 1}, // MCL cuts the second range of a command
		{nvmetShape(512), 512 << 20, 1, 17},        // over NVMe/TCP: 16 full ranges and 16 blocks
	} {
		script, cmds := nvmeLoopScript(tt.shape, tt.n)
		if cmds != tt.cmds {
			t.Errorf("%v %d: %d commands, want %d", tt.shape, tt.n, cmds, tt.cmds)
		}
		blocks := tt.n / tt.shape.lbs
		next, seen, lastRanges := int64(0), 0, 0
		for _, line := range strings.Split(script, "\n") {
			if !strings.HasPrefix(line, "nvme copy ") {
				continue
			}
			seen++
			f := fieldMap(strings.ReplaceAll(line, "--", ""))
			sdlba, _ := strconv.ParseInt(f["sdlba"], 10, 64)
			if sdlba != blocks+next {
				t.Errorf("%v: command %d: sdlba %d, want %d", tt.shape, seen, sdlba, blocks+next)
			}
			slbs, nlbs := strings.Split(f["slbs"], ","), strings.Split(f["blocks"], ",")
			if len(slbs) != len(nlbs) || int64(len(slbs)) > tt.shape.maxRanges() {
				t.Fatalf("%v: command %d: %d ranges, %d lengths", tt.shape, seen, len(slbs), len(nlbs))
			}
			var cmdBlocks int64
			for i := range slbs {
				slba, _ := strconv.ParseInt(slbs[i], 10, 64)
				nlb, _ := strconv.ParseInt(nlbs[i], 10, 64)
				if slba != next || nlb+1 > tt.shape.rangeBlocks() {
					t.Fatalf("%v: command %d range %d: slba %d nlb %d (0-based), want slba %d", tt.shape, seen, i, slba, nlb, next)
				}
				next += nlb + 1
				cmdBlocks += nlb + 1
			}
			if cmdBlocks > tt.shape.cmdBlocks() {
				t.Errorf("%v: command %d: %d blocks, more than %d", tt.shape, seen, cmdBlocks, tt.shape.cmdBlocks())
			}
			lastRanges = len(slbs)
		}
		if next != blocks || seen != cmds || lastRanges != tt.rangesLast {
			t.Errorf("%v %d: commands cover %d of %d blocks in %d commands (reported %d), last with %d ranges (want %d)",
				tt.shape, tt.n, next, blocks, seen, cmds, lastRanges, tt.rangesLast)
		}
		if !strings.Contains(script, "nvme flush") {
			t.Errorf("no flush at the end:\n%s", script)
		}
	}
}

func TestAttributeTrace(t *testing.T) {
	trace := strings.Join([]string{
		"pci_nvme_read cid 384 nsid 1 nlb 8 count 4096 lba 0x0", // boot: nobody's
		"pci_nvme_read cid 128 nsid 9 nlb 8 count 4096 lba 0x0",
		"pci_nvme_copy cid 129 nsid 9 nr 1 format 0x0", // mark 1: copy 0 begins
		"pci_nvme_copy cid 1 nsid 1 nr 16 format 0x0",
		"pci_nvme_read cid 2 nsid 1 nlb 128 count 65536 lba 0x0",
		"pci_nvme_copy cid 3 nsid 1 nr 4 format 0x0",
		"pci_nvme_copy cid 130 nsid 9 nr 1 format 0x0",             // mark 2: copy 0 ends
		"pci_nvme_read cid 4 nsid 1 nlb 1024 count 524288 lba 0x0", // the check
		"pci_nvme_copy cid 131 nsid 9 nr 1 format 0x0",             // copy 1
		"pci_nvme_read cid 5 nsid 2 nlb 1024 count 524288 lba 0x0",
		"pci_nvme_copy cid 132 nsid 9 nr 1 format 0x0",
		"",
	}, "\n")
	path := filepath.Join(t.TempDir(), "trace.log")
	if err := os.WriteFile(path, []byte(trace), 0o644); err != nil {
		t.Fatal(err)
	}
	c0, c1 := &copyRun{k: 0}, &copyRun{k: 1}
	res := &vmResult{shapes: []*shapeResult{{runs: []*copyRun{c0}}, {runs: []*copyRun{c1}}}}
	if err := attributeTrace(path, res, 4); err != nil {
		t.Fatal(err)
	}
	if c0.trace.copies != 2 || c0.trace.ranges != 20 || c0.trace.readBytes != 65536 || runLength(c0.trace.nr) != "16, 4" {
		t.Errorf("copy 0: %+v", c0.trace)
	}
	if c1.trace.copies != 0 || c1.trace.readBytes != 524288 {
		t.Errorf("copy 1: %+v", c1.trace)
	}
	if err := attributeTrace(path, res, 6); err == nil {
		t.Error("a marker count other than the guest's is not an error")
	}
}

func TestRunLength(t *testing.T) {
	for in, want := range map[string]string{"": "none", "1": "1", "1 2 4 4 4 16 16 3": "1, 2, 4x3, 16x2, 3"} {
		var v []int
		for _, f := range strings.Fields(in) {
			n, _ := strconv.Atoi(f)
			v = append(v, n)
		}
		if got := runLength(v); got != want {
			t.Errorf("runLength(%v) = %q, want %q", v, got, want)
		}
	}
}

// The guests' BENCH protocol: lines anywhere in the console output, FAIL
// and a missing DONE are failures, and so is what the handler rejects.
func TestGuestLines(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string // "" = no error; else a part of it
		kinds string // the kinds the handler saw
	}{
		{"clean", []string{"boot noise", "guest: BENCH INFO kernel=6.1", "guest: BENCH COPY k=0", "guest: BENCH DONE"}, "", "INFO COPY "},
		{"a guest failure", []string{"guest: BENCH FAIL zero /dev/nvme0n1", "guest: BENCH DONE"}, "zero /dev/nvme0n1", ""},
		{"no DONE", []string{"guest: BENCH COPY k=0"}, "did not reach BENCH DONE", "COPY "},
		{"the handler rejects", []string{"guest: BENCH COPY bad", "guest: BENCH DONE"}, "rejected bad", "COPY "},
	}
	for _, tt := range tests {
		var kinds string
		err := guestLines(tt.lines, func(kind, rest string) string {
			kinds += kind + " "
			if rest == "bad" {
				return "rejected " + rest
			}
			return ""
		})
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		if kinds != tt.kinds {
			t.Errorf("%s: handler saw %q, want %q", tt.name, kinds, tt.kinds)
		}
	}
}
