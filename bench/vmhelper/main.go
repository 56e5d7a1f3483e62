// Command vmhelper is the offload benchmark's tool inside the VM (go run
// ./bench --offload builds it with CGO_ENABLED=0; the guest has no libc):
//
//	vmhelper cfr DEV SRC_OFF DST_OFF LEN
//	    one copy_file_range call of LEN bytes within DEV, both ends opened
//	    O_DIRECT, calling again only on a short return; then fdatasync.
//	    The kernel's best case: it splits the call into copy_max_bytes
//	    pieces and submits them at once. Prints "calls=N".
//	vmhelper sum DEV OFF LEN
//	    md5 of the range, read with O_DIRECT (busybox md5sum is several
//	    times slower under TCG).
//	vmhelper zero DEV OFF LEN
//	    BLKZEROOUT: the destination range reads zeros before each copy, so a
//	    copy that does nothing cannot pass on the previous round's data.
//	vmhelper time -o FILE -stat DISK -- ARGV...
//	    runs ARGV (stdout and stderr passed through) and writes to FILE
//	    "secs=S rd_ios=N rd_sectors=N wr_ios=N wr_sectors=N": wall time with
//	    nanosecond resolution (busybox has no date +%N) and the deltas of
//	    /sys/block/DISK/stat. Exits with ARGV's status.
package main

import (
	"crypto/md5"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "cfr":
		err = cfr(os.Args[2:])
	case "zero":
		err = zero(os.Args[2:])
	case "sum":
		err = sum(os.Args[2:])
	case "time":
		os.Exit(timeCmd(os.Args[2:]))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: vmhelper cfr DEV SRC_OFF DST_OFF LEN | sum DEV OFF LEN | zero DEV OFF LEN | time -o FILE -stat DISK -- ARGV...")
	os.Exit(2)
}

func ints(args []string) ([]int64, error) {
	var v []int64
	for _, a := range args {
		n, err := strconv.ParseInt(a, 0, 64)
		if err != nil {
			return nil, err
		}
		v = append(v, n)
	}
	return v, nil
}

func cfr(args []string) error {
	if len(args) != 4 {
		usage()
	}
	v, err := ints(args[1:])
	if err != nil {
		return err
	}
	srcOff, dstOff, n := v[0], v[1], v[2]
	src, err := os.OpenFile(args[0], os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(args[0], os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	calls := 0
	for done := int64(0); done < n; {
		calls++
		m, err := unix.CopyFileRange(int(src.Fd()), &srcOff, int(dst.Fd()), &dstOff, int(n-done), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy_file_range %s at offset %d: %w", args[0], srcOff, err)
		}
		if m == 0 {
			return fmt.Errorf("copy_file_range %s at offset %d: returned 0 with %d bytes left", args[0], srcOff, n-done)
		}
		done += int64(m)
	}
	if err := unix.Fdatasync(int(dst.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", args[0], err)
	}
	fmt.Printf("calls=%d\n", calls)
	return nil
}

// sum prints the md5 of a range of DEV, read with O_DIRECT in 4 MiB
// blocks, the next block read while the last one is hashed.
func sum(args []string) error {
	if len(args) != 3 {
		usage()
	}
	v, err := ints(args[1:])
	if err != nil {
		return err
	}
	off, n := v[0], v[1]
	f, err := os.OpenFile(args[0], os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const block = 4 << 20
	type chunk struct {
		buf []byte
		err error
	}
	bufs := make(chan []byte, 2)
	for range 2 {
		bufs <- alignedBuffer(block)
	}
	chunks := make(chan chunk, 2)
	go func() {
		defer close(chunks)
		for pos := int64(0); pos < n; pos += block {
			b := (<-bufs)[:min(block, n-pos)]
			_, err := f.ReadAt(b, off+pos)
			chunks <- chunk{b, err}
			if err != nil {
				return
			}
		}
	}()
	h := md5.New()
	for c := range chunks {
		if c.err != nil {
			return fmt.Errorf("read %s: %w", args[0], c.err)
		}
		h.Write(c.buf)
		bufs <- c.buf[:cap(c.buf)]
	}
	fmt.Printf("%x\n", h.Sum(nil))
	return nil
}

func alignedBuffer(n int) []byte {
	const align = 4096
	raw := make([]byte, n+align)
	shift := (align - int(uintptr(unsafe.Pointer(&raw[0]))%align)) % align
	return raw[shift : shift+n : shift+n]
}

func zero(args []string) error {
	if len(args) != 3 {
		usage()
	}
	v, err := ints(args[1:])
	if err != nil {
		return err
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	r := [2]uint64{uint64(v[0]), uint64(v[1])}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return fmt.Errorf("BLKZEROOUT %s %d+%d: %w", args[0], v[0], v[1], errno)
	}
	return nil
}

// diskStat is /sys/block/DISK/stat's read and write counters
// (Documentation/block/stat.rst: fields 1, 3, 5, 7).
type diskStat struct{ rdIOs, rdSectors, wrIOs, wrSectors int64 }

func readStat(disk string) (diskStat, error) {
	data, err := os.ReadFile("/sys/block/" + disk + "/stat")
	if err != nil {
		return diskStat{}, err
	}
	f := strings.Fields(string(data))
	if len(f) < 7 {
		return diskStat{}, fmt.Errorf("/sys/block/%s/stat: %q", disk, data)
	}
	v, err := ints([]string{f[0], f[2], f[4], f[6]})
	if err != nil {
		return diskStat{}, err
	}
	return diskStat{v[0], v[1], v[2], v[3]}, nil
}

func timeCmd(args []string) int {
	var out, disk string
	for len(args) > 0 && args[0] != "--" {
		if len(args) < 2 {
			usage()
		}
		switch args[0] {
		case "-o":
			out = args[1]
		case "-stat":
			disk = args[1]
		default:
			usage()
		}
		args = args[2:]
	}
	if len(args) < 2 || out == "" || disk == "" {
		usage()
	}
	argv := args[1:]
	before, err := readStat(disk)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		return 1
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	runErr := cmd.Run()
	secs := time.Since(start).Seconds()
	after, err := readStat(disk)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		return 1
	}
	line := fmt.Sprintf("secs=%.6f rd_ios=%d rd_sectors=%d wr_ios=%d wr_sectors=%d\n", secs,
		after.rdIOs-before.rdIOs, after.rdSectors-before.rdSectors, after.wrIOs-before.wrIOs, after.wrSectors-before.wrSectors)
	if err := os.WriteFile(out, []byte(line), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		return 1
	}
	var exit *exec.ExitError
	switch {
	case errors.As(runErr, &exit):
		return exit.ExitCode()
	case runErr != nil:
		fmt.Fprintln(os.Stderr, "vmhelper:", runErr)
		return 127
	}
	return 0
}
