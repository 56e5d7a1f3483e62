package scsi

import (
	"bytes"
	"testing"
)

// LIO's Device Identification page: the NAA designator is the one that
// names the LU, the vendor ID and the port's identifier are not.
func TestNAADesignatorFromLIOsDeviceIDPage(t *testing.T) {
	ds, err := parseDesignators(fixture(t, "vpd/lio_device_id.hex"))
	if err != nil || len(ds) != 3 {
		t.Fatalf("parseDesignators = %d designators, %v; want 3", len(ds), err)
	}
	naa := naaOf(ds)
	if naa == nil || naa.String() != "6001405dc774a791ed34b7a89b104853" {
		t.Fatalf("naaOf = %v, want 6001405dc774a791ed34b7a89b104853", naa)
	}
	if ds[2].Association != 1 || ds[2].Type != 4 {
		t.Errorf("relative target port designator: %+v", ds[2])
	}
}

// A LU without an NAA designator (LIO without a unit serial has only the
// vendor ID) cannot be named: no designator, not an error.
func TestNoNAADesignator(t *testing.T) {
	page := unhex(t, "00 83 0018 02 01 00 14 4c494f2d4f524720 626c6b636f70792d 61000000")
	ds, err := parseDesignators(page)
	if err != nil || len(ds) != 1 || naaOf(ds) != nil {
		t.Errorf("parseDesignators = %+v, %v; naaOf = %v; want one vendor ID and no NAA", ds, err, naaOf(ds))
	}
	// A port's NAA (association 1) names the port, not the LU.
	page = unhex(t, "00 83 000c 01 13 00 08 5001020304050607")
	if ds, _ := parseDesignators(page); naaOf(ds) != nil {
		t.Errorf("a target port's NAA designator taken for the LU's")
	}
	// Of an NAA 5 and an NAA 6 designator of the LU, the longer.
	page = unhex(t, "00 83 0020 01 03 00 08 5001020304050607 01 03 00 10 6001405dc774a791ed34b7a89b104853")
	if ds, _ := parseDesignators(page); naaOf(ds) == nil || len(naaOf(ds).Value) != 16 {
		t.Errorf("naaOf did not pick the 16-byte designator: %v", naaOf(ds))
	}
	if _, err := parseDesignators(unhex(t, "00 80 0000")); err == nil {
		t.Error("a unit serial page parsed as device identification")
	}
	if _, err := parseDesignators(unhex(t, "00 83 0010 01 03 00 10 6001")); err == nil {
		t.Error("a designator running past the page parsed without error")
	}
}

// LIO's operating parameters, as the issue records them: 2 CSCDs, 1
// segment, list length 1024, segment length 256 MiB, codes 02h and E4h.
func TestOperatingParamsFromLIO(t *testing.T) {
	p, err := parseOperatingParams(fixture(t, "vpd/lio_operating_params.hex"))
	if err != nil {
		t.Fatal(err)
	}
	want := OperatingParams{MaxCSCDs: 2, MaxSegments: 1, MaxListLen: 1024, MaxSegmentLen: 256 << 20, MaxConcurrentCopies: 1, Descriptors: []uint8{0x02, 0xe4}}
	if p.MaxCSCDs != want.MaxCSCDs || p.MaxSegments != want.MaxSegments || p.MaxListLen != want.MaxListLen ||
		p.MaxSegmentLen != want.MaxSegmentLen || p.MaxConcurrentCopies != want.MaxConcurrentCopies || !bytes.Equal(p.Descriptors, want.Descriptors) {
		t.Errorf("parseOperatingParams = %+v, want %+v", p, want)
	}
	if !p.Implements(0xe4) || p.Implements(0x0a) {
		t.Errorf("Implements: E4h %v (want true), 0Ah %v (want false)", p.Implements(0xe4), p.Implements(0x0a))
	}
	if _, err := parseOperatingParams(make([]byte, 20)); err == nil {
		t.Error("20 bytes of operating parameters parsed without error")
	}
}

// The shape of blkcopy's commands follows the copy manager's limits: the
// 16-bit block count caps a segment whatever MAXIMUM SEGMENT LENGTH says,
// segments are whole MiB, and limits too small for one segment make the
// path unavailable.
func TestShapeFollowsOperatingParams(t *testing.T) {
	lio := &OperatingParams{MaxCSCDs: 2, MaxSegments: 1, MaxListLen: 1024, MaxSegmentLen: 256 << 20, Descriptors: []uint8{2, 0xe4}}
	tests := []struct {
		name      string
		p         *OperatingParams
		ncscd     int
		lbs       int64
		segBlocks int64
		segs      int
		err       string
	}{
		{"LIO, 512-byte blocks: 65535 blocks rounded to 31 MiB", lio, 2, 512, 31 * 2048, 1, ""},
		{"LIO, 4096-byte blocks: 65535 blocks rounded to 255 MiB", lio, 2, 4096, 255 * 256, 1, ""},
		{"a small segment length", &OperatingParams{MaxCSCDs: 2, MaxSegments: 4, MaxListLen: 1024, MaxSegmentLen: 64 << 10, Descriptors: []uint8{2, 0xe4}}, 2, 512, 128, 4, ""},
		{"no segment length limit, many segments", &OperatingParams{MaxCSCDs: 2, MaxSegments: 100, MaxListLen: 4096, Descriptors: []uint8{2, 0xe4}}, 1, 512, 31 * 2048, maxSegmentsPerCommand, ""},
		{"list too short", &OperatingParams{MaxCSCDs: 2, MaxSegments: 1, MaxListLen: 64, Descriptors: []uint8{2, 0xe4}}, 2, 512, 0, 0, "descriptor lists of 64 bytes"},
		{"one CSCD, two LUs", &OperatingParams{MaxCSCDs: 1, MaxSegments: 1, MaxListLen: 1024, Descriptors: []uint8{2, 0xe4}}, 2, 512, 0, 0, "takes 1 CSCD descriptors"},
		{"no E4h", &OperatingParams{MaxCSCDs: 2, MaxSegments: 1, MaxListLen: 1024, Descriptors: []uint8{2, 0xe0}}, 1, 512, 0, 0, "does not implement identification CSCD"},
		{"no parameters", nil, 1, 512, 0, 0, "does not report its copy operating parameters"},
	}
	for _, tt := range tests {
		sh, err := shapeOf("sdx", tt.p, tt.ncscd, tt.lbs)
		switch {
		case tt.err != "":
			if !isUnavailable(err) || !bytes.Contains([]byte(err.Error()), []byte(tt.err)) {
				t.Errorf("%s: err %v, want unavailable saying %q", tt.name, err, tt.err)
			}
		case err != nil || sh.segBlocks != tt.segBlocks || sh.segsPerCmd != tt.segs:
			t.Errorf("%s: shape %+v, %v; want %d blocks, %d segments", tt.name, sh, err, tt.segBlocks, tt.segs)
		}
	}
}
