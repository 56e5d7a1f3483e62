package manpage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The committed man pages must be what the commands generate: a flag or
// help text changed without `go run ./tools/genman man` fails here.
func TestManPagesAreCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := GenManPages(dir); err != nil {
		t.Fatal(err)
	}
	generated, _ := filepath.Glob(filepath.Join(dir, "*.1"))
	committed, _ := filepath.Glob(filepath.Join("..", "..", "man", "*.1"))
	if len(generated) == 0 {
		t.Fatal("no man pages generated")
	}
	names := map[string]bool{}
	for _, g := range generated {
		name := filepath.Base(g)
		names[name] = true
		want, _ := os.ReadFile(g)
		got, err := os.ReadFile(filepath.Join("..", "..", "man", name))
		if err != nil {
			t.Errorf("man/%s is missing; run: go run ./tools/genman man", name)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("man/%s is stale; run: go run ./tools/genman man", name)
		}
	}
	for _, c := range committed {
		if !names[filepath.Base(c)] {
			t.Errorf("man/%s has no command any more; remove it", filepath.Base(c))
		}
	}
}

func TestManPagesDocumentExitStatusAndExamples(t *testing.T) {
	dir := t.TempDir()
	if err := GenManPages(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blkcopy.1", "blkcopy-limits.1"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range []string{".SH EXIT STATUS", ".SH EXAMPLES"} {
			if !strings.Contains(string(b), sec) {
				t.Errorf("%s has no %q section", name, sec)
			}
		}
	}
}
