package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/blkcopy/blkcopy/internal/copier"
	"github.com/blkcopy/blkcopy/internal/size"
	"github.com/blkcopy/blkcopy/internal/sparse"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// copyOptions is filled by flag parsing; runCopy does the rest, so tests
// can call it without cobra.
type copyOptions struct {
	src, dst                     string
	offset, srcOffset, dstOffset size.Value
	length                       size.Value
	chunk                        size.Value
	mode                         string
	sparse                       string
	offloadPath                  string
	progress                     string
	verify, quiet, json          bool
	noSync, dryRun               bool
	sysroot                      string
	state                        string

	prog string // the program name as invoked, for the resume command
	// isTerminal reports whether progress may draw on stderr.
	isTerminal func() bool
}

func newCmdCopy(s *Streams) *cobra.Command {
	o := &copyOptions{prog: progName(), isTerminal: func() bool { return stderrIsTerminal(s) }}
	c := &cobra.Command{
		Use:   "blkcopy SRC DST [flags]",
		Short: "Copy a byte range between block devices or files, offloaded to the device when it can",
		Long: `blkcopy copies LEN bytes from SRC at the source offset to DST at the
destination offset. SRC and DST are block devices or regular files.

When both ends are on the same disk and the kernel exposes copy offload
(/sys/block/DISK/queue/copy_max_bytes > 0), the copy is sent to the device
with copy_file_range(2) on O_DIRECT descriptors, in chunks no larger than
copy_max_bytes; the first offloaded chunk is read back and compared, because
a successful return does not prove the device copied. Otherwise blkcopy
sends the storage's own copy commands where it has them: NVMe Copy within
an NVMe namespace, SCSI EXTENDED COPY (LID1) within a SCSI LU or between
two LUs of one array or Linux SCSI target (LIO) when the LUs announce
third-party copy (INQUIRY 3PC) and have an NAA designator. Otherwise blkcopy
copies through the host with overlapped O_DIRECT reads and writes ("onload").
--mode onload forbids every offload; --offload-path names the only one
allowed.
Between two regular files it uses copy_file_range (reflink where the file
system can).

Safety: nothing outside [DST offset, DST offset+LEN) is written; a range past
the end of the source, or of a block-device destination, is refused before
any write; a destination that is mounted or held (dm, md) or read-only is
refused. Overlapping ranges on one device copy as if through a temporary
buffer. A regular-file destination is created if missing and may grow.

Holes and zeroes (--sparse, cp's words): with auto (the default) the holes
of a regular-file source are found with SEEK_DATA/SEEK_HOLE and never read,
and blocks of zeroes in what the host reads (4 KiB, or the destination's
block if larger) are not written as data. The destination still reads back
as the source range, whatever it held before: on a regular file a zero run
becomes nothing where the file is new or being extended and a punched hole
(fallocate PUNCH_HOLE, whole file-system blocks only; zero bytes at partial
blocks, and everywhere if the file system cannot punch) where it held data;
on a block device it becomes one write-zeroes request (BLKZEROOUT: NVMe
Write Zeroes, SCSI WRITE SAME, a loop device's fallocate; the kernel writes
zero pages where the device has none); auto times it against a plain write
of zeroes on the first run of 2 MiB or more and keeps the faster, always
uses it regardless. Between regular files the data
extents go through copy_file_range; copies a device offloads stay
offloaded (nothing is read to look for zeroes). always also reads regular
files' data to find zero blocks in it instead of using copy_file_range
(like cp --sparse=always). never writes every byte as data, for
destinations whose blocks must be allocated.

Sizes: ` + size.Help + `.

Crash-safe copies: with --state FILE, blkcopy records in FILE what the copy
is (both ends: a block device's stable ID, or device number, and size; a
file's inode; offsets, length, direction) and how much of it is durable,
advancing that only after an
fdatasync of the destination, every few seconds or few hundred MiB. If the
copy is killed (kill -9, a crash, a power cut), running the same command
again resumes at the recorded point ("resumed from byte N"); a FILE that
records another copy is refused (exit 1) before anything is written. When
the copy finishes, FILE is removed: running the command again then copies
again, from the start. An overlapping copy (data moved within one device)
records its progress at least once per distance between source and
destination, which is what makes its resumption safe, and when it finishes
keeps FILE, marked done: running it again does nothing and exits 0, since
moving the data twice would not give the same result; remove FILE to move
again.

Exit status: 0 done, 1 error, 2 usage error, 3 offload required (--mode
offload) but unavailable, 4 --verify found a difference, 130 interrupted.`,
		Example: `  # Copy the first 4 GiB of one partition onto another, offloaded if possible
  blkcopy /dev/nvme0n1p2 /dev/nvme0n1p3 --len 4G

  # Copy 1 GiB at offset 1 GiB within a disk, then read both ranges back
  blkcopy /dev/nvme0n1 /dev/nvme0n1 --src-offset 1G --dst-offset 8G --len 1G --verify

  # Show the plan without writing anything
  blkcopy /dev/sda /dev/sdb --len 10G --dry-run

  # In a backup script: machine-readable result, no progress, exit status
  if out=$(blkcopy /dev/vg/snap /backup/snap.img --json); then
      echo "$out" | jq '.bytes, .offloaded_bytes, .bytes_per_second'
  fi

  # A long copy that survives kill -9, a crash or a power cut: the same
  # command, run again, resumes where the last one stood
  blkcopy /dev/vg/snap /backup/snap.img --state /var/lib/backup/snap.state --json`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("missing SRC and DST (see 'blkcopy --help')")
			}
			return exactArgs(2, "SRC and DST")(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.src, o.dst = args[0], args[1]
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				// After the first signal, a second one kills at once, as
				// the user expects when a flush takes long.
				<-ctx.Done()
				stop()
			}()
			return runCopy(ctx, o, s)
		},
	}
	f := c.Flags()
	f.Var(&o.offset, "offset", "source and destination offset (size)")
	f.Var(&o.srcOffset, "src-offset", "source offset (size); excludes --offset")
	f.Var(&o.dstOffset, "dst-offset", "destination offset (size); excludes --offset")
	f.Var(&o.length, "len", "bytes to copy (size); default: to the end of the source, bounded by a block-device destination")
	f.StringVar(&o.mode, "mode", "auto", "auto: offload where possible, else copy through the host; offload: fail with exit 3 rather than copy through the host; onload: never offload")
	f.StringVar(&o.sparse, "sparse", "auto", "holes and zeroes: auto (skip a file source's holes, make zero blocks holes or write-zeroes, keep offloaded copies offloaded), always (also read regular files' data to find zero blocks instead of copy_file_range), never (write every byte as data)")
	f.StringVar(&o.offloadPath, "offload-path", "auto", "which offload path may run: auto (the kernel's copy_file_range offload where the disk reports copy limits, else NVMe Copy by passthrough, else SCSI EXTENDED COPY), copy_file_range (or kernel), nvme, scsi-xcopy")
	f.Var(&o.chunk, "chunk", "I/O size of the copy through the host (size, multiple of 4096); default 8 MiB, in whole units of the devices' optimal_io_size")
	f.BoolVar(&o.verify, "verify", false, "read both ranges back after the copy and compare; exit 4 on a difference")
	f.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (only on a terminal), always, never")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing on success")
	f.BoolVar(&o.json, "json", false, "print one JSON object with the result on stdout (failures too)")
	f.BoolVar(&o.noSync, "no-sync", false, "skip the final fdatasync of the destination")
	f.StringVar(&o.state, "state", "", "record the copy's durable progress in this file and resume from it when run again (see above); removed when the copy finishes (kept, marked done, for an overlapping copy)")
	f.BoolVarP(&o.dryRun, "dry-run", "n", false, "print the plan (chunks, method, why offload is or is not used) and write nothing")
	f.StringVar(&o.sysroot, "sysroot", "/", "read sysfs under this directory")
	_ = f.MarkHidden("sysroot")
	return c
}

func progName() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "blkcopy"
}

// request checks the flags that need no device and builds the request.
func (o *copyOptions) request() (copier.Request, error) {
	req := copier.Request{Src: o.src, Dst: o.dst, Verify: o.verify, NoSync: o.noSync, DryRun: o.dryRun, State: o.state, Sys: sysfs.Sys{Root: o.sysroot}}
	var err error
	if req.Mode, err = copier.ParseMode(o.mode); err != nil {
		return req, &usageError{err}
	}
	if req.Sparse, err = sparse.ParseMode(o.sparse); err != nil {
		return req, &usageError{err}
	}
	switch o.offloadPath {
	case "auto":
	case "kernel":
		req.OffloadPath = "copy_file_range"
	default:
		if !slices.Contains(copier.PathNames(), o.offloadPath) {
			return req, usageErrorf("invalid --offload-path %q: want auto, %s or kernel", o.offloadPath, strings.Join(copier.PathNames(), ", "))
		}
		req.OffloadPath = o.offloadPath
	}
	switch o.progress {
	case "auto", "always", "never":
	default:
		return req, usageErrorf("invalid --progress %q: want auto, always or never", o.progress)
	}
	if o.offset.IsSet && (o.srcOffset.IsSet || o.dstOffset.IsSet) {
		return req, usageErrorf("--offset sets both offsets: give it alone, or --src-offset and --dst-offset")
	}
	if o.offset.IsSet {
		req.SrcOff, req.DstOff = o.offset.N, o.offset.N
	} else {
		req.SrcOff, req.DstOff = o.srcOffset.N, o.dstOffset.N
	}
	req.Len, req.LenSet = o.length.N, o.length.IsSet
	const maxOff = 1<<63 - 1
	if req.LenSet && (req.SrcOff > maxOff-req.Len || req.DstOff > maxOff-req.Len) {
		return req, usageErrorf("offset + --len overflows a 64-bit file offset")
	}
	if o.state != "" && o.noSync {
		return req, usageErrorf("--state records only what an fdatasync made durable: it cannot go with --no-sync")
	}
	if o.chunk.IsSet {
		if o.chunk.N < 4096 || o.chunk.N%4096 != 0 || o.chunk.N > 1<<30 {
			return req, usageErrorf("invalid --chunk %d: want a multiple of 4096 between 4K and 1G", o.chunk.N)
		}
		req.BufSize = o.chunk.N
	}
	return req, nil
}

func runCopy(ctx context.Context, o *copyOptions, s *Streams) error {
	req, err := o.request()
	if err != nil {
		return err
	}
	showProgress := !o.dryRun && (o.progress == "always" ||
		o.progress == "auto" && !o.json && !o.quiet && o.isTerminal())
	var bar *progressBar
	if showProgress {
		bar = newProgressBar(s.Err)
		req.Start, req.Progress = bar.start, bar.add
	}
	if !o.quiet {
		// --quiet promises silence on success; the JSON and the text
		// summary carry the same reason.
		req.Warn = func(msg string) {
			if bar != nil {
				bar.clear()
			}
			fmt.Fprintf(s.Err, "blkcopy: warning: %s\n", msg)
		}
	}
	sum, err := copier.Run(ctx, req)
	if bar != nil {
		bar.finish(err == nil)
	}
	var ie *copier.InterruptedError
	if errors.As(err, &ie) {
		fmt.Fprintf(s.Err, "blkcopy: interrupted after %d of %d bytes; the destination range up to there is %s\n", ie.Done, ie.Total, map[bool]string{true: "synced", false: "written (not synced: --no-sync)"}[sum.Synced])
		if o.state != "" {
			fmt.Fprintf(s.Err, "blkcopy: progress recorded in state file %s\n", o.state)
		}
		fmt.Fprintf(s.Err, "blkcopy: resume with: %s\n", o.resumeCommand(ie))
		if o.json {
			writeJSON(s, struct {
				*copier.Summary
				Interrupted   bool   `json:"interrupted"`
				DoneBytes     int64  `json:"done_bytes"`
				ResumeCommand string `json:"resume_command"`
				ExitCode      int    `json:"exit_code"`
			}{sum, true, ie.Done, o.resumeCommand(ie), ExitInterrupted})
		}
		return &exitError{ExitInterrupted, fmt.Errorf("%w: %w", errAlreadyReported, err)}
	}
	var me *copier.MismatchError
	switch {
	case errors.As(err, &me):
		err = &exitError{ExitMismatch, err}
	case errors.Is(err, copier.ErrOffloadUnavailable):
		err = &exitError{ExitNoOffload, err}
	}
	if err != nil && o.json && sum != nil && sum.Chunks > 0 {
		// A failure during the copy: the object carries what was done
		// so far (bytes, offload requests) next to the error.
		code := exitCode(err)
		writeJSON(s, struct {
			*copier.Summary
			Error    string `json:"error"`
			ExitCode int    `json:"exit_code"`
		}{sum, oneLine(err.Error()), code})
		fmt.Fprintf(s.Err, "blkcopy: %s\n", oneLine(err.Error()))
		return &exitError{code, fmt.Errorf("%w: %w", errAlreadyReported, err)}
	}
	if err != nil {
		return err
	}
	switch {
	case o.json:
		writeJSON(s, sum)
	case o.dryRun:
		printPlan(s, sum)
	case !o.quiet:
		printSummary(s, sum)
	}
	return nil
}

func writeJSON(s *Streams, v any) {
	enc := json.NewEncoder(s.Out)
	_ = enc.Encode(v)
}

func printSummary(s *Streams, sum *copier.Summary) {
	if sum.Chunks == 0 { // nothing was copied; the note says why
		fmt.Fprintf(s.Out, "blkcopy: %s\n", sum.Note)
		return
	}
	line := fmt.Sprintf("copied %s (%d bytes) in %s, %s/s: %s offloaded, %s through the host",
		size.Format(sum.Bytes), sum.Bytes, sum.Duration.Round(time.Millisecond), size.Format(sum.BytesPerSecond),
		size.Format(sum.OffloadedBytes), size.Format(sum.OnloadedBytes))
	if sum.OffloadedBytes > 0 {
		line += fmt.Sprintf(" (%s, %d requests)", sum.OffloadPath, sum.OffloadRequests)
	}
	if sum.SparseBytes > 0 || sum.ZeroBytes > 0 {
		line += fmt.Sprintf("; %s of holes not read, %s of zeroes not written as data", size.Format(sum.SparseBytes), size.Format(sum.ZeroBytes))
	}
	if sum.Verified {
		line += ", verified"
	}
	fmt.Fprintln(s.Out, line)
	if sum.OffloadDisabledReason != "" {
		fmt.Fprintf(s.Out, "offload disabled: %s\n", sum.OffloadDisabledReason)
	} else if sum.FallbackReason != "" && sum.OnloadedBytes > 0 {
		fmt.Fprintf(s.Out, "not offloaded: %s\n", sum.FallbackReason)
	}
	if sum.ResumedFrom > 0 {
		fmt.Fprintf(s.Out, "resumed from byte %d of %d (the state file's record)\n", sum.ResumedFrom, sum.ResumedFrom+sum.Bytes)
	}
	if sum.Note != "" {
		fmt.Fprintf(s.Out, "note: %s\n", sum.Note)
	}
}

func printPlan(s *Streams, sum *copier.Summary) {
	if sum.Chunks == 0 {
		fmt.Fprintf(s.Out, "dry run: %s\n", sum.Note)
		return
	}
	dir := "forward"
	if sum.Backward {
		dir = "backward (overlapping ranges, destination after source)"
	}
	fmt.Fprintf(s.Out, "dry run: copy %s (%d bytes) from %s at offset %d to %s at offset %d\n",
		size.Format(sum.Bytes), sum.Bytes, sum.Src, sum.SrcOffset, sum.Dst, sum.DstOffset)
	if sum.ResumedFrom > 0 {
		fmt.Fprintf(s.Out, "  would resume from byte %d of %d (the state file's record): the rest is planned\n", sum.ResumedFrom, sum.ResumedFrom+sum.Bytes)
	}
	fmt.Fprintf(s.Out, "  chunks:  %d, %s\n", sum.Chunks, dir)
	fmt.Fprintf(s.Out, "  offload: %s (%d bytes)\n", size.Format(sum.PlannedOffloadBytes), sum.PlannedOffloadBytes)
	fmt.Fprintf(s.Out, "  onload:  %s (%d bytes), I/O size %s\n", size.Format(sum.PlannedOnloadBytes), sum.PlannedOnloadBytes, size.Format(sum.BufSize))
	switch {
	case sum.FallbackReason != "":
		fmt.Fprintf(s.Out, "  why not offload: %s\n", sum.FallbackReason)
	default:
		fmt.Fprintf(s.Out, "  offload: used for every chunk (the first is read back and compared)\n")
	}
	fmt.Fprintln(s.Out, "nothing was written")
}

// resumeCommand is the exact command line that finishes an interrupted
// copy: the same request with the offsets and length of what is left; with
// --state, the whole request again, since the state file says what is left.
func (o *copyOptions) resumeCommand(ie *copier.InterruptedError) string {
	args := []string{o.prog, o.src, o.dst,
		"--src-offset", strconv.FormatInt(ie.SrcOff, 10),
		"--dst-offset", strconv.FormatInt(ie.DstOff, 10),
		"--len", strconv.FormatInt(ie.Len, 10)}
	if o.state != "" {
		args = []string{o.prog, o.src, o.dst,
			"--src-offset", strconv.FormatInt(ie.ReqSrcOff, 10),
			"--dst-offset", strconv.FormatInt(ie.ReqDstOff, 10),
			"--len", strconv.FormatInt(ie.Total, 10),
			"--state", o.state}
	}
	if o.mode != "auto" {
		args = append(args, "--mode", o.mode)
	}
	if o.sparse != "auto" && o.sparse != "" {
		args = append(args, "--sparse", o.sparse)
	}
	if o.offloadPath != "auto" && o.offloadPath != "" {
		args = append(args, "--offload-path", o.offloadPath)
	}
	if o.chunk.IsSet {
		args = append(args, "--chunk", strconv.FormatInt(o.chunk.N, 10))
	}
	for _, b := range []struct {
		on   bool
		flag string
	}{{o.verify, "--verify"}, {o.noSync, "--no-sync"}, {o.quiet, "--quiet"}, {o.json, "--json"}} {
		if b.on {
			args = append(args, b.flag)
		}
	}
	if o.progress != "auto" {
		args = append(args, "--progress", o.progress)
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

// shellQuote quotes a word for POSIX sh only when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
