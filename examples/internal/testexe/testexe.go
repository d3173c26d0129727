// Package testexe finds the programs the examples' tests drive (a browser,
// a proxy) where Debian's packages put them.
package testexe

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Find returns the path of the first of names found (a name on the PATH,
// or a path), or skips the test when there is none, unless the variable
// env is 1, as in CI: then the test fails.
func Find(t *testing.T, env string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	where := strings.Join(names, " or ")
	if os.Getenv(env) == "1" {
		t.Fatalf("none of %s, and %s=1", where, env)
	}
	t.Skipf("none of %s; %s=1 makes that a failure", where, env)
	return ""
}
