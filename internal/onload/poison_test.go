package onload_test

import (
	"path/filepath"
	"testing"

	"github.com/blkcopy/blkcopy/internal/onload"
	"github.com/blkcopy/blkcopy/internal/onload/onloadtest"
)

// The canary's poison and read-back: Poison leaves the complement of the
// source in the destination range and nothing else changed; Check finds
// the first byte the copy did not put right, or none.
func TestPoisonAndCheck(t *testing.T) {
	const size = 1 << 20
	cases := []struct {
		name           string
		direct         bool
		srcOff, dstOff int64
		n              int64
	}{
		{"256 KiB, O_DIRECT", true, 0, 512 << 10, 256 << 10},
		{"one sector, O_DIRECT", true, 4096, 8192, 512},
		{"odd length, buffered", false, 3, 1000, 13}, // the byte-wise tail of complement
		{"one byte, buffered", false, 0, 7, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.direct {
				dir = onloadtest.DirectDir(t)
			}
			srcPath, dstPath := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			src := onloadtest.RandomBytes(size, 1)
			before := onloadtest.RandomBytes(size, 2)
			onloadtest.WriteFile(t, srcPath, src)
			onloadtest.WriteFile(t, dstPath, before)
			align := int64(1)
			if tc.direct {
				align = 512
			}
			s := onloadtest.Open(t, srcPath, tc.direct, align)
			d := onloadtest.Open(t, dstPath, tc.direct, align)

			c, err := onload.Poison(d, s, tc.dstOff, tc.srcOff, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Free()
			want := append([]byte(nil), before...)
			for i := range tc.n {
				want[tc.dstOff+i] = ^src[tc.srcOff+i]
			}
			if i := onloadtest.FirstDiff(onloadtest.ReadFile(t, dstPath), want); i >= 0 {
				t.Fatalf("after Poison the destination differs from the source's complement at byte %d", i)
			}
			if got, err := c.Check(); err != nil || got != 0 {
				t.Fatalf("Check before any copy = %d, %v; want 0 (every byte poisoned)", got, err)
			}

			// A copy that stops one byte short of the range.
			copy(want[tc.dstOff:], src[tc.srcOff:tc.srcOff+tc.n-1])
			onloadtest.WriteFile(t, dstPath, want)
			if got, err := c.Check(); err != nil || got != tc.n-1 {
				t.Fatalf("Check after a copy short by one byte = %d, %v; want %d", got, err, tc.n-1)
			}
			want[tc.dstOff+tc.n-1] = src[tc.srcOff+tc.n-1]
			onloadtest.WriteFile(t, dstPath, want)
			if got, err := c.Check(); err != nil || got != -1 {
				t.Fatalf("Check after the whole copy = %d, %v; want -1", got, err)
			}
		})
	}
}

func TestPoisonRefusesUnalignedDirectRanges(t *testing.T) {
	dir := onloadtest.DirectDir(t)
	p := filepath.Join(dir, "f")
	onloadtest.WriteFile(t, p, make([]byte, 64<<10))
	e := onloadtest.Open(t, p, true, 512)
	before := onloadtest.ReadFile(t, p)
	if c, err := onload.Poison(e, e, 4096, 100, 512); err == nil {
		c.Free()
		t.Fatal("Poison of an unaligned O_DIRECT range succeeded")
	}
	if i := onloadtest.FirstDiff(onloadtest.ReadFile(t, p), before); i >= 0 {
		t.Fatalf("a refused Poison wrote byte %d", i)
	}
}
