// Command bench measures blkcopy against dd, fio and cp on loop devices and
// regular files, as root:
//
//	go run ./bench                        # 2 GiB, 5 counted runs each
//	go run ./bench --size 64M --runs 1    # quick run, as CI does
//
// It checks every copy with cmp and exits 1 if any copy was wrong or
// failed; a missed performance target is printed as MISSED, not an error.
//
// With --offload it measures offloaded copies instead, in a QEMU guest on
// emulated NVMe namespaces (no root needed; about 3-4 minutes):
//
//	go run ./bench --offload                      # 64 MiB, 5 counted rounds, both kernels
//	go run ./bench --offload --kernels debian --shapes "mssrl=256,mcl=4096,msrc=15"
//
// See bench/README.md for what runs and what the columns mean.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/blkcopy/blkcopy/internal/size"
)

type config struct {
	size, fileSize int64
	sparseSize     int64
	runs, warmup   int
	dir            string
	blkcopy        string
	scenarios      map[string]bool
	rssSizes       []int64

	// --offload: the benchmark in a QEMU guest (offload.go).
	offload    bool
	xcopy      bool // --xcopy: the SCSI EXTENDED COPY benchmark (xcopy.go)
	kernels    []string
	shapes     []nsShape
	seedKernel string
	vmTimeout  time.Duration
	keep       bool
}

// bench carries what every scenario needs and collects failures.
type bench struct {
	ctx      context.Context
	cfg      config
	cl       *cleanups
	failures []string
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if b.ctx.Err() != nil {
		// Killed by the interrupt, not wrong: exit 130 says so.
		return
	}
	b.failures = append(b.failures, msg)
	fmt.Fprintln(os.Stderr, "bench: FAIL:", msg)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func main() {
	os.Exit(realMain())
}

func parseFlags() (config, error) {
	var cfg config
	sizeFlag := flag.String("size", "2G", "bytes to copy on the loop devices ("+size.Help+"); a multiple of 4M")
	fileSizeFlag := flag.String("file-size", "", "size of the regular file to copy (default: --size)")
	sparseSizeFlag := flag.String("sparse-size", "", "size of the sparse image of the sparse scenario (default: --size; the issue's rows use 4G)")
	flag.IntVar(&cfg.runs, "runs", 5, "counted runs per tool")
	flag.IntVar(&cfg.warmup, "warmup", 1, "uncounted warm-up runs per tool")
	flag.StringVar(&cfg.dir, "dir", "", "directory on the project's disk for scenario B and the file copies (default: bench/results in the module)")
	flag.StringVar(&cfg.blkcopy, "blkcopy", "", "blkcopy binary to test (default: go build the module)")
	scen := flag.String("scenarios", "A,B,file,xfs,sparse", "which to run: A (loop on /dev/shm), B (loop on disk), file (ext4 file copy), xfs (file copy on XFS with reflink), sparse (a sparse image: file -> file, device -> image, image -> device, vs cp, dd and qemu-img)")
	rss := flag.String("rss-sizes", "", "also copy these sizes once with blkcopy on sparse loop devices on disk to show peak RSS stays flat, e.g. 1G,8G")
	flag.BoolVar(&cfg.offload, "offload", false, "instead: the offload benchmark in a QEMU guest on emulated NVMe (default --size 64M; see bench/README.md)")
	flag.BoolVar(&cfg.xcopy, "xcopy", false, "instead: the SCSI EXTENDED COPY benchmark in a QEMU guest on LIO LUs (default --size 64M --runs 5; see bench/README.md)")
	kernels := flag.String("kernels", "seed,debian", "with --offload: kernels to boot: seed (the fixed seed kernel: copy_file_range offload), debian (Debian's kernel: NVMe passthrough), "+
		"seed-tcp and seed-tcp-nvme (the fixed seed kernel with NVMe/TCP, test/vm/seed-tcp.sh: namespaces exported over a loopback link, copied through copy_file_range or by passthrough)")
	shapes := flag.String("shapes", defaultShapes, "with --offload: NVMe namespaces, ';' between them: mssrl=,mcl=,msrc= and optionally lbs=512|4096")
	flag.StringVar(&cfg.seedKernel, "seed-kernel", "", "with --offload: the seed kernel image (default $BLKCOPY_SEED_KERNEL_DIR or ~/.cache/blkcopy-seed-kernel, bzImage-fixed)")
	flag.DurationVar(&cfg.vmTimeout, "vm-timeout", 15*time.Minute, "with --offload: how long one VM may run")
	flag.BoolVar(&cfg.keep, "keep", false, "with --offload: keep the images, initramfs and QEMU traces (their directory is printed)")
	flag.Parse()
	if flag.NArg() != 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.xcopy {
		if cfg.offload {
			return cfg, fmt.Errorf("--xcopy and --offload are two benchmarks: run one at a time")
		}
		if !set["size"] {
			*sizeFlag = "64M"
		}
		for _, name := range []string{"file-size", "scenarios", "rss-sizes", "kernels", "shapes", "seed-kernel"} {
			if set[name] {
				return cfg, fmt.Errorf("--%s does not apply to --xcopy", name)
			}
		}
	} else if cfg.offload {
		if !set["size"] {
			*sizeFlag = "64M"
		}
		for _, name := range []string{"file-size", "sparse-size", "scenarios", "rss-sizes"} {
			if set[name] {
				return cfg, fmt.Errorf("--%s does not apply to --offload", name)
			}
		}
		for _, k := range strings.Split(*kernels, ",") {
			switch k = strings.TrimSpace(k); k {
			case "seed", "debian", "seed-tcp", "seed-tcp-nvme":
				cfg.kernels = append(cfg.kernels, k)
			case "":
			default:
				return cfg, fmt.Errorf("--kernels: unknown %q (want seed, debian, seed-tcp, seed-tcp-nvme)", k)
			}
		}
		var err error
		if cfg.shapes, err = parseShapes(*shapes); err != nil {
			return cfg, err
		}
	} else {
		for _, name := range []string{"kernels", "shapes", "seed-kernel", "vm-timeout", "keep"} {
			if set[name] {
				return cfg, fmt.Errorf("--%s applies to --offload (and --xcopy) only", name)
			}
		}
	}
	var err error
	if cfg.size, err = size.Parse(*sizeFlag); err != nil {
		return cfg, err
	}
	if cfg.size <= 0 || cfg.size%(4<<20) != 0 {
		return cfg, fmt.Errorf("--size %s: must be a positive multiple of 4M (dd bs=4M copies whole blocks)", *sizeFlag)
	}
	cfg.fileSize = cfg.size
	if *fileSizeFlag != "" {
		if cfg.fileSize, err = size.Parse(*fileSizeFlag); err != nil {
			return cfg, err
		}
	}
	cfg.sparseSize = cfg.size
	if *sparseSizeFlag != "" {
		if cfg.sparseSize, err = size.Parse(*sparseSizeFlag); err != nil {
			return cfg, err
		}
		if cfg.sparseSize < 4<<20 || cfg.sparseSize%(4<<20) != 0 {
			return cfg, fmt.Errorf("--sparse-size %s: must be a positive multiple of 4M", *sparseSizeFlag)
		}
	}
	if cfg.runs < 1 || cfg.warmup < 0 {
		return cfg, fmt.Errorf("--runs must be >= 1 and --warmup >= 0")
	}
	cfg.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "A", "B", "file", "xfs", "sparse":
			cfg.scenarios[s] = true
		case "":
		default:
			return cfg, fmt.Errorf("--scenarios: unknown %q (want A, B, file, xfs, sparse)", s)
		}
	}
	for _, s := range strings.Split(*rss, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := size.Parse(s)
		if err != nil || n <= 0 || n%(4<<20) != 0 {
			return cfg, fmt.Errorf("--rss-sizes %s: want positive multiples of 4M", s)
		}
		cfg.rssSizes = append(cfg.rssSizes, n)
	}
	return cfg, nil
}

// realMain is main with exit codes: 0 every copy right, 1 a copy failed or
// was wrong, 2 usage or setup error, 130 interrupted.
func realMain() int {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if os.Geteuid() != 0 && !cfg.offload && !cfg.xcopy {
		fmt.Fprintln(os.Stderr, "bench: needs root (loop devices, mounts, drop_caches)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{ctx: ctx, cfg: cfg, cl: &cleanups{}}
	defer b.cl.run()

	root, err := moduleRoot(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if cfg.offload {
		return b.runOffload(root)
	}
	if cfg.xcopy {
		return b.runXCopy(root)
	}
	if err := b.prepare(root); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	rep := b.runAll()
	rep.print(os.Stdout, b.cfg)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 130
	case len(b.failures) > 0:
		fmt.Fprintf(os.Stderr, "bench: %d copies failed or were wrong:\n  %s\n", len(b.failures), strings.Join(b.failures, "\n  "))
		return 1
	}
	return 0
}

// prepare makes the scratch directory and builds blkcopy once.
func (b *bench) prepare(root string) error {
	if b.cfg.dir == "" {
		b.cfg.dir = filepath.Join(root, "bench", "results")
	}
	if err := os.MkdirAll(b.cfg.dir, 0o755); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(b.cfg.dir, "scratch-")
	if err != nil {
		return err
	}
	b.cl.add(func() { os.RemoveAll(scratch) })
	b.cfg.dir = scratch
	if b.cfg.blkcopy != "" {
		return nil
	}
	bin := filepath.Join(scratch, "blkcopy")
	cmd := exec.CommandContext(b.ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}
	b.cfg.blkcopy = bin
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run from inside the blkcopy module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

// runAll runs the chosen scenarios in order; each cleans up after itself
// so /dev/shm and the disk hold one scenario's files at a time.
func (b *bench) runAll() *report {
	rep := &report{}
	cfg := b.cfg
	devs := []struct{ key, label, dir string }{
		{"A", "A: loop on /dev/shm", "/dev/shm"},
		{"B", "B: loop on disk", cfg.dir},
	}
	for _, d := range devs {
		if !cfg.scenarios[d.key] || b.ctx.Err() != nil {
			continue
		}
		scenario := &cleanups{}
		dir, err := os.MkdirTemp(d.dir, "blkcopy-bench-")
		if err != nil {
			b.fail("%s: %v", d.label, err)
			continue
		}
		scenario.add(func() { os.RemoveAll(dir) })
		b.logf("%s: setting up %s source and destination in %s", d.label, size.Format(cfg.size), dir)
		p, err := setupLoopPair(b.ctx, scenario, dir, d.key, cfg.size)
		if err != nil {
			b.fail("%s: setup: %v", d.label, err)
			scenario.run()
			continue
		}
		b.logf("%s: %s", d.label, p.note)
		// Pick fio's best setup once, then run it in every round next to
		// the copies: this machine is shared, and a ceiling measured at
		// another moment than the copies was off by 2x either way.
		b.logf("%s: choosing the fio setup", d.label)
		tools := deviceTools(cfg.blkcopy)
		ceil, fioErr := measureFio(b.ctx, p, cfg.size)
		if fioErr == nil {
			tools = append(tools, tool{name: "fio", measure: func(n int64) (sample, error) {
				v, err := fioOnce(b.ctx, p, n, ceil.setup)
				return sample{secs: float64(n) / (1 << 20) / v}, err
			}})
		}
		res := b.runDevices(d.label, p, cfg.size, tools, cfg.warmup, cfg.runs)
		res.fio, res.fioErr = ceil, fioErr
		rep.devices = append(rep.devices, res)
		scenario.run()
	}
	if cfg.scenarios["file"] && b.ctx.Err() == nil {
		b.logf("file: copying a %s file in %s (caches dropped before every run)", size.Format(cfg.fileSize), cfg.dir)
		rep.files = append(rep.files, b.runFiles("ext4 file", cfg.dir, cfg.fileSize, fileTools(cfg.blkcopy), cfg.warmup, cfg.runs))
	}
	if cfg.scenarios["xfs"] && b.ctx.Err() == nil {
		if _, err := exec.LookPath("mkfs.xfs"); err != nil {
			rep.notes = append(rep.notes, "XFS reflink scenario skipped: mkfs.xfs not found (apt-get install xfsprogs)")
		} else {
			b.xfs(rep)
		}
	}
	if cfg.scenarios["sparse"] && b.ctx.Err() == nil {
		if _, err := exec.LookPath("qemu-img"); err != nil {
			rep.notes = append(rep.notes, "sparse scenario skipped: qemu-img not found (apt-get install qemu-utils)")
		} else {
			b.sparseScenarios(rep)
		}
	}
	for _, n := range cfg.rssSizes {
		if b.ctx.Err() != nil {
			break
		}
		b.rss(rep, n)
	}
	return rep
}

func (b *bench) xfs(rep *report) {
	scenario := &cleanups{}
	defer scenario.run()
	mnt, err := setupXFS(b.ctx, scenario, b.cfg.dir, b.cfg.fileSize)
	if err != nil {
		b.fail("xfs: setup: %v", err)
		return
	}
	b.logf("xfs: copying a %s file on XFS with reflink at %s (caches dropped before every run)", size.Format(b.cfg.fileSize), mnt)
	rep.files = append(rep.files, b.runFiles("XFS file (reflink)", mnt, b.cfg.fileSize, fileTools(b.cfg.blkcopy), b.cfg.warmup, b.cfg.runs))
}

// rss copies n bytes once between sparse loop devices on disk: the data
// does not matter for memory, and sparse files make 8 GiB cheap to set up.
func (b *bench) rss(rep *report, n int64) {
	scenario := &cleanups{}
	defer scenario.run()
	label := "RSS " + size.Format(n)
	var devs []string
	for _, name := range []string{"rss-src.img", "rss-dst.img"} {
		path := filepath.Join(b.cfg.dir, name)
		scenario.add(func() { os.Remove(path) })
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			b.fail("%s: %v", label, err)
			return
		}
		if err := os.Truncate(path, n); err != nil {
			b.fail("%s: %v", label, err)
			return
		}
		dev, err := attachLoop(b.ctx, scenario, path, true)
		if err != nil {
			b.fail("%s: %v", label, err)
			return
		}
		devs = append(devs, dev)
	}
	b.logf("%s: blkcopy once between sparse loop devices %s -> %s", label, devs[0], devs[1])
	p := devicePair{src: devs[0], dst: devs[1]}
	res := b.runDevices(label, p, n, deviceTools(b.cfg.blkcopy)[:1], 0, 1)
	rep.rss = append(rep.rss, res)
}
