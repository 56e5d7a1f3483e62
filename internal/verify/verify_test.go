package verify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
	"github.com/blkcopy/blkcopy/internal/verify"
)

const size = 1 << 20

type compareCase struct {
	name       string
	aOff, bOff int64
	n          int64
	flip       int64 // byte of the range changed on side b, or -1
}

var compareCases = []compareCase{
	{"equal aligned", 4096, 8192, 512 << 10, -1},
	{"equal unaligned offsets", 3, 700, 300001, -1},
	{"first byte differs", 512, 1024, 100000, 0},
	{"last byte differs", 100, 200, 200000, 199999},
	{"unaligned middle differs", 7, 7, 500000, 123457},
	{"differs at a buffer boundary", 0, 0, 300000, 3 * 8192},
	{"one byte differs", 1000, 2000, 1, 0},
}

// setup writes side a with random bytes and side b with the same range at
// bOff, one byte flipped if asked, and random bytes elsewhere.
func setup(c compareCase) (a, b []byte) {
	a = onloadtest.RandomBytes(size, 1)
	b = onloadtest.RandomBytes(size, 2)
	copy(b[c.bOff:c.bOff+c.n], a[c.aOff:c.aOff+c.n])
	if c.flip >= 0 {
		b[c.bOff+c.flip] ^= 0x40
	}
	return a, b
}

func TestCompareFindsFirstDifferenceInRegularFiles(t *testing.T) {
	dir := onloadtest.DirectDir(t)
	for _, direct := range []bool{false, true} {
		for _, bufSize := range []int64{8192, 5000, 0} {
			for _, c := range compareCases {
				t.Run(fmt.Sprintf("direct=%v/buf=%d/%s", direct, bufSize, c.name), func(t *testing.T) {
					a, b := setup(c)
					ap, bp := filepath.Join(dir, "a"), filepath.Join(dir, "b")
					onloadtest.WriteFile(t, ap, a)
					onloadtest.WriteFile(t, bp, b)
					got, err := verify.Compare(t.Context(),
						onloadtest.Open(t, ap, direct, 512), onloadtest.Open(t, bp, direct, 512),
						c.aOff, c.bOff, c.n, bufSize)
					if err != nil || got != c.flip {
						t.Fatalf("Compare = %d, %v; want %d, nil", got, err, c.flip)
					}
				})
			}
		}
	}
}

func TestCompareLoopDevices(t *testing.T) {
	for _, c := range compareCases {
		t.Run(c.name, func(t *testing.T) {
			a, b := setup(c)
			la, lb := onloadtest.NewLoop(t, a, 512), onloadtest.NewLoop(t, b, 4096)
			got, err := verify.Compare(t.Context(),
				onloadtest.OpenDevice(t, la.Dev), onloadtest.OpenDevice(t, lb.Dev),
				c.aOff, c.bOff, c.n, 64<<10)
			if err != nil || got != c.flip {
				t.Fatalf("Compare = %d, %v; want %d, nil", got, err, c.flip)
			}
		})
	}
}

func TestCompareRangePastEndIsAnErrorNamingPathAndOffset(t *testing.T) {
	dir := t.TempDir()
	ap, bp := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := onloadtest.RandomBytes(size, 1)
	onloadtest.WriteFile(t, ap, data)
	onloadtest.WriteFile(t, bp, data[:size/2]) // shorter: the range runs off its end
	_, err := verify.Compare(t.Context(), onloadtest.Open(t, ap, false, 1), onloadtest.Open(t, bp, false, 1), 0, 0, size, 64<<10)
	var oe *onload.Error
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &oe) || oe.Path != bp || oe.Offset != size/2 {
		t.Fatalf("err = %v, want unexpected EOF reading %s at offset %d", err, bp, size/2)
	}
}

func TestCompareCancelled(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a")
	onloadtest.WriteFile(t, p, onloadtest.RandomBytes(size, 1))
	e := onloadtest.Open(t, p, false, 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got, err := verify.Compare(ctx, e, e, 0, 0, size, 4096); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compare = %d, %v; want context.Canceled", got, err)
	}
}
