package offload

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// call is one copy_file_range call as the seam saw it.
type call struct {
	roff, woff int64
	n          int
}

// fakeKernel swaps the copyFileRange seam for the test: answer decides
// what each call returns; calls records the offsets the loop passed.
type fakeKernel struct {
	calls  []call
	answer func(i int, c call) (int, error)
}

func installFake(t *testing.T, answer func(i int, c call) (int, error)) *fakeKernel {
	t.Helper()
	fk := &fakeKernel{answer: answer}
	orig := copyFileRange
	copyFileRange = func(rfd int, roff *int64, wfd int, woff *int64, n int, flags int) (int, error) {
		c := call{*roff, *woff, n}
		fk.calls = append(fk.calls, c)
		got, err := fk.answer(len(fk.calls)-1, c)
		if err == nil {
			// Like the kernel: move the offsets it was given, never the
			// file position.
			*roff += int64(got)
			*woff += int64(got)
		}
		return got, err
	}
	t.Cleanup(func() { copyFileRange = orig })
	return fk
}

// pair opens two empty files with the modes blkcopy uses: the seam does
// not look at them, but Copy names them in errors and checks their flags.
func pair(t *testing.T) (dst, src *os.File) {
	t.Helper()
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err = os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(); dst.Close() })
	return dst, src
}

// The errno table, one row each: what Unavailable must say about the
// first call failing with that errno.
var errnoRows = []struct {
	errno       unix.Errno
	unavailable bool
}{
	{unix.EINVAL, true},
	{unix.EXDEV, true},
	{unix.EOPNOTSUPP, true},
	{unix.ENOTSUP, true},
	{unix.ENOSYS, true},
	{unix.EBADF, true},
	{unix.ENOTTY, true},
	{unix.EIO, false},
	{unix.ENODATA, false},
	{unix.ENOSPC, false},
	{unix.EDQUOT, false},
	{unix.ENOMEM, false},
	{unix.EROFS, false},
	{unix.EFBIG, false},
	{unix.EPERM, false},
	{unix.EACCES, false},
	{unix.ETXTBSY, false},
}

func TestErrnoDecidesFallbackOrRealError(t *testing.T) {
	for _, row := range errnoRows {
		t.Run(row.errno.Error(), func(t *testing.T) {
			installFake(t, func(int, call) (int, error) { return 0, row.errno })
			dst, src := pair(t)
			n, err := Copy(context.Background(), dst, src, 0, 4096, 1<<20, nil)
			if n != 0 {
				t.Errorf("copied %d bytes, want 0", n)
			}
			if !errors.Is(err, row.errno) {
				t.Fatalf("err = %v, want it to wrap %v", err, row.errno)
			}
			if got := Unavailable(err); got != row.unavailable {
				t.Errorf("Unavailable(%v) = %v, want %v", err, got, row.unavailable)
			}
		})
	}
}

// A new errno in the table must come with a row above; this catches a
// table edit that no test covers.
func TestEveryFallbackErrnoHasATestRow(t *testing.T) {
	rows := map[unix.Errno]bool{}
	for _, row := range errnoRows {
		rows[row.errno] = row.unavailable
	}
	for errno := range unavailableErrnos {
		if !rows[errno] {
			t.Errorf("%v is in unavailableErrnos but has no unavailable row in errnoRows", errno)
		}
	}
}

func TestEBADFFromBadDescriptorsIsARealError(t *testing.T) {
	dir := t.TempDir()
	srcPath, dstPath := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for _, p := range []string{srcPath, dstPath} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		srcFlag   int
		dstFlag   int
		wantAvail bool
	}{
		{"both fine (O_DIRECT mismatch)", os.O_RDONLY, os.O_RDWR, true},
		{"destination read-only", os.O_RDONLY, os.O_RDONLY, false},
		{"destination O_APPEND", os.O_RDONLY, os.O_WRONLY | os.O_APPEND, false},
		{"source write-only", os.O_WRONLY, os.O_RDWR, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			installFake(t, func(int, call) (int, error) { return 0, unix.EBADF })
			src, err := os.OpenFile(srcPath, tt.srcFlag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			dst, err := os.OpenFile(dstPath, tt.dstFlag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			_, err = Copy(context.Background(), dst, src, 0, 0, 4096, nil)
			if !errors.Is(err, unix.EBADF) {
				t.Fatalf("err = %v, want EBADF", err)
			}
			if got := Unavailable(err); got != tt.wantAvail {
				t.Errorf("Unavailable = %v, want %v", got, tt.wantAvail)
			}
		})
	}
}

func TestUnavailableIsFalseForOtherErrors(t *testing.T) {
	for _, err := range []error{
		nil,
		unix.EINVAL, // a bare errno did not come from Copy
		io.ErrUnexpectedEOF,
		context.Canceled,
		&Error{Op: "copy_file_range", Err: io.ErrUnexpectedEOF},
	} {
		if Unavailable(err) {
			t.Errorf("Unavailable(%v) = true, want false", err)
		}
	}
}

func TestErrorNamesOperationPathsAndOffset(t *testing.T) {
	err := error(&Error{Op: "copy_file_range", Path: "/dev/loop0 -> /dev/loop1", Offset: 1048576, Err: unix.EINVAL})
	want := "copy_file_range /dev/loop0 -> /dev/loop1 at offset 1048576: invalid argument"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}

	installFake(t, func(i int, c call) (int, error) {
		if i == 0 {
			return 4096, nil
		}
		return 0, unix.EIO
	})
	dst, src := pair(t)
	_, err = Copy(context.Background(), dst, src, 0, 8192, 1<<20, nil)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if e.Op != "copy_file_range" || e.Path != src.Name()+" -> "+dst.Name() || e.Offset != 8192+4096 {
		t.Errorf("got Op %q Path %q Offset %d, want copy_file_range, %q, %d",
			e.Op, e.Path, e.Offset, src.Name()+" -> "+dst.Name(), 8192+4096)
	}
}

func TestShortReturnsContinueAtTheRightOffsets(t *testing.T) {
	const srcOff, dstOff, n = 5000, 70000, 10000
	// The kernel copies at most 3000 bytes a call, then 1 byte once.
	fk := installFake(t, func(i int, c call) (int, error) {
		if i == 2 {
			return 1, nil
		}
		return min(c.n, 3000), nil
	})
	dst, src := pair(t)
	var reported int64
	got, err := Copy(context.Background(), dst, src, dstOff, srcOff, n, func(d int64) { reported += d })
	if err != nil || got != n {
		t.Fatalf("Copy = %d, %v; want %d, nil", got, err, n)
	}
	want := []call{
		{5000, 70000, 10000},
		{8000, 73000, 7000},
		{11000, 76000, 4000},
		{11001, 76001, 3999},
		{14001, 79001, 999},
	}
	if len(fk.calls) != len(want) {
		t.Fatalf("calls = %v, want %v", fk.calls, want)
	}
	for i := range want {
		if fk.calls[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, fk.calls[i], want[i])
		}
	}
	if reported != n {
		t.Errorf("progress reported %d bytes, want %d", reported, n)
	}
}

func TestLargeRangeIsSplitIntoCappedCalls(t *testing.T) {
	fk := installFake(t, func(i int, c call) (int, error) { return c.n, nil })
	dst, src := pair(t)
	const n = 2*maxCall + 12345
	got, err := Copy(context.Background(), dst, src, 1, 2, n, nil)
	if err != nil || got != n {
		t.Fatalf("Copy = %d, %v; want %d, nil", got, err, int64(n))
	}
	want := []call{{2, 1, maxCall}, {2 + maxCall, 1 + maxCall, maxCall}, {2 + 2*maxCall, 1 + 2*maxCall, 12345}}
	if len(fk.calls) != len(want) {
		t.Fatalf("calls = %v, want %v", fk.calls, want)
	}
	for i := range want {
		if fk.calls[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, fk.calls[i], want[i])
		}
	}
}

func TestSourceEndingEarlyIsAnErrorNotAShortCopy(t *testing.T) {
	installFake(t, func(i int, c call) (int, error) {
		if i == 0 {
			return 4096, nil
		}
		return 0, nil
	})
	dst, src := pair(t)
	got, err := Copy(context.Background(), dst, src, 0, 0, 1<<20, nil)
	if got != 4096 {
		t.Errorf("copied %d, want the 4096-byte prefix", got)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if Unavailable(err) {
		t.Errorf("Unavailable(%v) = true: an early source end must stop the copy", err)
	}
}

func TestEINTRIsRetriedAtTheSameOffset(t *testing.T) {
	fk := installFake(t, func(i int, c call) (int, error) {
		if i < 2 {
			return 0, unix.EINTR
		}
		return c.n, nil
	})
	dst, src := pair(t)
	got, err := Copy(context.Background(), dst, src, 512, 1024, 4096, nil)
	if err != nil || got != 4096 {
		t.Fatalf("Copy = %d, %v; want 4096, nil", got, err)
	}
	if len(fk.calls) != 3 {
		t.Fatalf("calls = %v, want 3 (two EINTR, one success)", fk.calls)
	}
	for i, c := range fk.calls {
		if c != (call{1024, 512, 4096}) {
			t.Errorf("call %d = %+v, want {1024 512 4096}", i, c)
		}
	}
}

func TestCancellationStopsBetweenCalls(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fk := installFake(t, func(i int, c call) (int, error) { return min(c.n, 4096), nil })
	dst, src := pair(t)
	got, err := Copy(ctx, dst, src, 0, 0, 1<<20, func(int64) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got != 4096 || len(fk.calls) != 1 {
		t.Errorf("copied %d in %d calls, want 4096 in 1", got, len(fk.calls))
	}
}

func TestPartialProgressThenErrorReturnsThePrefix(t *testing.T) {
	fk := installFake(t, func(i int, c call) (int, error) {
		if i < 3 {
			return 65536, nil
		}
		return 0, unix.ENOSPC
	})
	dst, src := pair(t)
	var reported int64
	got, err := Copy(context.Background(), dst, src, 0, 0, 1<<20, func(d int64) { reported += d })
	if got != 3*65536 || reported != got {
		t.Errorf("copied %d, progress %d; want %d for both", got, reported, 3*65536)
	}
	if !errors.Is(err, unix.ENOSPC) || Unavailable(err) {
		t.Errorf("err = %v (Unavailable %v), want real ENOSPC", err, Unavailable(err))
	}
	if len(fk.calls) != 4 || fk.calls[3].roff != 3*65536 {
		t.Errorf("calls = %v, want the 4th at offset %d", fk.calls, 3*65536)
	}
}

func TestNothingToCopyMakesNoCall(t *testing.T) {
	fk := installFake(t, func(int, call) (int, error) { return 0, unix.EIO })
	dst, src := pair(t)
	got, err := Copy(context.Background(), dst, src, 0, 0, 0, nil)
	if got != 0 || err != nil || len(fk.calls) != 0 {
		t.Errorf("Copy(len 0) = %d, %v after %d calls; want 0, nil, no call", got, err, len(fk.calls))
	}
	if _, err := Copy(context.Background(), dst, src, 0, 0, -1, nil); err == nil {
		t.Error("Copy(len -1) succeeded, want an error")
	}
}

func TestKernelClaimingMoreThanAskedIsAnError(t *testing.T) {
	installFake(t, func(i int, c call) (int, error) { return c.n + 1, nil })
	dst, src := pair(t)
	got, err := Copy(context.Background(), dst, src, 0, 0, 4096, nil)
	if err == nil || got != 0 {
		t.Errorf("Copy = %d, %v; want 0 and an error", got, err)
	}
}
