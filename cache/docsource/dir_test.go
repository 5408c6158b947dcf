package docsource_test

import "os"

// exampleDir returns a fresh temporary directory for the example (examples have no t).
func exampleDir() string {
	d, err := os.MkdirTemp("", "docsource-example")
	if err != nil {
		panic(err)
	}
	return d
}
