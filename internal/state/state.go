// Package state is the record behind `blkcopy --state FILE`: what a copy is
// (both ends and their identities, offsets, length, direction) and how many
// of its bytes are durable on the destination, so that a copy killed by
// kill -9, a crash or a power cut resumes where it stood, like GNU
// ddrescue's mapfile.
//
// The file is JSON and is only ever replaced whole: a temporary file in the
// same directory is written and fsynced, renamed over FILE and the
// directory fsynced, so after a crash at any instant FILE holds either the
// old record or the new one, never a mix or nothing. The package does no
// copying and knows nothing of devices: the copier says what the copy is and
// when its bytes are durable.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the format written, and the only one read.
const Version = 1

// Kinds of endpoint.
const (
	Block = "block" // block device: identified by its stable ID (else its device number) and size
	File  = "file"  // regular file: by its file system's device and inode
)

// Directions of a copy: backward copies (overlapping ranges, destination
// after the source) finish from the end, so their done bytes are a suffix.
const (
	Forward  = "forward"
	Backward = "backward"
)

// Endpoint is one end of the copy as it was when the copy began.
type Endpoint struct {
	Path string `json:"path"` // absolute
	Kind string `json:"kind"` // Block or File
	// Device is "MAJOR:MINOR": the device number (st_rdev) of a block
	// device, or the device (st_dev) of the file system holding a file.
	Device string `json:"device"`
	Inode  uint64 `json:"inode,omitempty"` // regular files
	// ID names a block device across reboots (sysfs.Device.StableID: its
	// WWID, loop backing file or dm UUID, and a partition's start), ""
	// when it has none. After a crash or power cut the machine reboots,
	// and the device's number and /dev name may then belong to another
	// disk: when both the record and the request have an ID, it is what
	// must match, not the path or the number.
	ID string `json:"id,omitempty"`
	// Size in bytes: a block device's, or a source file's. A destination
	// file may grow during the copy, so its size is not part of it (0).
	Size int64 `json:"size"`
}

// Copy is what a copy is: a state file only resumes the same copy.
type Copy struct {
	Src       Endpoint `json:"src"`
	Dst       Endpoint `json:"dst"`
	SrcOffset int64    `json:"src_offset"`
	DstOffset int64    `json:"dst_offset"`
	Length    int64    `json:"length"`
	Direction string   `json:"direction"` // Forward or Backward
}

// State is the whole record.
type State struct {
	Version int `json:"version"`
	Copy
	// Done is how many bytes of the range are durable on the destination:
	// a prefix of the range for a forward copy, a suffix for a backward
	// one. It is only ever advanced after an fdatasync of the destination
	// that covers those bytes.
	Done int64 `json:"done"`
	// Updated is when the record was written; for people, not checked.
	Updated time.Time `json:"updated"`
}

// Load reads the state file at path. A missing file is (nil, nil): a new
// copy. A file that is not a complete, valid record (truncated, not JSON,
// another version, a done count outside the range) is an error naming the
// file and what is wrong with it.
func Load(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("state file %s: truncated or empty (%d bytes): not a complete blkcopy state record", path, len(b))
		}
		return nil, fmt.Errorf("state file %s: not a blkcopy state record: %v", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("state file %s: not a blkcopy state record: data after the JSON object", path)
	}
	if err := s.valid(); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &s, nil
}

// valid checks what a record must satisfy whatever the request.
func (s *State) valid() error {
	switch {
	case s.Version == 0:
		return errors.New("no version: not a blkcopy state record")
	case s.Version != Version:
		return fmt.Errorf("version %d is not supported (this blkcopy reads version %d)", s.Version, Version)
	case s.Src.Kind != Block && s.Src.Kind != File:
		return fmt.Errorf("source kind %q is neither %q nor %q", s.Src.Kind, Block, File)
	case s.Dst.Kind != Block && s.Dst.Kind != File:
		return fmt.Errorf("destination kind %q is neither %q nor %q", s.Dst.Kind, Block, File)
	case s.Direction != Forward && s.Direction != Backward:
		return fmt.Errorf("direction %q is neither %q nor %q", s.Direction, Forward, Backward)
	case s.SrcOffset < 0 || s.DstOffset < 0:
		return fmt.Errorf("negative offset (source %d, destination %d)", s.SrcOffset, s.DstOffset)
	case s.Length <= 0:
		return fmt.Errorf("length %d is not positive", s.Length)
	case s.Done < 0 || s.Done > s.Length:
		return fmt.Errorf("done %d is outside the length %d", s.Done, s.Length)
	}
	return nil
}

// MismatchError says a state file records another copy than the one
// requested.
type MismatchError struct {
	Path  string
	Diffs []string // "length differs (state 1048576, request 2097152)"
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("state file %s: %s", e.Path, strings.Join(e.Diffs, "; "))
}

// Check returns a *MismatchError naming every field in which the record
// differs from want, or nil when it records the same copy.
func (s *State) Check(path string, want Copy) error {
	var diffs []string
	differs := func(what string, got, req any) {
		if got != req {
			f := "%v"
			if _, ok := got.(string); ok {
				f = "%q"
			}
			diffs = append(diffs, fmt.Sprintf("%s differs (state "+f+", request "+f+")", what, got, req))
		}
	}
	for _, e := range []struct {
		side      string
		got, want Endpoint
	}{{"source", s.Src, want.Src}, {"destination", s.Dst, want.Dst}} {
		if e.got.ID != "" && e.want.ID != "" {
			differs(e.side+" identity", e.got.ID, e.want.ID)
		} else {
			differs(e.side+" path", e.got.Path, e.want.Path)
			differs(e.side+" device", e.got.Device, e.want.Device)
		}
		differs(e.side+" kind", e.got.Kind, e.want.Kind)
		differs(e.side+" inode", e.got.Inode, e.want.Inode)
		differs(e.side+" size", e.got.Size, e.want.Size)
	}
	differs("source offset", s.SrcOffset, want.SrcOffset)
	differs("destination offset", s.DstOffset, want.DstOffset)
	differs("length", s.Length, want.Length)
	differs("direction", s.Direction, want.Direction)
	if diffs == nil {
		return nil
	}
	return &MismatchError{Path: path, Diffs: diffs}
}

// tempPath is where Save writes before renaming: in the same directory, so
// the rename is atomic, and one fixed name, so a copy killed in the middle
// of a save leaves at most one stray temporary, which the next save
// overwrites and Remove removes.
func tempPath(path string) string { return path + ".tmp" }

// Save replaces the state file at path with s atomically and durably: after
// Save returns, a crash leaves s in the file; a crash during Save leaves
// the previous record (or no file, if there was none).
func Save(path string, s *State) error {
	s.Version = Version
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	b = append(b, '\n')
	tmp := tempPath(path)
	if err := writeSynced(tmp, b); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file %s: %w", path, err)
	}
	beforeRename()
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file %s: %w", path, err)
	}
	// The rename is durable once the directory is.
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Probe checks that a record can be saved at path without saving one: it
// writes the temporary Save writes first (not synced) and removes it. A
// copy probes before its first write, so a FILE in a missing or read-only
// directory stops it before it begins, and saves its first record later,
// off the copy's critical path (two fsyncs of a small file cost a short
// copy several percent, bench/statecost).
// Probe never touches path itself: a record a crash could leave empty or
// torn there would make the next run fail.
func Probe(path string, s *State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	tmp := tempPath(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		_, err = f.Write(b)
		err = errors.Join(err, f.Close(), os.Remove(tmp))
	}
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return nil
}

// Remove deletes the state file (and a temporary a killed save left behind)
// and makes that durable, so that once a copy has reported success no crash
// can bring back a record of it. When there was no file (a copy that ended
// before its first checkpoint) there is nothing to make durable: a stray
// temporary coming back is harmless, as Load never reads it.
func Remove(path string) error {
	os.Remove(tempPath(path))
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs the directory dir, which makes the creation, rename or
// removal of a file in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// beforeRename runs between the temporary file's fsync and the rename. It
// is a test seam: the kill -9 tests of the built binary set
// BLKCOPY_TEST_STATE_RENAME_DELAY (a Go duration, e.g. 200ms) so that a kill
// can land while a save is half done; unit tests swap the function.
// Nothing else reads that variable, and unset it costs nothing.
var beforeRename = func() {
	if renameDelay > 0 {
		time.Sleep(renameDelay)
	}
}

var renameDelay, _ = time.ParseDuration(os.Getenv("BLKCOPY_TEST_STATE_RENAME_DELAY"))
