package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func fileTools(blkcopy string) []tool {
	return []tool{
		// Default mode: copy_file_range on regular files.
		{name: "blkcopy", argv: func(src, dst string, n int64) []string {
			return []string{blkcopy, src, dst, "--progress", "never", "--quiet"}
		}},
		// coreutils cp tries a reflink, then copy_file_range.
		{name: "cp", argv: func(src, dst string, n int64) []string {
			return []string{"cp", src, dst}
		}},
		// Plain read/write.
		{name: "cp --reflink=never", argv: func(src, dst string, n int64) []string {
			return []string{"cp", "--reflink=never", src, dst}
		}},
	}
}

// fileResult is what one regular-file scenario measured.
type fileResult struct {
	label  string
	n      int64
	series []series // in fileTools order; blkcopy first
}

// runFiles copies a file of n random bytes in dir with every tool, round
// robin. Each run starts with no destination file and an empty page cache,
// and is timed until the destination is on disk: the bench fsyncs it after
// the tool exits (cp does not sync; a tool that did pays little again).
func (b *bench) runFiles(label, dir string, n int64, tools []tool, warmup, runs int) fileResult {
	res := fileResult{label: label, n: n}
	for _, t := range tools {
		res.series = append(res.series, series{tool: t.name})
	}
	src, dst := filepath.Join(dir, "file-src"), filepath.Join(dir, "file-dst")
	b.cl.add(func() { os.Remove(src); os.Remove(dst) })
	if err := randomFile(src, n, 2); err != nil {
		b.fail("%s: %v", label, err)
		return res
	}
	for round := 0; round < warmup+runs && b.ctx.Err() == nil; round++ {
		for i, t := range tools {
			if b.ctx.Err() != nil {
				break
			}
			s, ok := b.fileRun(src, dst, n, t, round)
			if round >= warmup {
				s.ok = ok
				res.series[i].samples = append(res.series[i].samples, s)
			}
		}
	}
	return res
}

func (b *bench) fileRun(src, dst string, n int64, t tool, round int) (sample, bool) {
	if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	if err := dropCaches(); err != nil {
		b.fail("drop caches: %v", err)
		return sample{}, false
	}
	argv := t.argv(src, dst, n)
	// Dropping the caches also dropped the programs: load the tool, its
	// libraries and time(1) again, or a reflink copy of milliseconds would
	// be timed as the seconds of reading a large binary from disk.
	if _, err := runTimed(b.ctx, []string{argv[0], "--help"}); err != nil {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	s, err := runTimed(b.ctx, argv)
	if err != nil {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	synced, err := syncFile(dst)
	if err != nil {
		b.fail("%s: %v", t.name, err)
		return sample{}, false
	}
	s.secs += synced
	if err := sameFile(b.ctx, src, dst, n); err != nil {
		b.fail("%s copied wrong data: %v", t.name, err)
		return s, false
	}
	b.logf("  %-18s round %d: %8.3fs (fsync after exit %.3fs)  cpu %.2fs  rss %d KiB  (cmp ok)",
		t.name, round, s.secs, synced, s.cpu, s.maxRSSKiB)
	return s, true
}

// syncFile fsyncs path and returns how long that took.
func syncFile(path string) (float64, error) {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	return time.Since(start).Seconds(), f.Close()
}

// sameFile checks the destination has exactly the source's size and bytes.
func sameFile(ctx context.Context, src, dst string, n int64) error {
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if fi.Size() != n {
		return fmt.Errorf("%s is %d bytes, want %d", dst, fi.Size(), n)
	}
	return sameRange(ctx, src, dst, n)
}

// setupXFS makes an XFS file system with reflink on an image file in dir,
// big enough for a source and a full copy, and mounts it through a loop
// device this run attaches (and detaches).
func setupXFS(ctx context.Context, cl *cleanups, dir string, n int64) (string, error) {
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		return "", err
	}
	cl.add(func() { os.Remove(img) })
	err = f.Truncate(2*n + 1<<30)
	f.Close()
	if err != nil {
		return "", err
	}
	if _, err := run(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", img); err != nil {
		return "", err
	}
	dev, err := attachLoop(ctx, cl, img, false)
	if err != nil {
		return "", err
	}
	mnt, err := os.MkdirTemp(dir, "xfs-")
	if err != nil {
		return "", err
	}
	cl.add(func() { os.Remove(mnt) })
	if _, err := run(ctx, "mount", dev, mnt); err != nil {
		return "", err
	}
	cl.add(func() {
		if _, err := run(context.Background(), "umount", mnt); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	})
	return mnt, nil
}
