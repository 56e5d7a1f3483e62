// Command blkcopy copies byte ranges between block devices and files,
// letting the storage do the copy when the kernel and device can.
package main

import (
	"os"

	"github.com/blkcopy/blkcopy/cmd"
)

func main() {
	os.Exit(cmd.Execute())
}
