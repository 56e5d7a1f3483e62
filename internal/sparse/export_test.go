package sparse

// ZeroOut is the write-zeroes seam, for tests that make it slow.
var ZeroOut = &zeroOut
