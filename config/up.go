package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Up is the up: section, read by `strata up --config FILE`, which runs the whole diagram
// the file describes on one machine: one `strata app` process per app server, each
// configured by the app: section, with the balancer of the lb: section in front of them.
//
// When the file has an lb: section, its backends are where the app servers listen: up runs
// one app server on each backend's address, so that `strata lb` with the same file proxies
// to the same addresses. Without an lb: section, up runs AppServers app servers on free
// loopback ports behind a balancer with its defaults.
type Up struct {
	// AppServers is the number of app servers, 1..64. Default: one per lb.backends entry
	// when the file has an lb: section (AppServers must then equal their number), else 3.
	AppServers int `yaml:"app_servers"`
	// Admin is the address of up's admin API and dashboard. Default "127.0.0.1:8079", or
	// a free port when that one is taken.
	Admin string `yaml:"admin"`
}

// MaxUpAppServers bounds up.app_servers.
const MaxUpAppServers = 64

// upFields are the keys of the up: section.
var upFields = []string{"app_servers", "admin"}

// UnmarshalYAML decodes the up: section strictly (an unknown key is an error) and validates
// its values, each error naming its line.
func (u *Up) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return nil
		}
		return fmt.Errorf("line %d: up: want a mapping (app_servers, admin)", n.Line)
	}
	line := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !contains(upFields, k.Value) {
			return fmt.Errorf("line %d: up.%s: unknown field (known: %s)", k.Line, k.Value, strings.Join(upFields, ", "))
		}
		line[k.Value] = k.Line
	}
	type plain Up // without this method
	if err := n.Decode((*plain)(u)); err != nil {
		return err
	}
	if _, set := line["app_servers"]; set && (u.AppServers < 1 || u.AppServers > MaxUpAppServers) {
		return fmt.Errorf("line %d: up.app_servers: %d outside 1..%d", line["app_servers"], u.AppServers, MaxUpAppServers)
	}
	if u.Admin != "" {
		if err := validHostPort(u.Admin, true); err != nil {
			return fmt.Errorf("line %d: up.admin: %v", line["admin"], err)
		}
	}
	return nil
}

// CheckUp reports whether the file can drive `strata up --config`: it needs an app: section,
// and the sections must agree with one another (what Validate, which checks each section on
// its own, cannot see). Errors name the line they are about.
func (f *File) CheckUp() error {
	if f.App == nil {
		return errAt(f.at(), "app", "strata up --config needs an app: section (what every app server runs)")
	}
	if f.LB != nil && f.Up != nil && f.Up.AppServers != 0 && f.Up.AppServers != len(f.LB.Backends) {
		return errAt(f.at("up", "app_servers"), "up.app_servers",
			"%d, but lb.backends lists %d addresses: up runs one app server on each backend's address (drop app_servers, or list one backend per app server)",
			f.Up.AppServers, len(f.LB.Backends))
	}
	if f.LB != nil && len(f.LB.Backends) > MaxUpAppServers {
		return errAt(f.at("lb", "backends"), "lb.backends", "up runs one app server per backend, at most %d", MaxUpAppServers)
	}
	if f.App.TLS != nil {
		return errAt(f.at("app", "tls"), "app.tls", "up's balancer speaks plain HTTP to the app servers on this machine: remove tls for strata up")
	}
	return nil
}

// Line returns the line of the node at path (map keys and slice indices) in the parsed
// file, or of its nearest ancestor that exists; 0 for a File that was not parsed. It lets
// the tiers name a line in errors that only they can find (an address in use, say).
func (f *File) Line(path ...any) int { return f.at(path...) }
