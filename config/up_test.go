package config

import (
	"errors"
	"strings"
	"testing"
)

const upApp = `app:
  store: {kind: sqlite, path: x.db}
  collections: {items: {}}
`

func TestUpSection(t *testing.T) {
	f, err := Parse([]byte("up:\n  app_servers: 5\n  admin: 127.0.0.1:9079\n" + upApp))
	if err != nil {
		t.Fatal(err)
	}
	if f.Up == nil || f.Up.AppServers != 5 || f.Up.Admin != "127.0.0.1:9079" {
		t.Fatalf("up = %+v", f.Up)
	}
	if err := f.CheckUp(); err != nil {
		t.Fatalf("CheckUp: %v", err)
	}
	if f, err := Parse([]byte(upApp)); err != nil || f.Up != nil || f.CheckUp() != nil {
		t.Fatalf("a file without an up section: %+v, %v", f, err)
	}
}

func TestUpErrorsCarryLines(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", "up:\n  app_servers: 2\n  shards: 4\n", "line 3: up.shards: unknown field"},
		{"too many", "up:\n  app_servers: 65\n", "line 2: up.app_servers: 65 outside 1..64"},
		{"zero", "up:\n  app_servers: 0\n", "line 2: up.app_servers: 0 outside"},
		{"not a number", "up:\n  app_servers: many\n", "line 2: cannot unmarshal"},
		{"admin", "up:\n  admin: nowhere\n", "line 2: up.admin:"},
		{"not a mapping", "up: 3\n", "line 1: up: want a mapping"},
	} {
		_, err := Parse([]byte(tc.doc))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckUp(t *testing.T) {
	lb := "lb:\n  backends:\n    - address: 127.0.0.1:9001\n    - address: 127.0.0.1:9002\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"no app section", "up:\n  app_servers: 2\n", "app: strata up --config needs an app: section"},
		{"count disagrees", "up:\n  app_servers: 3\n" + lb + upApp, "line 2: up.app_servers: 3, but lb.backends lists 2"},
		{"tls", lb + upApp + "  tls: {cert: c, key: k}\n", "line 8: app.tls"},
		{"count agrees", "up:\n  app_servers: 2\n" + lb + upApp, ""},
		{"count from backends", lb + upApp, ""},
	} {
		// Parse checks the up: section with the others (what strata config check reports);
		// CheckUp is also callable on its own.
		f, err := Parse([]byte(tc.doc))
		if err == nil {
			err = f.CheckUp()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLine(t *testing.T) {
	f, err := Parse([]byte("lb:\n  backends:\n    - address: 127.0.0.1:9001\n    - address: 127.0.0.1:9002\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Line("lb", "backends", 1, "address"); got != 4 {
		t.Fatalf("Line(lb.backends[1].address) = %d, want 4", got)
	}
	if got := (&File{}).Line("lb"); got != 0 {
		t.Fatalf("Line on an unparsed File = %d, want 0", got)
	}
}
