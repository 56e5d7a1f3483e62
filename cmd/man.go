package cmd

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
A runtime error: a device could not be opened, read or written; the range is past the end of the source or of a block-device destination; the destination is mounted, held or read-only. The message names the path, the offset and the operation.
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
Interrupted by SIGINT or SIGTERM; the copy stopped at a chunk boundary, the destination was synced, and the command that resumes the copy was printed.
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
system calls or device commands the offload path issued (the first, the canary, is one device command's worth and is read back; later ones carry many).
.TP
.B duration_ns, bytes_per_second
timing.
.TP
.B verified
true when \-\-verify compared both ranges equal.
.TP
.B synced
the destination was flushed with fdatasync.
.PP
On failure the object is {"error": "...", "exit_code": N}; a failure after the copy began also carries the fields above as they stood (bytes offloaded and onloaded, offload_requests); on interrupt it also has interrupted, done_bytes and resume_command.
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
	root := NewCmdRoot(&Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
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
