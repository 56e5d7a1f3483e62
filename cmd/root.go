// Package cmd holds blkcopy's cobra commands: flag parsing, wiring and
// printing. The work itself happens in internal packages.
package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Streams are the command's standard streams; tests replace them.
type Streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Execute runs blkcopy with os.Args and returns the exit status.
func Execute() int {
	s := &Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	return run(NewCmdRoot(s), s, os.Args[1:])
}

func run(root *cobra.Command, s *Streams, args []string) int {
	root.SetArgs(args)
	c, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if errors.Is(err, errAlreadyReported) {
		// Reported in full already (text and, with --json, the object).
		return code
	}
	if c != nil && jsonRequested(c) {
		// Scripts that asked for JSON get their failure as JSON too, on
		// stdout where they are already reading; stderr still gets the line
		// for humans watching the log.
		enc := json.NewEncoder(s.Out)
		_ = enc.Encode(struct {
			Error    string `json:"error"`
			ExitCode int    `json:"exit_code"`
		}{err.Error(), code})
	}
	fmt.Fprintf(s.Err, "blkcopy: %s\n", oneLine(err.Error()))
	return code
}

// errAlreadyReported is wrapped by failures whose message was printed
// already (interrupt reports), so Execute only sets the exit status.
var errAlreadyReported = errors.New("already reported")

func jsonRequested(c *cobra.Command) bool {
	f := c.Flags().Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// oneLine keeps error output greppable: one line per failure.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// NewCmdRoot builds the whole command tree.
func NewCmdRoot(s *Streams) *cobra.Command {
	root := newCmdCopy(s)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.SetIn(s.In)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(NewCmdLimits(s), newCmdVersion(s))
	return root
}

// exactArgs is cobra.ExactArgs with a usage-error exit status.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s needs %s, got %d argument(s) (see '%s --help')", c.CommandPath(), what, len(args), c.CommandPath())
		}
		return nil
	}
}
