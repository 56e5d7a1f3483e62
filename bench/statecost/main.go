// Command statecost measures what --state costs: the same onload copy on
// the benchmark's scenario A (loop devices on /dev/shm) and B (loop devices
// on disk), with and without --state, alternating, and prints the row the
// benchmark table gets. The target is "within noise": at most 3% slower,
// median of the per-round ratios. The state file lives on disk in both
// scenarios, so its fsyncs are real. As root:
//
//	go run ./bench/statecost                    # 2 GiB, 5 counted rounds
//	go run ./bench/statecost --size 256M --runs 1
//
// It is a program of its own, next to bench/, so that it can be run and
// changed without touching the main benchmark.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/blkcopy/blkcopy/internal/size"
)

func main() {
	os.Exit(realMain())
}

func realMain() int {
	sizeFlag := flag.String("size", "2G", "bytes to copy ("+size.Help+")")
	runs := flag.Int("runs", 5, "counted rounds (each runs both, in alternating order)")
	warmup := flag.Int("warmup", 1, "uncounted rounds")
	dir := flag.String("dir", "bench/results", "directory on disk for scenario B and the state files")
	bin := flag.String("blkcopy", "", "blkcopy binary (default: go build the module)")
	scen := flag.String("scenarios", "A,B", "A (loop on /dev/shm), B (loop on disk)")
	flag.Parse()
	n, err := size.Parse(*sizeFlag)
	if err != nil || n <= 0 || n%(4<<20) != 0 {
		fmt.Fprintf(os.Stderr, "statecost: --size %q: want a positive multiple of 4M\n", *sizeFlag)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "statecost: needs root (loop devices)")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "statecost:", err)
		return 1
	}
	if *bin == "" {
		*bin = filepath.Join(*dir, "blkcopy-statecost")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", *bin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "statecost: go build: %v\n%s", err, out)
			return 1
		}
		defer os.Remove(*bin)
	}
	fmt.Println("| scenario | size | blkcopy MiB/s | with --state MiB/s | --state slower by (median of rounds) | best run vs best run | target <= 3% |")
	fmt.Println("|---|---|---|---|---|---|---|")
	status := 0
	for _, s := range []struct{ key, label, where string }{
		{"A", "A: loop on /dev/shm", "/dev/shm"}, {"B", "B: loop on disk", *dir},
	} {
		if !strings.Contains(*scen, s.key) || ctx.Err() != nil {
			continue
		}
		row, err := scenario(ctx, *bin, s.label, s.where, *dir, n, *warmup, *runs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "statecost: %s: %v\n", s.label, err)
			status = 1
			continue
		}
		fmt.Println(row)
	}
	return status
}

// scenario copies n bytes between two direct-I/O loop devices over files
// in where, rounds times each way, and returns the table row.
func scenario(ctx context.Context, bin, label, where, stateDir string, n int64, warmup, rounds int) (string, error) {
	work, err := os.MkdirTemp(where, "blkcopy-statecost-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	src, dst := filepath.Join(work, "src.img"), filepath.Join(work, "dst.img")
	if err := fill(src, n); err != nil {
		return "", err
	}
	if err := exec.Command("fallocate", "-l", fmt.Sprint(n), dst).Run(); err != nil {
		return "", fmt.Errorf("fallocate %s: %w", dst, err)
	}
	var devs []string
	defer func() {
		for _, d := range devs {
			exec.Command("losetup", "-d", d).Run()
		}
	}()
	for _, f := range []string{src, dst} {
		out, err := exec.Command("losetup", "-f", "--show", "--direct-io=on", f).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("losetup %s: %v: %s", f, err, out)
		}
		devs = append(devs, strings.TrimSpace(string(out)))
	}
	rec := filepath.Join(stateDir, "statecost.state")
	defer os.Remove(rec)
	argv := []string{bin, devs[0], devs[1], "--len", fmt.Sprint(n), "--mode", "onload", "--progress", "never", "--quiet"}
	var plain, state, ratios []float64
	for round := 0; round < warmup+rounds; round++ {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		var secs [2]float64
		for _, withState := range order {
			a := argv
			if withState {
				a = append(slices.Clone(argv), "--state", rec)
			}
			t0 := time.Now()
			if out, err := exec.CommandContext(ctx, a[0], a[1:]...).CombinedOutput(); err != nil {
				return "", fmt.Errorf("%s: %v: %s", strings.Join(a, " "), err, out)
			}
			secs[b2i(withState)] = time.Since(t0).Seconds()
		}
		if round < warmup {
			continue
		}
		mib := float64(n) / (1 << 20)
		plain, state = append(plain, mib/secs[0]), append(state, mib/secs[1])
		ratios = append(ratios, secs[1]/secs[0])
	}
	if out, err := exec.CommandContext(ctx, "cmp", "-n", fmt.Sprint(n), devs[0], devs[1]).CombinedOutput(); err != nil {
		return "", fmt.Errorf("the copies are wrong: %v: %s", err, out)
	}
	slower := (median(ratios) - 1) * 100
	verdict := "ok"
	if slower > 3 {
		verdict = "MISSED"
	}
	lo, hi := slices.Min(ratios), slices.Max(ratios)
	best := (slices.Max(plain)/slices.Max(state) - 1) * 100
	return fmt.Sprintf("| %s | %s | %.0f | %.0f | %+.1f%% (rounds %+.1f%% to %+.1f%%) | %+.1f%% | %s |",
		label, size.Format(n), median(plain), median(state), slower, (lo-1)*100, (hi-1)*100, best, verdict), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fill writes n pseudo-random bytes to path.
func fill(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	r := rand.NewChaCha8([32]byte{'s', 't', 'a', 't', 'e'})
	for done := int64(0); done < n; done += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return nil
}
