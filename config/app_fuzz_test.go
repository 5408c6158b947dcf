package config

import (
	"errors"
	"testing"
)

func FuzzParseApp(f *testing.F) {
	f.Add("app:\n  store: {kind: sqlite, path: x}\n  collections: {users: {}}\n")
	f.Add("app:\n  store: {kind: postgres, shards: [{name: s1, primary: 'postgres://u:${PW}@h/db', replicas: [r]}]}\n  collections: {users: {strategy: write-through, consistency: eventual}}\n  cache: {kind: redis, addrs: [a:1]}\n")
	f.Add("app:\n  store: {kind: sqlite, path: x}\n  collections: {users: {strategy: write-behind}}\n  cache: {kind: memory}\n")
	f.Add("app:\n  keys: [{id: a, sha256: zz, scopes: [admin]}]\n")
	f.Fuzz(func(t *testing.T, doc string) {
		file, err := Parse([]byte(doc))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if file.App == nil {
			return
		}
		// Whatever Parse accepts validates again and keeps its promises.
		if err := file.Validate(); err != nil {
			t.Fatalf("accepted, then invalid: %v", err)
		}
		for name, c := range file.App.Collections {
			if c.Strategy == "write-behind" && (c.Consistency == "" || c.Consistency == "strong") {
				t.Fatalf("accepted strong write-behind for %s", name)
			}
		}
	})
}
