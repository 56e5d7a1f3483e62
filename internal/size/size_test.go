package size

import (
	"math"
	"strings"
	"testing"
)

func TestParseAcceptsBytesAndSuffixes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{"512K", 512 << 10},
		{"512k", 512 << 10},
		{"1M", 1 << 20},
		{"1G", 1 << 30},
		{"1GiB", 1 << 30},
		{"1gib", 1 << 30},
		{"1MiB", 1 << 20},
		{"1MB", 1000000},
		{"1mb", 1000000},
		{"2KB", 2000},
		{"3T", 3 << 40},
		{"7B", 7},
		{" 8M ", 8 << 20},
		{"7E", 7 << 60},
		{"9223372036854775807", math.MaxInt64},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseRejectsBadSizes(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty"},
		{"-1", "non-negative"},
		{"-1M", "non-negative"},
		{"+5", "non-negative"},
		{"1.5G", "whole number"},
		{"abc", "whole number"},
		{"M", "whole number"},
		{"12X", "whole number"},
		{"8E", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999", "too large"},
		{"16777216T", "too large"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error containing %q", tt.in, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "invalid size") {
			t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestFormatReadsLikeAPerson(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{4096, "4 KiB"},
		{8 << 20, "8 MiB"},
		{3 << 29, "1.5 GiB"},
		{1 << 40, "1 TiB"},
		{math.MaxInt64, "8 EiB"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValueRecordsWhetherSet(t *testing.T) {
	var v Value
	if v.IsSet || v.String() != "" {
		t.Fatalf("zero Value reports set: %+v", v)
	}
	if err := v.Set("0"); err != nil {
		t.Fatal(err)
	}
	if !v.IsSet || v.N != 0 {
		t.Fatalf("after Set(\"0\"): %+v, want set with 0", v)
	}
	if err := v.Set("x"); err == nil {
		t.Fatal("Set(\"x\") succeeded")
	}
}
