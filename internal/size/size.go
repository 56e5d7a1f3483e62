// Package size parses and prints byte counts the way storage people write
// them: 4096, 512K, 1M, 1GiB (binary) and 1MB, 1GB (decimal, like dd and
// coreutils).
package size

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// The bare letter is binary because that is what dd, blkdiscard and fio mean
// by "1M"; only an explicit "B" after the letter asks for powers of ten.
var suffixes = []struct {
	s    string
	mult uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50}, {"EiB", 1 << 60},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15}, {"EB", 1e18},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"P", 1 << 50}, {"E", 1 << 60},
	{"B", 1},
}

// Help is the one-line description used in flag help texts.
const Help = "bytes, or with a suffix: K, M, G, T (or KiB, MiB, ...) are powers of 1024; KB, MB, GB, TB are powers of 1000"

// Parse returns the number of bytes s denotes. It rejects negative values,
// fractions and anything that does not fit in an int64, because every size
// ends up as a file offset.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("invalid size %q: empty", s)
	}
	mult := uint64(1)
	for _, suf := range suffixes {
		if len(t) > len(suf.s) && strings.EqualFold(t[len(t)-len(suf.s):], suf.s) {
			// Case-insensitive so "1g" and "1gib" work, but "mb" vs "MiB"
			// is decided by the presence of the "i", never by case.
			t, mult = t[:len(t)-len(suf.s)], suf.mult
			break
		}
	}
	if t == "" || t[0] == '-' || t[0] == '+' {
		return 0, fmt.Errorf("invalid size %q: want a non-negative whole number of bytes with an optional suffix", s)
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return 0, fmt.Errorf("invalid size %q: want a non-negative whole number of bytes with an optional suffix", s)
	}
	hi, lo := bits.Mul64(n, mult)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(lo), nil
}

// Format prints n in binary units with up to one decimal ("8 MiB",
// "1.5 GiB", "512 B"), trimming a trailing ".0" so exact sizes read exactly.
func Format(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[i]
}

// Value is a pflag.Value for size flags. Set records that the flag was given,
// so callers can tell "--len 0" from no --len at all.
type Value struct {
	N     int64
	IsSet bool
}

func (v *Value) String() string {
	if v == nil || !v.IsSet {
		return ""
	}
	return strconv.FormatInt(v.N, 10)
}

func (v *Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	v.N, v.IsSet = n, true
	return nil
}

func (v *Value) Type() string { return "size" }
