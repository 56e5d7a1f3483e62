package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// cleanups undoes setup in reverse order: unmount, then detach the loop
// devices this run attached (and only those), then remove the files.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

const fillBlock = 4 << 20

// randomFile writes size bytes of random data to path and drops them from
// the page cache, so the copies start from the device.
func randomFile(path string, size int64, seed byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{seed, 'b', 'l', 'k'})
	buf := make([]byte, fillBlock)
	for off := int64(0); off < size; off += fillBlock {
		b := buf[:min(fillBlock, size-off)]
		_, _ = rng.Read(b)
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// allocatedFile makes a file of size bytes with its blocks allocated, so
// the first copy into it does not pay for allocation the later ones skip.
func allocatedFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}

// attachLoop attaches file to a free loop device and registers its detach.
func attachLoop(ctx context.Context, cl *cleanups, file string, directIO bool) (string, error) {
	args := []string{"losetup", "-f", "--show"}
	if directIO {
		args = append(args, "--direct-io=on")
	}
	out, err := run(ctx, append(args, file)...)
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(out)
	cl.add(func() {
		// Not ctx: cleanup must run after an interrupt too.
		if _, err := run(context.Background(), "losetup", "-d", dev); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	})
	return dev, nil
}

// loopDirectIO reads back whether the loop driver really does direct I/O on
// its backing file (it silently falls back when the file system refuses).
func loopDirectIO(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/dio"))
	if err != nil {
		return "unknown"
	}
	if strings.TrimSpace(string(b)) == "1" {
		return "on"
	}
	return "off"
}

// devicePair is a scenario's source and destination.
type devicePair struct {
	src, dst string
	note     string
}

// setupLoopPair makes a random source and an allocated destination of size
// bytes in dir and attaches both with direct I/O.
func setupLoopPair(ctx context.Context, cl *cleanups, dir, label string, size int64) (devicePair, error) {
	srcFile := filepath.Join(dir, label+"-src.img")
	dstFile := filepath.Join(dir, label+"-dst.img")
	cl.add(func() { os.Remove(srcFile); os.Remove(dstFile) })
	if err := randomFile(srcFile, size, 1); err != nil {
		return devicePair{}, err
	}
	if err := allocatedFile(dstFile, size); err != nil {
		return devicePair{}, err
	}
	src, err := attachLoop(ctx, cl, srcFile, true)
	if err != nil {
		return devicePair{}, err
	}
	dst, err := attachLoop(ctx, cl, dstFile, true)
	if err != nil {
		return devicePair{}, err
	}
	note := fmt.Sprintf("%s (%s, loop dio=%s) -> %s (%s, loop dio=%s)",
		src, srcFile, loopDirectIO(src), dst, dstFile, loopDirectIO(dst))
	return devicePair{src: src, dst: dst, note: note}, nil
}

// stamp overwrites 64 scattered 4 KiB blocks of dev's first n bytes (the
// first and last block among them) with fresh random data, so a tool that
// copies nothing or stops early leaves blocks cmp will catch.
func stamp(dev string, n int64, round int) error {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const blk = 4096
	buf := alignedBuffer(blk)
	rng := rand.NewChaCha8([32]byte{byte(round), byte(round >> 8), 's'})
	blocks := n / blk
	const stamps = 64
	for i := int64(0); i < stamps; i++ {
		off := (blocks - 1) * i / (stamps - 1) * blk
		_, _ = rng.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("stamp %s at offset %d: %w", dev, off, err)
		}
	}
	return f.Sync()
}

// dropCaches writes back dirty pages and empties the page cache, so every
// file copy starts from the disk alike.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
