package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid is wrapped by every error of Load, Parse and Validate.
var ErrInvalid = errors.New("config: invalid")

// File is the whole configuration file. Each tier reads its own section;
// a section that is absent is nil. New sections are new pointer fields.
type File struct {
	// LB configures `strata lb`. Default nil: no lb section.
	LB *LB `yaml:"lb"`
	// App configures `strata app`. Default nil: no app section.
	App *App `yaml:"app"`
	// Up configures `strata up --config` (see Up). Default nil: no up section.
	Up *Up `yaml:"up"`

	root *yaml.Node // the parsed document, for line numbers
}

// LB is the lb: section.
type LB struct {
	// Listen is the proxy's listen address. Default ":8080".
	Listen string `yaml:"listen"`
	// Backends are the upstream servers. At least one is required.
	Backends []Backend `yaml:"backends"`
	// Policy is one of p2c-ewma (default), round-robin,
	// weighted-round-robin, least-outstanding, consistent-hash, random.
	Policy string `yaml:"policy"`
	// Hash configures consistent-hash.
	Hash Hash `yaml:"hash"`
	// Health configures active health checks.
	Health Health `yaml:"health"`
	// Outlier configures passive outlier detection.
	Outlier Outlier `yaml:"outlier"`
	// Retry configures retries.
	Retry Retry `yaml:"retry"`
	// Hedge configures hedged GETs and HEADs.
	Hedge Hedge `yaml:"hedge"`
	// Limits holds connection limits and timeouts.
	Limits Limits `yaml:"limits"`
	// RateLimit configures edge rate limiting.
	RateLimit RateLimit `yaml:"rate_limit"`
	// TrustedProxies are CIDR prefixes (or single addresses) of proxies in
	// front of the balancer. Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ForwardedHeader is the header those proxies write: x-forwarded-for
	// (default) or forwarded.
	ForwardedHeader string `yaml:"forwarded_header"`
	// Admin configures the admin listener.
	Admin Admin `yaml:"admin"`
}

// Backend is one upstream server.
type Backend struct {
	// Address is "host:port". Required.
	Address string `yaml:"address"`
	// Weight is 1..1000. Default 1.
	Weight int `yaml:"weight"`
}

// Hash configures the consistent-hash policy.
type Hash struct {
	// Source is client-ip (default), header or cookie.
	Source string `yaml:"source"`
	// Name is the header or cookie name.
	Name string `yaml:"name"`
	// LoadFactor bounds a backend's load relative to the mean. Default 1.25.
	LoadFactor float64 `yaml:"load_factor"`
}

// Health configures active health checks.
type Health struct {
	// Disabled turns active checks off. Default false.
	Disabled bool `yaml:"disabled"`
	// Path is checked with GET. Default /readyz.
	Path string `yaml:"path"`
	// Interval between checks. Default 2s.
	Interval Duration `yaml:"interval"`
	// Timeout of a check. Default 1s.
	Timeout Duration `yaml:"timeout"`
	// Rise is the passes that make a backend healthy. Default 2.
	Rise int `yaml:"rise"`
	// Fall is the failures that make a backend unhealthy. Default 3.
	Fall int `yaml:"fall"`
}

// Outlier configures passive outlier detection.
type Outlier struct {
	// ConsecutiveFailures that eject a backend. Default 5; -1 disables.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// BaseEjection is the first ejection's length, doubled on each repeat.
	// Default 5s.
	BaseEjection Duration `yaml:"base_ejection"`
	// MaxEjection caps an ejection. Default 2m.
	MaxEjection Duration `yaml:"max_ejection"`
	// MaxEjectedPercent caps the share of backends ejected. Default 50.
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
}

// Retry configures retries.
type Retry struct {
	// Attempts is the most tries per request, 1..8. Default 3.
	Attempts int `yaml:"attempts"`
	// PerTryTimeout bounds the wait for a response head. Default 15s.
	PerTryTimeout Duration `yaml:"per_try_timeout"`
	// BudgetRatio is the share of requests that may be retried. Default 0.2.
	BudgetRatio float64 `yaml:"budget_ratio"`
	// BudgetMinPerSecond is a floor of retries per second. Default 10.
	BudgetMinPerSecond float64 `yaml:"budget_min_per_second"`
	// MaxBodyBytes is the largest body buffered for replay. Default 65536.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// OnStatus lists statuses retried like connection errors. Default none.
	OnStatus []int `yaml:"on_status"`
}

// Hedge configures hedged GETs and HEADs: one without a body that has not
// answered after the hedge delay is sent to a second backend as well, and
// the first answer wins. Off unless delay or percentile is set.
type Hedge struct {
	// Delay is a fixed hedge delay, below the per-try timeout. Default 0.
	Delay Duration `yaml:"delay"`
	// Percentile (50..99.9) hedges after that percentile of recent
	// response times instead. Default 0.
	Percentile float64 `yaml:"percentile"`
	// MinDelay is the floor of a percentile delay. Default 2ms.
	MinDelay Duration `yaml:"min_delay"`
	// MaxDelay is the cap of a percentile delay, below the per-try timeout.
	// Default 1s (or half the per-try timeout if less).
	MaxDelay Duration `yaml:"max_delay"`
	// BudgetRatio is the share of extra requests hedges may add, 0..1.
	// Default 0.1.
	BudgetRatio float64 `yaml:"budget_ratio"`
	// BudgetMinPerSecond is a floor of hedges per second. Default 1.
	BudgetMinPerSecond float64 `yaml:"budget_min_per_second"`
}

// validate checks the hedge: settings against lb.retry.per_try_timeout
// (perTry, 0 for its default).
func (h *Hedge) validate(at lineFunc, perTry time.Duration) error {
	if perTry == 0 {
		perTry = 15 * time.Second
	}
	field := func(name string) (int, string) { return at("lb", "hedge", name), "lb.hedge." + name }
	on := h.Delay != 0 || h.Percentile != 0
	if !on {
		for _, x := range []struct {
			name string
			set  bool
		}{
			{"min_delay", h.MinDelay != 0}, {"max_delay", h.MaxDelay != 0},
			{"budget_ratio", h.BudgetRatio != 0}, {"budget_min_per_second", h.BudgetMinPerSecond != 0},
		} {
			if x.set {
				line, f := field(x.name)
				return errAt(line, f, "hedging is off: set lb.hedge.delay or lb.hedge.percentile")
			}
		}
		return nil
	}
	if h.Delay != 0 {
		if h.Percentile != 0 {
			line, f := field("percentile")
			return errAt(line, f, "set lb.hedge.delay or lb.hedge.percentile, not both")
		}
		if h.MinDelay != 0 {
			line, f := field("min_delay")
			return errAt(line, f, "applies to lb.hedge.percentile only")
		}
		if h.MaxDelay != 0 {
			line, f := field("max_delay")
			return errAt(line, f, "applies to lb.hedge.percentile only")
		}
		if h.Delay.D() >= perTry {
			line, f := field("delay")
			return errAt(line, f, "%v is not below the per-try timeout %v", h.Delay.D(), perTry)
		}
	} else {
		if !(h.Percentile >= 50 && h.Percentile <= 99.9) {
			line, f := field("percentile")
			return errAt(line, f, "%v outside 50..99.9", h.Percentile)
		}
		maxDelay := h.MaxDelay.D()
		if maxDelay == 0 {
			maxDelay = min(time.Second, perTry/2)
		} else if maxDelay >= perTry {
			line, f := field("max_delay")
			return errAt(line, f, "%v is not below the per-try timeout %v", maxDelay, perTry)
		}
		minDelay := h.MinDelay.D()
		if minDelay == 0 {
			minDelay = 2 * time.Millisecond
		}
		if minDelay > maxDelay {
			line, f := field("min_delay")
			return errAt(line, f, "%v above the max delay %v", minDelay, maxDelay)
		}
	}
	if !(h.BudgetRatio >= 0 && h.BudgetRatio <= 1) {
		line, f := field("budget_ratio")
		return errAt(line, f, "%v outside 0..1", h.BudgetRatio)
	}
	if !(h.BudgetMinPerSecond >= 0 && h.BudgetMinPerSecond <= 1e6) {
		line, f := field("budget_min_per_second")
		return errAt(line, f, "%v outside 0..1000000", h.BudgetMinPerSecond)
	}
	return nil
}

// Limits holds connection limits and timeouts.
type Limits struct {
	// MaxConnsPerBackend caps connections per backend. Default 0: none.
	MaxConnsPerBackend int `yaml:"max_conns_per_backend"`
	// MaxPendingPerBackend caps requests waiting for a connection. Default 0.
	MaxPendingPerBackend int `yaml:"max_pending_per_backend"`
	// MaxIdlePerBackend caps idle connections per backend. Default 256.
	MaxIdlePerBackend int `yaml:"max_idle_per_backend"`
	// IdleTimeout closes idle backend connections. Default 30s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ConnectTimeout bounds a backend dial. Default 2s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// ClientIdleTimeout closes idle client connections. Default 75s.
	ClientIdleTimeout Duration `yaml:"client_idle_timeout"`
	// ClientWriteTimeout gives up on a client that reads nothing of its answer for this
	// long. Default 30s, or ClientIdleTimeout if that is less.
	ClientWriteTimeout Duration `yaml:"client_write_timeout"`
	// MaxHeaderBytes is the largest message head. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ShutdownTimeout bounds a graceful shutdown. Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// RateLimit configures edge rate limiting.
type RateLimit struct {
	// Rate is the sustained requests per Period per key. Default 0: off.
	Rate int `yaml:"rate"`
	// Period of Rate. Default 1s.
	Period Duration `yaml:"period"`
	// Burst is the bucket size. Default Rate.
	Burst int `yaml:"burst"`
	// Header keys requests by an API key header; without it (or when a
	// request lacks it) requests are keyed by client address.
	Header string `yaml:"header"`
}

// Admin configures the admin listener: status, metrics and backend changes.
type Admin struct {
	// Listen is the admin address. Default "": no admin listener.
	Listen string `yaml:"listen"`
	// Keys are the accepted API keys, stored hashed.
	Keys []AdminKey `yaml:"keys"`
}

// AdminKey is one admin API key.
type AdminKey struct {
	// Name identifies the key in logs. Required.
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the key. Required.
	SHA256 string `yaml:"sha256"`
	// Role is read (status and metrics) or write (also backend changes).
	// Default read.
	Role string `yaml:"role"`
}

// Duration is a time.Duration written as "1.5s", "200ms" or "2m".
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a string like \"2s\"", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: invalid duration %q", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// maxFileSize bounds a configuration file.
const maxFileSize = 1 << 20

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	file, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return file, nil
}

// Parse parses and validates a configuration document. Unknown fields are
// errors; every error names the line it is about.
func Parse(data []byte) (*File, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrInvalid, maxFileSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	f := &File{root: &root}
	if len(root.Content) == 0 {
		return f, nil // empty file
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		return nil, fmt.Errorf("%w: %s", ErrInvalid, msg)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Validate checks the values of every section present.
func (f *File) Validate() error {
	if f.LB != nil {
		if err := f.LB.validate(f.at); err != nil {
			return err
		}
	}
	if f.App != nil {
		if err := f.App.validate(f.at); err != nil {
			return err
		}
	}
	if f.Up != nil {
		// The up: section is read with the others: check what ties them together too.
		return f.CheckUp()
	}
	return nil
}

// at returns the line of the node at path (map keys and slice indices), or
// of its nearest existing ancestor; 0 without a parsed document.
func (f *File) at(path ...any) int {
	if f.root == nil || len(f.root.Content) == 0 {
		return 0
	}
	n := f.root.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						line = n.Content[i].Line
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

type lineFunc func(path ...any) int

func errAt(line int, field, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if line > 0 {
		return fmt.Errorf("%w: line %d: %s: %s", ErrInvalid, line, field, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, msg)
}

// Policies lists the lb policies.
var Policies = []string{"p2c-ewma", "round-robin", "weighted-round-robin", "least-outstanding", "consistent-hash", "random"}

func (c *LB) validate(at lineFunc) error {
	if c.Listen != "" {
		if err := validHostPort(c.Listen, true); err != nil {
			return errAt(at("lb", "listen"), "lb.listen", "%v", err)
		}
	}
	if len(c.Backends) == 0 {
		return errAt(at("lb", "backends"), "lb.backends", "at least one backend is required")
	}
	seen := map[string]int{}
	for i, b := range c.Backends {
		field := fmt.Sprintf("lb.backends[%d]", i)
		if err := validHostPort(b.Address, false); err != nil {
			return errAt(at("lb", "backends", i, "address"), field+".address", "%v", err)
		}
		if j, dup := seen[b.Address]; dup {
			return errAt(at("lb", "backends", i, "address"), field+".address", "duplicate of lb.backends[%d]", j)
		}
		seen[b.Address] = i
		if b.Weight < 0 || b.Weight > 1000 {
			return errAt(at("lb", "backends", i, "weight"), field+".weight", "%d outside 1..1000", b.Weight)
		}
	}
	if err := c.Hedge.validate(at, c.Retry.PerTryTimeout.D()); err != nil {
		return err
	}
	if c.Policy != "" && !contains(Policies, c.Policy) {
		return errAt(at("lb", "policy"), "lb.policy", "unknown policy %q (one of %s)", c.Policy, strings.Join(Policies, ", "))
	}
	switch c.Hash.Source {
	case "", "client-ip":
	case "header", "cookie":
		if c.Hash.Name == "" {
			return errAt(at("lb", "hash", "name"), "lb.hash.name", "required for source %q", c.Hash.Source)
		}
	default:
		return errAt(at("lb", "hash", "source"), "lb.hash.source", "unknown source %q (client-ip, header or cookie)", c.Hash.Source)
	}
	if c.Hash.LoadFactor != 0 && c.Hash.LoadFactor < 1 {
		return errAt(at("lb", "hash", "load_factor"), "lb.hash.load_factor", "%v below 1", c.Hash.LoadFactor)
	}
	if p := c.Health.Path; p != "" && (p[0] != '/' || strings.ContainsAny(p, " \t\r\n")) {
		return errAt(at("lb", "health", "path"), "lb.health.path", "%q is not an absolute path", p)
	}
	for _, x := range []struct {
		v    int
		lo   int
		hi   int
		path []any
	}{
		{c.Health.Rise, 0, 100, []any{"health", "rise"}},
		{c.Health.Fall, 0, 100, []any{"health", "fall"}},
		{c.Outlier.ConsecutiveFailures, -1, 1000, []any{"outlier", "consecutive_failures"}},
		{c.Outlier.MaxEjectedPercent, 0, 100, []any{"outlier", "max_ejected_percent"}},
		{c.Retry.Attempts, 0, 8, []any{"retry", "attempts"}},
		{c.Retry.MaxBodyBytes, 0, 64 << 20, []any{"retry", "max_body_bytes"}},
		{c.Limits.MaxConnsPerBackend, 0, 1 << 20, []any{"limits", "max_conns_per_backend"}},
		{c.Limits.MaxPendingPerBackend, 0, 1 << 20, []any{"limits", "max_pending_per_backend"}},
		{c.Limits.MaxIdlePerBackend, 0, 1 << 20, []any{"limits", "max_idle_per_backend"}},
		{c.Limits.MaxHeaderBytes, 0, 1 << 20, []any{"limits", "max_header_bytes"}},
		{c.RateLimit.Rate, 0, 1 << 30, []any{"rate_limit", "rate"}},
		{c.RateLimit.Burst, 0, 1 << 30, []any{"rate_limit", "burst"}},
	} {
		if x.v < x.lo || x.v > x.hi {
			path := append([]any{"lb"}, x.path...)
			return errAt(at(path...), dotted(path), "%d outside %d..%d", x.v, x.lo, x.hi)
		}
	}
	if m := c.Limits.MaxHeaderBytes; m != 0 && m < 1024 {
		return errAt(at("lb", "limits", "max_header_bytes"), "lb.limits.max_header_bytes", "%d below 1024", m)
	}
	if c.Retry.BudgetRatio < 0 || c.Retry.BudgetRatio > 10 {
		return errAt(at("lb", "retry", "budget_ratio"), "lb.retry.budget_ratio", "%v outside 0..10", c.Retry.BudgetRatio)
	}
	if c.Retry.BudgetMinPerSecond < 0 {
		return errAt(at("lb", "retry", "budget_min_per_second"), "lb.retry.budget_min_per_second", "negative")
	}
	for i, s := range c.Retry.OnStatus {
		if s < 500 || s > 599 {
			return errAt(at("lb", "retry", "on_status", i), fmt.Sprintf("lb.retry.on_status[%d]", i), "%d is not a 5xx status", s)
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			return errAt(at("lb", "trusted_proxies", i), fmt.Sprintf("lb.trusted_proxies[%d]", i), "%v", err)
		}
	}
	switch c.ForwardedHeader {
	case "", "x-forwarded-for", "forwarded":
	default:
		return errAt(at("lb", "forwarded_header"), "lb.forwarded_header", "%q is not x-forwarded-for or forwarded", c.ForwardedHeader)
	}
	if c.RateLimit.Header != "" && !validToken(c.RateLimit.Header) {
		return errAt(at("lb", "rate_limit", "header"), "lb.rate_limit.header", "%q is not a header name", c.RateLimit.Header)
	}
	if c.Hash.Source == "header" && !validToken(c.Hash.Name) {
		return errAt(at("lb", "hash", "name"), "lb.hash.name", "%q is not a header name", c.Hash.Name)
	}
	if c.Admin.Listen != "" {
		if err := validHostPort(c.Admin.Listen, true); err != nil {
			return errAt(at("lb", "admin", "listen"), "lb.admin.listen", "%v", err)
		}
		if len(c.Admin.Keys) == 0 {
			return errAt(at("lb", "admin"), "lb.admin.keys", "an admin listener needs at least one key")
		}
	}
	names := map[string]bool{}
	for i, k := range c.Admin.Keys {
		field := fmt.Sprintf("lb.admin.keys[%d]", i)
		if k.Name == "" || names[k.Name] {
			return errAt(at("lb", "admin", "keys", i), field+".name", "missing or duplicate name %q", k.Name)
		}
		names[k.Name] = true
		if len(k.SHA256) != 64 || !isHex(k.SHA256) {
			return errAt(at("lb", "admin", "keys", i, "sha256"), field+".sha256", "must be 64 hex digits (the SHA-256 of the key)")
		}
		if k.Role != "" && k.Role != "read" && k.Role != "write" {
			return errAt(at("lb", "admin", "keys", i, "role"), field+".role", "%q is not read or write", k.Role)
		}
	}
	return nil
}

// ParsePrefix parses a CIDR prefix or a single address (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid prefix %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func validHostPort(s string, hostOptional bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if host == "" && !hostOptional {
		return fmt.Errorf("%q has no host", s)
	}
	if strings.ContainsAny(host, " \t\r\n/@?#") {
		return fmt.Errorf("%q has an invalid host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || n == 0 && !hostOptional {
		return fmt.Errorf("%q has an invalid port", s)
	}
	return nil
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func dotted(path []any) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		fmt.Fprint(&b, p)
	}
	return b.String()
}
