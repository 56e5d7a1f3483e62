package scsi

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture reads a hex file from testdata: '#' lines are comments.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			b.WriteString(line + " ")
		}
	}
	return unhex(t, b.String())
}

// Sense data in both formats turns into the key, the codes, the
// information field, words a person understands, and what the copy does
// about it.
func TestSenseDecoding(t *testing.T) {
	tests := []struct {
		file    string
		want    Sense
		words   string
		verdict verdict
	}{
		{"sense/lio_copy_aborted_unreachable.hex", Sense{Key: keyCopyAborted, ASC: 0x0d, ASCQ: 0x02},
			"copy aborted: copy target device not reachable (sense key Ah, ASC/ASCQ 0Dh/02h)", unavailable},
		{"sense/lio_too_many_segments.hex", Sense{Key: keyIllegalRequest, ASC: 0x26, ASCQ: 0x08},
			"illegal request: too many segment descriptors (sense key 5h, ASC/ASCQ 26h/08h)", unavailable},
		{"sense/invalid_opcode.hex", Sense{Key: keyIllegalRequest, ASC: 0x20},
			"illegal request: invalid command operation code (sense key 5h, ASC/ASCQ 20h/00h)", unavailable},
		{"sense/unit_attention_luns_changed.hex", Sense{Key: keyUnitAttention, ASC: 0x3f, ASCQ: 0x0e},
			"unit attention: reported LUNs data has changed (sense key 6h, ASC/ASCQ 3Fh/0Eh)", retry},
		{"sense/medium_error_descriptor.hex", Sense{Key: keyMediumError, ASC: 0x11, Info: 0x123456, InfoValid: true, Descriptor: true},
			"medium error: unrecovered read error (sense key 3h, ASC/ASCQ 11h/00h)", real},
		{"sense/medium_error_fixed_valid.hex", Sense{Key: keyMediumError, ASC: 0x11, Info: 0x4000, InfoValid: true},
			"medium error: unrecovered read error (sense key 3h, ASC/ASCQ 11h/00h)", real},
		{"sense/deferred_write_error.hex", Sense{Key: keyMediumError, ASC: 0x0c, Deferred: true},
			"medium error: write error (deferred: reported for an earlier command) (sense key 3h, ASC/ASCQ 0Ch/00h)", real},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, ok := parseSense(fixture(t, tt.file))
			if !ok || got != tt.want {
				t.Errorf("parseSense = %+v, %v; want %+v", got, ok, tt.want)
			}
			if s := got.String(); s != tt.words {
				t.Errorf("String() = %q, want %q", s, tt.words)
			}
			if v := got.verdict(); v != tt.verdict {
				t.Errorf("verdict = %d, want %d", v, tt.verdict)
			}
		})
	}
}

// What the copy does with other answers: a copy aborted for a reason that
// is not reachability (the device failed, data under- or overrun) is real,
// and so is anything short or unknown.
func TestSenseVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		sense   []byte
		ok      bool
		verdict verdict
	}{
		{"copy aborted, third party device failure", unhex(t, "70 00 0a 00000000 0a 00000000 0d 01 00 000000"), true, real},
		{"copy aborted, data underrun", unhex(t, "70 00 0a 00000000 0a 00000000 0d 04 00 000000"), true, real},
		{"hardware error", unhex(t, "72 04 44 00 00000000"), true, real},
		{"data protect, write protected", unhex(t, "72 07 27 00 00000000"), true, real},
		{"illegal request, LBA out of range", unhex(t, "70 00 05 00000000 0a 00000000 21 00 00 000000"), true, real},
		{"invalid field in CDB (a LID4-only copy manager)", unhex(t, "72 05 24 00 00000000"), true, unavailable},
		{"fixed format cut before the ASC", unhex(t, "70 00 05 00000000 00"), true, real},
		{"no sense data", nil, false, real},
		{"unknown response code", unhex(t, "7f 00 05"), false, real},
	}
	for _, tt := range tests {
		s, ok := parseSense(tt.sense)
		if ok != tt.ok || s.verdict() != tt.verdict {
			t.Errorf("%s: parseSense ok=%v verdict=%d, want ok=%v verdict=%d", tt.name, ok, s.verdict(), tt.ok, tt.verdict)
		}
	}
}

// A failed command names the operation, the devices, the offsets and what
// went wrong; whether it is "unavailable" decides fallback.
func TestErrorWordsAndClassification(t *testing.T) {
	e := newError("EXTENDED COPY", "/dev/sda -> /dev/sdb", response{status: statusCheckCondition, driverStatus: driverSense,
		sense: fixture(t, "sense/lio_copy_aborted_unreachable.hex")}, nil)
	e.Offset, e.DstOffset, e.Len = 1<<20, 2<<20, 32<<20
	want := "EXTENDED COPY /dev/sda -> /dev/sdb at offset 1048576 (33554432 bytes to offset 2097152): copy aborted: copy target device not reachable (sense key Ah, ASC/ASCQ 0Dh/02h)"
	if e.Error() != want {
		t.Errorf("Error() = %q\nwant %q", e.Error(), want)
	}
	if err := e.classified(); !isUnavailable(err) {
		t.Errorf("unreachable copy target: %v is not unavailable", err)
	}
	if newError("INQUIRY", "/dev/sda", response{status: statusGood, driverStatus: driverSense}, nil) != nil {
		t.Error("GOOD status with DRIVER_SENSE is a failure")
	}
	h := newError("EXTENDED COPY", "/dev/sda", response{hostStatus: 0x03}, nil)
	if h == nil || isUnavailable(h.classified()) || !strings.Contains(h.Error(), "command timed out") {
		t.Errorf("host status DID_TIME_OUT: %v; want a real error saying it timed out", h)
	}
	b := newError("EXTENDED COPY", "/dev/sda", response{status: statusReservationConfl}, nil)
	if b == nil || isUnavailable(b.classified()) || !strings.Contains(b.Error(), "reservation conflict") {
		t.Errorf("RESERVATION CONFLICT: %v; want a real error", b)
	}
}
