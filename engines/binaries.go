package engines

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
)

// MissingBinaryError reports an engine binary that is not installed.
type MissingBinaryError struct {
	Binary  string // the executable looked for, e.g. "redis-server"
	Package string // the Debian package that provides it, e.g. "redis-server"
}

func (e *MissingBinaryError) Error() string {
	return fmt.Sprintf("engines: %s not found on PATH (install the Debian package %q: apt-get install -y %s)",
		e.Binary, e.Package, e.Package)
}

// debianPackage names the Debian package providing each binary the package uses.
var debianPackage = map[string]string{
	"redis-server":  "redis-server",
	"redis-cli":     "redis-tools",
	"memcached":     "memcached",
	"postgres":      "postgresql",
	"initdb":        "postgresql",
	"pg_basebackup": "postgresql",
}

// LookBinary finds a binary on PATH, or reports which Debian package provides it.
func LookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", &MissingBinaryError{Binary: name, Package: debianPackage[name]}
}

// postgresBinDir returns the directory that holds postgres, initdb and pg_basebackup: the newest
// /usr/lib/postgresql/N/bin that has all three, else the directory of postgres on PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if hasAll(d, "postgres", "initdb", "pg_basebackup") {
			return d, nil
		}
	}
	p, err := LookBinary("postgres")
	if err != nil {
		return "", err
	}
	d := filepath.Dir(p)
	if !hasAll(d, "initdb", "pg_basebackup") {
		return "", &MissingBinaryError{Binary: "initdb", Package: "postgresql"}
	}
	return d, nil
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func hasAll(dir string, names ...string) bool {
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// IsMissingBinary reports whether err says that an engine binary is not installed.
func IsMissingBinary(err error) bool {
	var m *MissingBinaryError
	return errors.As(err, &m)
}
