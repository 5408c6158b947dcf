package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// MaxChaosEvents bounds the length of a chaos schedule (and so the number of phases).
const MaxChaosEvents = 100

// ChaosEvent is one fault injected at a point of a run.
type ChaosEvent struct {
	// At is the time since the start of the measured run (after prepopulation).
	At time.Duration `json:"-"`
	// Action names the fault, such as "kill-app", "stop-cache", "restart-app". The set of
	// actions is the chaos endpoint's; the load generator passes it through.
	Action string `json:"action"`
	// Target optionally names the node the action applies to, such as "2" for the second
	// app server. "" means the action's default.
	Target string `json:"target,omitempty"`
}

// String formats e the way ParseChaos reads it: "10s:kill-app:2".
func (e ChaosEvent) String() string {
	s := e.At.String() + ":" + e.Action
	if e.Target != "" {
		s += ":" + e.Target
	}
	return s
}

// ParseChaos parses a chaos schedule: comma-separated events AT:ACTION[:TARGET], where AT is
// a Go duration since the start of the run ("10s", "1m30s"), ACTION is made of lower-case
// letters, digits and '-', and TARGET of letters, digits, '.', '_' and '-'. For example
// "10s:kill-app:2,20s:stop-cache". Events come back sorted by time (stable for equal times).
// "" is an empty schedule. Errors wrap ErrInvalidConfig and name the offending event.
func ParseChaos(spec string) ([]ChaosEvent, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	parts := strings.Split(spec, ",")
	if len(parts) > MaxChaosEvents {
		return nil, fmt.Errorf("%w: chaos schedule has %d events, at most %d", ErrInvalidConfig, len(parts), MaxChaosEvents)
	}
	events := make([]ChaosEvent, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		f := strings.Split(p, ":")
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("%w: chaos event %q: want AT:ACTION or AT:ACTION:TARGET", ErrInvalidConfig, p)
		}
		at, err := time.ParseDuration(f[0])
		if err != nil {
			return nil, fmt.Errorf("%w: chaos event %q: time: %v", ErrInvalidConfig, p, err)
		}
		e := ChaosEvent{At: at, Action: f[1]}
		if len(f) == 3 {
			e.Target = f[2]
		}
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("%w: chaos event %q: %v", ErrInvalidConfig, p, err)
		}
		events = append(events, e)
	}
	slices.SortStableFunc(events, func(a, b ChaosEvent) int { return int(a.At - b.At) })
	return events, nil
}

func (e ChaosEvent) validate() error {
	if e.At < 0 {
		return errors.New("time must not be negative")
	}
	if e.Action == "" || !onlyChars(e.Action, "abcdefghijklmnopqrstuvwxyz0123456789-") {
		return fmt.Errorf("action %q: use lower-case letters, digits and '-'", e.Action)
	}
	if len(e.Action) > 64 || len(e.Target) > 64 {
		return errors.New("action and target are at most 64 characters")
	}
	if !onlyChars(e.Target, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") {
		return fmt.Errorf("target %q: use letters, digits, '.', '_' and '-'", e.Target)
	}
	return nil
}

func onlyChars(s, allowed string) bool {
	for _, c := range s {
		if !strings.ContainsRune(allowed, c) {
			return false
		}
	}
	return true
}

// ChaosRunner injects one fault into a running system. Run returns when the action has
// been carried out (or has failed); ctx bounds it.
type ChaosRunner interface {
	Run(ctx context.Context, action, target string) error
}

// ChaosRunnerFunc adapts a function to ChaosRunner.
type ChaosRunnerFunc func(ctx context.Context, action, target string) error

// Run calls f.
func (f ChaosRunnerFunc) Run(ctx context.Context, action, target string) error {
	return f(ctx, action, target)
}

var (
	_ ChaosRunner = ChaosRunnerFunc(nil)
	_ ChaosRunner = (*HTTPChaos)(nil)
)

// HTTPChaos is the ChaosRunner of `strata up`'s admin API. The contract the server side
// implements:
//
//	POST {URL}/chaos/{action}[?target={target}]
//	Authorization: Bearer {AdminKey}        (omitted when AdminKey is "")
//
// with an empty body. Any 2xx status means the action was carried out before the response
// was written (so that the phase after the event measures the fault, not its onset);
// anything else is a failure, and the first 512 bytes of the body (ideally problem+json)
// are quoted in the error, on one line. Suggested actions: kill-app, restart-app, pause-app (target: app
// server number), stop-cache, start-cache, kill-primary, promote-replica (target: shard).
type HTTPChaos struct {
	// URL is the admin base URL, such as "http://127.0.0.1:9090". Required.
	URL string
	// AdminKey is sent as a bearer token. "" sends none.
	AdminKey string
	// Client makes the call. nil means a client with a 30 s timeout.
	Client *http.Client
}

// Run posts the action.
func (h *HTTPChaos) Run(ctx context.Context, action, target string) error {
	u := strings.TrimSuffix(h.URL, "/") + "/chaos/" + url.PathEscape(action)
	if target != "" {
		u += "?target=" + url.QueryEscape(target)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChaos, err)
	}
	if h.AdminKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.AdminKey)
	}
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrChaos, action, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		msg := strings.Join(strings.Fields(string(body)), " ") // one line
		return fmt.Errorf("%w: %s %s: %s: %s", ErrChaos, action, target, resp.Status, msg)
	}
	return nil
}
