// Command genman regenerates the committed man pages from the cobra
// commands: go run ./tools/genman man
package main

import (
	"fmt"
	"os"

	"github.com/blkcopy/blkcopy/cmd/manpage"
)

func main() {
	dir := "man"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
	if err := manpage.GenManPages(dir); err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
}
