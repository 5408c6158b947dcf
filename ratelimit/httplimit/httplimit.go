package httplimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/strata-project/strata/ratelimit"
)

// ErrConfig is wrapped by New for an unusable Config.
var ErrConfig = errors.New("httplimit: invalid config")

// Config configures a Middleware.
type Config struct {
	// Limiter decides each request. Required.
	Limiter ratelimit.Limiter
	// Key returns a request's key. Default (nil): the client address from
	// the socket, trusting no proxy (ByClientIP with a zero ClientIP).
	Key KeyFunc
	// Cost returns a request's cost. Default (nil): 1.
	Cost func(*http.Request) int
	// PolicyName names the policy in the RateLimit-Policy and RateLimit
	// fields. Printable ASCII only. Default (""): "default".
	PolicyName string
	// ProblemType is the "type" URI of the problem+json body of a 429.
	// Default (""): "about:blank".
	ProblemType string
	// OnError answers a request whose decision failed (a remote limiter
	// that could not decide). Default (nil): 503 with a problem+json body.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
}

// Releaser is implemented by limiters whose units are given back when the
// work is done, such as ratelimit.Concurrency and redislimit.Concurrency.
type Releaser interface {
	Release(key string, n int)
}

// Middleware applies a Limiter to HTTP requests. It is safe for concurrent
// use.
type Middleware struct {
	cfg          Config
	name         string // PolicyName as a structured-field string
	policyHeader string // the RateLimit-Policy value
	timed        bool   // the policy has a window: RateLimit carries t
}

// New returns a Middleware, or an error wrapping ErrConfig.
func New(cfg Config) (*Middleware, error) {
	if cfg.Limiter == nil {
		return nil, fmt.Errorf("%w: nil Limiter", ErrConfig)
	}
	if cfg.Key == nil {
		key, err := ByClientIP(ClientIP{})
		if err != nil {
			return nil, err
		}
		cfg.Key = key
	}
	if cfg.PolicyName == "" {
		cfg.PolicyName = "default"
	}
	if cfg.ProblemType == "" {
		cfg.ProblemType = "about:blank"
	}
	if cfg.OnError == nil {
		cfg.OnError = unavailable
	}
	for i := range len(cfg.PolicyName) {
		if c := cfg.PolicyName[i]; c < 0x20 || c > 0x7e {
			return nil, fmt.Errorf("%w: policy name %q is not printable ASCII", ErrConfig, cfg.PolicyName)
		}
	}
	m := &Middleware{cfg: cfg, name: sfString(cfg.PolicyName)}
	p := cfg.Limiter.Policy()
	m.policyHeader = m.name + ";q=" + strconv.Itoa(p.Quota)
	if p.Window > 0 {
		m.timed = true
		m.policyHeader += ";w=" + strconv.FormatInt(seconds(p.Window), 10)
	}
	return m, nil
}

// sfString formats s as an RFC 8941 structured-field string.
func sfString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 {
	return int64((max(d, 0) + time.Second - 1) / time.Second)
}

// Wrap returns next limited by m.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := m.cfg.Key(r)
		n := 1
		if m.cfg.Cost != nil {
			n = m.cfg.Cost(r)
		}
		d, err := m.cfg.Limiter.AllowN(r.Context(), key, n)
		tooBig := errors.Is(err, ratelimit.ErrCostExceedsLimit)
		if err != nil && !tooBig {
			m.cfg.OnError(w, r, err)
			return
		}
		h := w.Header()
		h.Set("RateLimit-Policy", m.policyHeader)
		rl := m.name + ";r=" + strconv.Itoa(d.Remaining)
		if m.timed {
			rl += ";t=" + strconv.FormatInt(seconds(d.ResetAfter), 10)
		}
		h.Set("RateLimit", rl)
		if d.Allowed {
			if rel, ok := m.cfg.Limiter.(Releaser); ok {
				defer rel.Release(key, n)
			}
			next.ServeHTTP(w, r)
			return
		}
		detail := "request cost exceeds the rate limit"
		if !tooBig {
			// Retry-After is at least 1: a limiter that cannot say when
			// (the concurrency limiter) still asks for a pause.
			retry := max(seconds(d.RetryAfter), 1)
			h.Set("Retry-After", strconv.FormatInt(retry, 10))
			detail = fmt.Sprintf("rate limit exceeded, retry in %d s", retry)
		}
		writeProblem(w, m.cfg.ProblemType, http.StatusTooManyRequests, detail)
	})
}

// writeProblem writes an RFC 9457 problem details body.
func writeProblem(w http.ResponseWriter, typ string, status int, detail string) {
	body, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{typ, http.StatusText(status), status, detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func unavailable(w http.ResponseWriter, _ *http.Request, _ error) {
	writeProblem(w, "about:blank", http.StatusServiceUnavailable, "rate limiter unavailable")
}

func errConfigf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}
