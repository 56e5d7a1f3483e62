package onload

// SwapSyscalls replaces the pread/pwrite seams for one test and returns the
// function that restores them.
func SwapSyscalls(r, w func(fd int, p []byte, off int64) (int, error)) (restore func()) {
	oldR, oldW := pread, pwrite
	if r != nil {
		pread = r
	}
	if w != nil {
		pwrite = w
	}
	return func() { pread, pwrite = oldR, oldW }
}

// Syscalls returns the real pread and pwrite, for wrappers to call.
func Syscalls() (r, w func(fd int, p []byte, off int64) (int, error)) { return pread, pwrite }
