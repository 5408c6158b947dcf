package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium returns the path of a Chromium for browser tests: $STRATA_CHROMIUM, else Debian's
// /usr/bin/chromium, else chromium on PATH. Without one the test is skipped with the Debian
// package to install, unless STRATA_REQUIRE_SERVICES=1, in which case it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("STRATA_CHROMIUM"), "/usr/bin/chromium"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	msg := "testenv: chromium not found: install Debian's package (apt-get install -y chromium) or set STRATA_CHROMIUM"
	if RequireServices() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
