package report

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	steps := []struct{ heading, md, want string }{
		{"## A", "## A\n\na1\n", "# Benchmark results\n\n## A\n\na1\n"},
		{"## B", "## B\n\nb1\n", "# Benchmark results\n\n## A\n\na1\n\n## B\n\nb1\n"},
		{"## A", "## A\n\na2\n", "# Benchmark results\n\n## A\n\na2\n\n## B\n\nb1\n"},
		{"## B", "## B\n\nb2\n", "# Benchmark results\n\n## A\n\na2\n\n## B\n\nb2\n"},
	}
	for i, s := range steps {
		if err := ReplaceSection(path, s.heading, s.md); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != s.want {
			t.Fatalf("step %d:\n%q\nwant\n%q", i, got, s.want)
		}
	}
}
