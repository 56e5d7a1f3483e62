package copier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blkcopy/blkcopy/internal/state"
)

// How often a --state copy makes its progress durable: every stateEvery or
// every stateEveryBytes copied, whichever comes first, but never spending
// more than stateSyncShare of the copy's time on it. A checkpoint is one
// fdatasync of the destination and one small file written, fsynced and
// renamed, on a goroutine of its own while the copy goes on; a crash costs
// at most this much work again.
//
// The share bound is there because a cache flush can be slow: on this
// project's VM an fdatasync of a loop device on disk took 0.3-1 s, during
// which the loop device's queue stands still (the loop driver runs the
// flush in the worker that submits the writes), and checkpoints every
// 256 MiB made scenario B about 20-25% slower (bench/statecost, 2 GiB;
// with no checkpoint in the copy, within noise). Spacing checkpoints by 50
// times the last one's duration keeps long copies within 2% on any device
// and changes nothing where a flush takes milliseconds.
//
// The first checkpoint's cost is unknown until it is paid, so it waits one
// full stateEvery (the byte count only hastens later ones), and none is
// taken when the copy should end within stateEvery at the rate so far: its
// own fdatasync at the end comes as soon as the next checkpoint would. A
// crash then costs at most about two periods of work again, and a copy of
// a few seconds pays no flush but its last (see due).
const (
	stateEvery      = 2 * time.Second
	stateEveryBytes = 256 << 20
	stateSyncShare  = 0.02
)

// fdatasync is the checkpoints' fdatasync. A test seam: the crash tests
// learn from it which writes a power cut can no longer take back.
var fdatasync = unix.Fdatasync

// cadence is the checkpoint cadence in use: the constants above. A test
// seam: the crash tests copy a few MiB and checkpoint every few KiB.
var cadence = struct {
	every time.Duration
	bytes int64
}{testEvery(stateEvery), stateEveryBytes}

// testEvery is a test seam of the built binary: the kill -9 test sets
// BLKCOPY_TEST_STATE_EVERY (a Go duration, e.g. 100ms), because its
// copies of 512 MiB end before a first checkpoint at stateEvery. Nothing
// else reads the variable.
func testEvery(d time.Duration) time.Duration {
	if t, err := time.ParseDuration(os.Getenv("BLKCOPY_TEST_STATE_EVERY")); err == nil && t > 0 {
		return t
	}
	return d
}

// Why resuming at the recorded point is right, overlapping copies included.
//
// The record's done count D is only advanced after an fdatasync of the
// destination that began after every byte it counts was written (save
// reads the count, then syncs), so after a crash or power cut the done part
// of the range (a prefix, or a suffix for a backward copy) holds the copied
// bytes. A rerun copies the rest again, reading its source again; it is
// right exactly when nothing the crashed run wrote changed those source
// bytes.
//
// Different disks, or disjoint ranges: the copy never writes its source.
//
// Overlapping ranges on one disk, at distance d = |dst-src| < length L: take
// the backward copy (destination after the source, chunks from the end); a
// forward one is its mirror image. Number the range's positions 0..L-1.
// Writing destination position p overwrites source position p+d. The rerun
// redoes positions [0, L-D) and reads source positions [0, L-D). Past the
// done suffix the crashed run wrote only positions in [L-D-d, L-D), because
// the copier never starts a chunk or offload request that would write more
// than d positions beyond the durable point: runner.beforeWrite first makes
// what is done durable and recorded (lead below), and a chunk is never
// longer than d (the plan's rule that no chunk overlaps itself), so the next
// one always fits. Those writes overwrote source positions [L-D, L-D+d):
// the source of the done part, which the rerun never reads. So whatever
// subset of them reached the medium, in whatever order (several workers in
// one chunk; a power cut that keeps some writes since the last flush and
// loses others), the rerun reads only original source bytes, and rewrites
// every position it is unsure of. In particular redoing the chunk that was
// in flight is safe: it did not overlap itself, so it changed none of its
// own source, and the chunks before it only wrote on the done side. The
// record the guard relies on is durable before the next write is issued
// (Save returns after the directory fsync), so a power cut cannot bring
// back an older record that lags further. A rerun is itself a copy of
// [0, L-D) at the same distance, so the argument holds for its crashes too.
//
// Without the guard, a record lagging by a few seconds would let a rerun
// read source bytes that later chunks had already overwritten; the price of
// the guard is one checkpoint per d bytes on overlapping copies.
//
// TestCrashAtAnyMomentOfAnOverlappingCopyResumesToTheMemmoveResult crashes
// copies at random writes, loses a random subset of the writes no
// fdatasync covered, and runs them again until they finish; without the
// guard, or with a record read after its fdatasync, it fails.

// checkpointer keeps the state file of a --state copy. The copy publishes
// how far it is (a prefix, or suffix, of this run's range that is written);
// a goroutine makes that durable on the cadence above, and the runner makes
// it durable at once when an overlapping copy needs it (lead).
type checkpointer struct {
	path string
	rec  state.State // Done is what the file says
	dst  *endpoint
	// base is the bytes done before this run (the point it resumed from):
	// the run copies the rest, and the record's Done is base plus the run's
	// own done count.
	base int64
	// lead, when > 0, is how far writes may run ahead of the durable point
	// (the distance of an overlapping copy).
	lead int64

	mark  atomic.Int64 // the run's published done count
	saved atomic.Int64 // the run's done count the file holds
	// kickAt (Unix nanoseconds): publish wakes the saver early, for the
	// byte count, only from then on; before it the saver would find no
	// checkpoint due and sleep again. Without it every chunk after the
	// first stateEveryBytes woke the saver's goroutine for nothing, a
	// cross-thread wake-up per chunk on a copy that takes no checkpoint.
	kickAt atomic.Int64
	kick   chan struct{}
	stop   chan struct{}
	ended  sync.WaitGroup

	mu     sync.Mutex // serialises saves
	failed error      // the background goroutine's failure, under mu
	// dirPending: the destination file was created by this run and its
	// directory not yet synced (under mu).
	dirPending bool
	cancel     context.CancelCauseFunc
}

// loadState reads the --state record, if any, before the destination is
// opened: a record of a copy to a file that is gone must not create it.
func loadState(req Request) (*state.State, error) {
	if req.State == "" {
		return nil, nil
	}
	if req.NoSync {
		return nil, errors.New("--state records only what an fdatasync made durable: it cannot go with --no-sync")
	}
	prior, err := state.Load(req.State)
	if err != nil || prior == nil {
		return nil, err
	}
	if _, err := os.Stat(req.Dst); errors.Is(err, os.ErrNotExist) {
		return nil, &state.MismatchError{Path: req.State, Diffs: []string{
			fmt.Sprintf("destination differs (state %s %s, request: no such file)", prior.Dst.Kind, prior.Dst.Path)}}
	}
	return prior, nil
}

// newCheckpointer describes the copy (n bytes, the whole range) for its
// record and checks prior, the record found, against it: nothing is
// written unless both name the same copy. base is what prior has done.
func newCheckpointer(req Request, prior *state.State, src, dst *endpoint, n int64, backward bool) (*checkpointer, error) {
	c := &checkpointer{path: req.State, dst: dst, rec: state.State{Copy: state.Copy{
		Src: src.identity(false), Dst: dst.identity(true),
		SrcOffset: req.SrcOff, DstOffset: req.DstOff, Length: n, Direction: direction(backward)}}}
	if prior != nil {
		if err := prior.Check(req.State, c.rec.Copy); err != nil {
			return nil, err
		}
		c.base = prior.Done
	}
	return c, nil
}

// identity describes an opened endpoint for the state file.
func (e *endpoint) identity(isDst bool) state.Endpoint {
	p, err := filepath.Abs(e.path)
	if err != nil {
		p = e.path
	}
	id := state.Endpoint{Path: p, Kind: state.File, Device: majMin(e.devno), Inode: e.ino, Size: e.size}
	if e.block {
		id.Kind, id.Device, id.Inode = state.Block, majMin(e.rdev), 0
		if e.dev != nil {
			id.ID = e.dev.StableID()
		}
	} else if isDst {
		id.Size = 0 // a destination file may grow; its inode is what counts
	}
	return id
}

func majMin(dev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)) }

func direction(backward bool) string {
	if backward {
		return state.Backward
	}
	return state.Forward
}

// start checks that the record can be written before the first write, so
// that a state file that cannot be written stops the copy before it
// begins, then runs the background saver, whose first save makes the
// first record durable. Until then a crash leaves what was there before:
// no record (a rerun starts at byte 0, which is where this run started)
// or the prior one this run resumed from; so the first record's two
// fsyncs stay off the copy's path. createdDst: the destination file was
// created by this run; its directory entry is made durable before any
// record is, or a power cut could leave a record of a file that is gone.
func (c *checkpointer) start(cancel context.CancelCauseFunc, createdDst bool) error {
	c.rec.Done = c.base
	c.rec.Updated = time.Now().UTC()
	if err := state.Probe(c.path, &c.rec); err != nil {
		return err
	}
	c.dirPending = createdDst
	c.cancel = cancel
	c.kick = make(chan struct{}, 1)
	c.stop = make(chan struct{})
	c.ended.Add(1)
	go c.loop()
	return nil
}

// publish says the run's first (last, backward) n bytes are written. Calls
// may come from the onload engine's goroutines; the count only grows.
func (c *checkpointer) publish(n int64) {
	for {
		old := c.mark.Load()
		if n <= old || c.mark.CompareAndSwap(old, n) {
			break
		}
	}
	if n-c.saved.Load() >= cadence.bytes && time.Now().UnixNano() >= c.kickAt.Load() {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

func (c *checkpointer) loop() {
	defer c.ended.Done()
	t := time.NewTicker(cadence.every)
	defer t.Stop()
	began := time.Now()
	next := began.Add(cadence.every) // no checkpoint before
	c.kickAt.Store(next.UnixNano())
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kick:
		}
		now := time.Now()
		if !due(now, began, next, c.mark.Load(), c.rec.Length-c.base, cadence.every) {
			// Not yet, or the copy ends soon: the next early wake-up
			// is no sooner than next, or an eighth of a period away.
			c.kickAt.Store(max(next.UnixNano(), now.Add(cadence.every/8).UnixNano()))
			continue
		}
		saveStart := time.Now()
		err := c.save()
		next = time.Now().Add(time.Duration(float64(time.Since(saveStart)) / stateSyncShare))
		c.kickAt.Store(next.UnixNano())
		if err != nil {
			c.mu.Lock()
			c.failed = err
			c.mu.Unlock()
			// The promise of --state no longer holds: stop the copy.
			c.cancel(err)
			return
		}
	}
}

// due decides whether a checkpoint is taken now: not before next (the
// first period, or the share bound after a checkpoint), and not when the
// run, done of total bytes since began, should finish within every at its
// rate so far.
func due(now, began, next time.Time, done, total int64, every time.Duration) bool {
	if now.Before(next) {
		return false
	}
	elapsed := now.Sub(began).Seconds()
	if done <= 0 || elapsed <= 0 {
		return true
	}
	left := float64(total - done)
	return left > float64(done)/elapsed*every.Seconds()
}

// save makes the published count durable: read it, fdatasync the
// destination (which covers every write that count includes, since they
// all completed before it was published), then record it.
func (c *checkpointer) save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.mark.Load()
	if n <= c.saved.Load() {
		return nil
	}
	if err := fdatasync(int(c.dst.file.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", c.dst.path, err)
	}
	if c.dirPending {
		if err := state.SyncDir(filepath.Dir(c.dst.path)); err != nil {
			return fmt.Errorf("destination %s: %w", c.dst.path, err)
		}
		c.dirPending = false
	}
	c.rec.Done = c.base + n
	c.rec.Updated = time.Now().UTC()
	if err := state.Save(c.path, &c.rec); err != nil {
		return err
	}
	c.saved.Store(n)
	return nil
}

// requestMax bounds an offload request of a --state copy: its bytes count
// as done only when it returns, and between regular files one request may
// be a gigabyte. A quarter of the cadence lets the record advance about as
// often as it is saved; block-device paths ask for less anyway.
func (c *checkpointer) requestMax(align int64) int64 {
	return max(cadence.bytes/4/align*align, align)
}

// close stops the background saver and returns its failure, if any.
func (c *checkpointer) close() error {
	if c.stop != nil {
		close(c.stop)
		c.ended.Wait()
		c.stop = nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// record makes n, the run's final done count, durable (after a stop).
func (c *checkpointer) record(n int64) error {
	c.publish(n)
	return c.save()
}

// settle ends the record of a finished copy (after --verify, if any).
// Running a copy that does not overlap again gives the same result, so
// its record is removed and the same command later copies anew. Running
// an overlapping copy again would move the data a second time, so after a
// kill between its end and the caller seeing exit 0, or a power cut, the
// rerun must do nothing: its record stays, marked done (the whole length).
func (c *checkpointer) settle(done int64, overlap bool, verr error) error {
	if overlap {
		return c.record(done)
	}
	return forget(c.path, verr)
}

// keptNote tells the user why an overlapping copy's state file stays.
func keptNote(path string) string {
	return fmt.Sprintf("state file %s kept, marked done: running this overlapping copy again does nothing (remove the file to move the data again)", path)
}

// forget removes the state file of a finished copy once nothing is left
// to do: after it is verified, or found to differ (a rerun then copies
// again). A --verify stopped before its end keeps the record, so that the
// rerun verifies instead of copying.
func forget(path string, verr error) error {
	var me *MismatchError
	if verr != nil && !errors.As(verr, &me) {
		return nil
	}
	if err := state.Remove(path); err != nil {
		return fmt.Errorf("the copy is complete, but %w; remove it before running this copy again", err)
	}
	return nil
}

// finishedEarlier handles a --state record that has the whole range done:
// an overlapping copy that finished (its record stays), or a copy killed
// after it finished but before its record was removed. There is nothing
// to copy. --verify compares the whole range unless the copy overlapped
// (it overwrote its source); the record of a copy that does not overlap
// goes.
func finishedEarlier(ctx context.Context, req Request, sum *Summary, src, dst *endpoint, full int64, overlap bool) error {
	sum.Note = joinNote(sum.Note, fmt.Sprintf("nothing left to copy: state file %s records all %d bytes done", req.State, full))
	if req.DryRun {
		return nil
	}
	if overlap {
		if req.Verify {
			sum.Note = joinNote(sum.Note, "not verified: the ranges overlap, so the copy overwrote its source")
		}
		sum.Note = joinNote(sum.Note, keptNote(req.State))
		return nil
	}
	var verr error
	if req.Verify {
		sum.BufSize = bufSize(req.BufSize, src, dst)
		r := &runner{req: req, sum: sum, src: src, dst: dst, verifyFrom: full}
		if verr = r.verifyAll(ctx); verr == nil {
			sum.Verified = true
		}
	}
	if err := forget(req.State, verr); err != nil {
		return errors.Join(verr, err)
	}
	return verr
}
