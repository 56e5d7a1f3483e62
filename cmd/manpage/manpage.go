// Package manpage generates blkcopy's man pages from its cobra commands
// (go run ./tools/genman man). It is apart from cmd so that the blkcopy
// binary does not link cobra's doc generator and what it pulls in (a
// markdown parser, YAML): their package initialisation ran on every start,
// which under QEMU's TCG cost tens of milliseconds per copy.
package manpage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/blkcopy/blkcopy/cmd"
)

// manDate is fixed so regenerating the pages is reproducible and the
// "man pages are current" test compares content, not today's date.
var manDate = time.Date(2026, time.November, 26, 0, 0, 0, 0, time.UTC)

// manSections are the sections cobra's generator has no field for, per
// command path, in roff.
var manSections = map[string]string{
	"blkcopy": `.SH EXIT STATUS
.TP
.B 0
The copy finished (or there was nothing to do).
.TP
.B 1
A runtime error: a device could not be opened, read or written; the range is past the end of the source or of a block-device destination; the destination is mounted, held or read-only; a \-\-state file records another copy, or is not a complete record (nothing is written). The message names the path, the offset and the operation.
.TP
.B 2
A usage error: bad flags, sizes or offsets.
.TP
.B 3
.B \-\-mode offload
was requested but the copy cannot be offloaded (nothing is written), or offload was found not to work during the copy.
.TP
.B 4
.B \-\-verify
found a difference; the first differing offset is reported.
.TP
.B 130
Interrupted by SIGINT or SIGTERM; the copy stopped at a chunk boundary, the destination was synced, and the command that resumes the copy was printed (with \-\-state, the same command, the point recorded in the state file).
.SH JSON OUTPUT
With
.BR \-\-json ,
one object is printed on stdout. Field names are stable; bytes are integers.
.TP
.B src, dst, src_offset, dst_offset
the request.
.TP
.B bytes
bytes copied;
.B offloaded_bytes
by copy_file_range,
.B onloaded_bytes
through the host.
.TP
.B chunks
chunks executed.
.TP
.B mode
auto, offload or onload.
.TP
.B fallback_reason
why offload was not used for (some of) the copy, empty when it was.
.TP
.B offload_disabled_reason
set when offload was stopped during the run (copy_file_range failed, or the read-back check of the first offloaded chunk found a difference).
.TP
.B offload_path
the offload path that copied: \fBcopy_file_range\fR (the kernel's copy offload between block devices, or between regular files), or empty when none served this pair.
.TP
.B offload_requests
system calls or device commands the offload path issued (the first, the canary, is one device command of at most 64 KiB and is read back; later ones carry many).
.TP
.B duration_ns, bytes_per_second
timing.
.TP
.B verified
true when \-\-verify compared both ranges equal.
.TP
.B synced
the destination was flushed with fdatasync.
.TP
.B resumed_from
bytes of the range a \-\-state file recorded as done before this run (0 for a new copy); bytes, offloaded_bytes and onloaded_bytes count what this run copied.
.PP
On failure the object is {"error": "...", "exit_code": N}; a failure after the copy began also carries the fields above as they stood (bytes offloaded and onloaded, offload_requests); on interrupt it also has interrupted, done_bytes and resume_command.
.SH STATE FILE
With
.BI \-\-state " FILE",
a copy survives kill \-9, a crash or a power cut. FILE (JSON, version 1) records what the copy is \(em source and destination paths, the device number, size and stable ID (WWID, loop backing file or dm UUID, and a partition\(aqs start) of a block device, the file system device, inode and size of a source file, the inode of a destination file, the offsets, the length, the direction (forward, or backward for overlapping ranges with the destination after the source) \(em and
.BR done ,
how many bytes of the range are durable: a prefix of it, or a suffix for a backward copy.
.PP
.B done
only advances after an fdatasync of the destination that covers those bytes, every 2 seconds or 256 MiB copied, whichever comes first, on a thread of its own while the copy goes on, and once more when the copy stops. The first checkpoint comes after 2 seconds, and none is taken when the copy should end within 2 seconds at its rate so far (its final fdatasync comes as soon), so a copy of a few seconds pays for no flush but its last, and a crash costs at most a few seconds of copying again. Where a cache flush is slow these checkpoints are spaced so that they take at most 2% of the copy's time (a device whose flush takes a second is checkpointed every 50 seconds). FILE is replaced atomically: a temporary FILE.tmp in the same directory is written and fsynced, renamed over FILE, and the directory fsynced, so a crash leaves the old record or the new one. Before the first write to the destination blkcopy writes FILE.tmp, so a FILE that cannot be written stops the copy before it starts; the first record itself is saved by the first checkpoint (until then a crash leaves no record, or the one the copy resumed from, and a rerun starts where this run did). A record that cannot be written later stops the copy with exit 1.
.PP
Running the same command again resumes at the recorded point: a forward copy after its done head, a backward one before its done tail; the summary says
.IR "resumed from byte N" ,
the JSON
.BR resumed_from .
A FILE that records another copy (other devices, a device of another size, a replaced source or destination file, other offsets or length) is refused with one line naming what differs, as is a FILE that is not a complete record (truncated, not JSON, another version); exit 1, nothing written. A missing FILE starts a new copy. A block device with a stable ID is matched by it, not by its path or number, which a reboot may change; one without is matched by number and path. The record knows devices by identity and size, not by content: remove FILE when the source is replaced by another of the same size (a new snapshot at the same device number), or the copy would resume into it.
.PP
When the copy finishes (after \-\-verify, if given), FILE is removed and the removal made durable: running the command again copies again, from the start, which gives the same result. An overlapping copy (data moved within one device) is the exception: running it again would move the data a second time, so it keeps FILE, marked done (done equals the length), and running the same command again does nothing and exits 0 \(em also after a kill or a power cut between the end of the copy and its caller seeing exit 0. Remove FILE to move the data again. With \-\-verify the whole range is recorded done before the read-back, so a kill during it leaves a record whose rerun copies nothing, verifies and removes it. With \-\-verify a resumed copy compares the whole range, except an overlapping one, whose source the copy overwrote.
.PP
Redoing what was in flight at the crash is safe for overlapping copies too, because an overlapping copy never writes more than the distance between source and destination past its recorded point: before it would, it syncs and records first (and backward chunks are at most 256 MiB). That costs one fdatasync and one record per distance copied, which is noticeable only when the distance is small.
.B \-\-state
cannot be combined with
.BR \-\-no\-sync .
`,
	"blkcopy limits": `.SH EXIT STATUS
.TP
.B 0
Every device was read (and with \-\-set\-max, written).
.TP
.B 1
A device or its sysfs attributes could not be read, or \-\-set\-max could not write copy_max_bytes.
.TP
.B 2
A usage error.
`,
	"blkcopy version": `.SH EXIT STATUS
.B 0
always, unless the arguments are wrong (2).
`,
}

// GenManPages writes one man page per command into dir.
func GenManPages(dir string) error {
	root := cmd.NewCmdRoot(&cmd.Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	root.DisableAutoGenTag = true
	return walk(root, func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root {
			return nil
		}
		page, err := manPage(c)
		if err != nil {
			return err
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		return os.WriteFile(filepath.Join(dir, name), page, 0o644)
	})
}

func walk(c *cobra.Command, fn func(*cobra.Command) error) error {
	if err := fn(c); err != nil {
		return err
	}
	for _, sub := range c.Commands() {
		if err := walk(sub, fn); err != nil {
			return err
		}
	}
	return nil
}

func manPage(c *cobra.Command) ([]byte, error) {
	var buf bytes.Buffer
	c.DisableAutoGenTag = true
	h := &doc.GenManHeader{Title: strings.ToUpper(strings.ReplaceAll(c.CommandPath(), " ", "-")), Section: "1",
		Date: &manDate, Source: "blkcopy", Manual: "blkcopy manual"}
	if err := doc.GenMan(c, h, &buf); err != nil {
		return nil, fmt.Errorf("man page for %s: %w", c.CommandPath(), err)
	}
	page := strings.Replace(buf.String(), ".SH EXAMPLE\n", ".SH EXAMPLES\n", 1)
	if extra, ok := manSections[c.CommandPath()]; ok {
		if i := strings.Index(page, ".SH SEE ALSO"); i >= 0 {
			page = page[:i] + extra + page[i:]
		} else {
			page += extra
		}
	}
	return []byte(page), nil
}
