package cmd

import (
	"context"
	"errors"
	"fmt"
)

// Exit statuses are part of the contract with scripts (see the man page);
// never renumber them.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNoOffload   = 3
	ExitMismatch    = 4
	ExitInterrupted = 130
)

// usageError marks a mistake in the command line: exit 2, and the one-line
// reason is enough (no usage dump, which would bury it in scripts' logs).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError carries an explicit status for failures that are not plain
// runtime errors (offload unavailable, verify mismatch).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode maps an error to the documented exit status in one place.
func exitCode(err error) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	default:
		return ExitError
	}
}
