package cmd

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// version is set at release build time with -ldflags "-X ...cmd.version=v1.2.3";
// otherwise the module version or VCS revision from the build info is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

func newCmdVersion(s *Streams) *cobra.Command {
	var sysroot string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print blkcopy's version, the Go version, and whether this kernel has copy offload",
		Long: `Print blkcopy's version, the Go version it was built with, and whether the
running kernel exposes the block copy offload attributes (copy_max_bytes,
copy_max_hw_bytes under /sys/block/*/queue). Mainline kernels do not yet:
then every block-device copy goes through the host.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			fmt.Fprintf(s.Out, "blkcopy %s\n", buildVersion())
			fmt.Fprintf(s.Out, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			has, err := sysfs.Sys{Root: sysroot}.KernelHasCopyOffload()
			switch {
			case err != nil:
				fmt.Fprintf(s.Out, "kernel copy offload: unknown (%v)\n", err)
			case has:
				fmt.Fprintln(s.Out, "kernel copy offload: yes (copy_max_bytes present)")
			default:
				fmt.Fprintln(s.Out, "kernel copy offload: no (no block device has queue/copy_max_bytes)")
			}
			return nil
		},
	}
	c.Flags().StringVar(&sysroot, "sysroot", "/", "read sysfs under this directory")
	return c
}
