package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// ErrInvalidConfig is returned by New for a configuration it cannot serve.
var ErrInvalidConfig = errors.New("dashboard: invalid config")

// Action is a chaos button. The page sends
//
//	POST {ChaosURL}/chaos/{Name}?target={Node.Target}
//	Authorization: Bearer <admin key>
//
// for the node whose button was pressed.
type Action struct {
	// Name is the path segment: lower-case letters, digits and dashes.
	Name string `json:"name"`
	// Label is the button's text.
	Label string `json:"label"`
	// Role is the Node.Role whose nodes get the button.
	Role string `json:"role"`
}

// DefaultActions returns the chaos actions of `strata up`: kill and restart
// an app server, stop and start a cache node, pause and resume a replica's
// replay, kill and restart a shard primary.
func DefaultActions() []Action {
	return []Action{
		{Name: "kill-app", Label: "Kill", Role: RoleApp},
		{Name: "restart-app", Label: "Restart", Role: RoleApp},
		{Name: "stop-cache", Label: "Stop", Role: RoleCache},
		{Name: "start-cache", Label: "Start", Role: RoleCache},
		{Name: "pause-replica", Label: "Pause", Role: RoleReplica},
		{Name: "resume-replica", Label: "Resume", Role: RoleReplica},
		{Name: "kill-primary", Label: "Kill", Role: RolePrimary},
		{Name: "restart-primary", Label: "Restart", Role: RolePrimary},
	}
}

// Config configures a Dashboard. The zero value of every field but Source
// is a sensible default.
type Config struct {
	// Source reports the topology. Required.
	Source Source
	// Interval is how often the Source is asked and a snapshot pushed to
	// the viewers. Default 1s.
	Interval time.Duration
	// Timeout bounds one Source.Snapshot call. Default Interval.
	Timeout time.Duration
	// History is how far back the chart reaches. Default 5 minutes.
	History time.Duration
	// Title is the page's heading. Default "Strata".
	Title string
	// ChaosURL is the base of the chaos endpoints: an absolute http(s)
	// URL or a path starting with "/", without the trailing "/chaos". Empty
	// (the default) hides the action buttons. A URL on another origin than
	// the page must allow it with CORS (the request carries an
	// Authorization header).
	ChaosURL string
	// Actions are the chaos buttons. Nil means DefaultActions().
	Actions []Action
	// Authorize, when not nil, is called for every request to the handler
	// (page, snapshot, stream); a non-nil error answers 403 with the
	// error's text. Nil lets everyone read, which suits a loopback
	// listener: the dashboard itself changes nothing (the chaos buttons
	// post to ChaosURL, which checks the admin key).
	Authorize func(*http.Request) error
	// MaxStreams bounds concurrent event streams; further ones get 503.
	// Default 64.
	MaxStreams int
	// Logger receives Source errors (once per change of error). Default
	// slog.Default().
	Logger *slog.Logger
}

//go:embed static
var staticFiles embed.FS

var actionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Dashboard is the live web page of the topology: an http.Handler serving,
// relative to where it is mounted,
//
//	GET /               the page (HTML, CSS and JS embedded, no network needed)
//	GET /static/...     the page's assets
//	GET /config.json    the page's settings (title, interval, chaos URL, actions)
//	GET /snapshot.json  the latest snapshot (see Snapshot)
//	GET /history.json   the chart's points: [{"t": unix ms, "rps": n, "p99_ms": n}]
//	GET /events         server-sent events: "history" once, then "snapshot" each Interval
//
// Mount it under a prefix with http.StripPrefix, e.g.
// mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d)). One
// goroutine asks the Source each Interval, however many pages are open;
// Close stops it and ends the open streams. A Dashboard is safe for
// concurrent use.
type Dashboard struct {
	cfg     Config
	mux     *http.ServeMux
	cfgJSON []byte
	csp     string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	streams chan struct{} // semaphore of open streams

	mu      sync.Mutex    // protects the fields below
	cur     []byte        // latest snapshot, JSON
	seq     uint64        // number of cur
	changed chan struct{} // closed when cur changes
	last    Topology      // last good topology
	lastErr string        // last Source error logged
	hist    []Point       // ring of chart points
	histAt  int           // next write position in hist once full
}

// Snapshot is the JSON of /snapshot.json and of each "snapshot" event: the
// Topology with its sequence number, time and the Source's error, if the
// last call failed (Tiers are then the last good ones).
type Snapshot struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Error string    `json:"error,omitempty"`
	Topology
}

// Point is one point of the chart.
type Point struct {
	// T is the time in Unix milliseconds.
	T int64 `json:"t"`
	// RPS is Topology.RPS, nil when unknown.
	RPS *float64 `json:"rps"`
	// P99MS is Topology.P99MS, nil when unknown.
	P99MS *float64 `json:"p99_ms"`
}

// New validates cfg, asks the Source for a first snapshot in the background
// and returns the Dashboard. Call Close to stop it.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Source == nil {
		return nil, fmt.Errorf("%w: nil Source", ErrInvalidConfig)
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.History < 0 || cfg.MaxStreams < 0 {
		return nil, fmt.Errorf("%w: negative duration or limit", ErrInvalidConfig)
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.Interval
	}
	if cfg.History == 0 {
		cfg.History = 5 * time.Minute
	}
	if cfg.Title == "" {
		cfg.Title = "Strata"
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Actions == nil {
		cfg.Actions = DefaultActions()
	}
	for _, a := range cfg.Actions {
		if !actionName.MatchString(a.Name) {
			return nil, fmt.Errorf("%w: action name %q: want lower-case letters, digits and dashes", ErrInvalidConfig, a.Name)
		}
	}
	csp := "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'"
	if cfg.ChaosURL != "" {
		u, err := url.Parse(cfg.ChaosURL)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: chaos URL: %w", ErrInvalidConfig, err)
		case u.Scheme == "" && u.Host == "" && len(u.Path) > 0 && u.Path[0] == '/' && u.RawQuery == "" && u.Fragment == "":
		case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil:
			csp += " " + u.Scheme + "://" + u.Host
		default:
			return nil, fmt.Errorf("%w: chaos URL %q: want an http(s) URL or a path starting with /, without query", ErrInvalidConfig, cfg.ChaosURL)
		}
	}
	csp += "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

	actions := []Action{}
	if cfg.ChaosURL != "" {
		actions = cfg.Actions
	}
	cj, err := json.Marshal(map[string]any{
		"title":       cfg.Title,
		"interval_ms": cfg.Interval.Milliseconds(),
		"history_ms":  cfg.History.Milliseconds(),
		"chaos_url":   cfg.ChaosURL,
		"actions":     actions,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}

	n := int(cfg.History / cfg.Interval)
	n = max(2, min(n, 7200))
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dashboard{
		cfg: cfg, cfgJSON: cj, csp: csp,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		streams: make(chan struct{}, cfg.MaxStreams),
		changed: make(chan struct{}),
		hist:    make([]Point, 0, n),
	}
	d.routes()
	d.wg.Add(1)
	go d.run()
	return d, nil
}

// Close stops asking the Source, ends the open event streams and waits for
// the dashboard's goroutine. It is safe to call more than once.
func (d *Dashboard) Close() error {
	d.once.Do(func() {
		d.cancel()
		close(d.done)
	})
	d.wg.Wait()
	return nil
}

func (d *Dashboard) run() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		d.poll()
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Dashboard) poll() {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.Timeout)
	topo, err := d.cfg.Source.Snapshot(ctx)
	cancel()
	if d.ctx.Err() != nil {
		return
	}
	d.publish(time.Now(), topo, err)
}

// publish makes topo (or the last good one and err) the current snapshot.
func (d *Dashboard) publish(now time.Time, topo Topology, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Snapshot{Seq: d.seq + 1, Time: now.UTC().Truncate(time.Millisecond)}
	if err != nil {
		s.Error = err.Error()
		s.Topology = d.last
		if s.Error != d.lastErr {
			d.cfg.Logger.Warn("dashboard: source failed", "err", err)
		}
		d.lastErr = s.Error
	} else {
		summarize(&topo)
		if topo.Tiers == nil {
			topo.Tiers = []Tier{}
		}
		s.Topology = topo
	}
	b, jerr := json.Marshal(s)
	switch {
	case jerr != nil: // a NaN or Inf figure
		s.Topology, s.Error = d.last, "dashboard: source returned a figure JSON cannot hold: "+jerr.Error()
		if b, jerr = json.Marshal(s); jerr != nil {
			return
		}
	case err == nil:
		d.last, d.lastErr = topo, ""
		d.addPoint(Point{T: now.UnixMilli(), RPS: topo.RPS, P99MS: topo.P99MS})
	}
	d.cur, d.seq = b, s.Seq
	close(d.changed)
	d.changed = make(chan struct{})
}

// addPoint appends p to the ring; d.mu is held.
func (d *Dashboard) addPoint(p Point) {
	if len(d.hist) < cap(d.hist) {
		d.hist = append(d.hist, p)
		return
	}
	d.hist[d.histAt] = p
	d.histAt = (d.histAt + 1) % len(d.hist)
}

// history returns the chart's points, oldest first; d.mu is held.
func (d *Dashboard) history() []Point {
	out := make([]Point, 0, len(d.hist))
	out = append(out, d.hist[d.histAt:]...)
	return append(out, d.hist[:d.histAt]...)
}

func (d *Dashboard) routes() {
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded folder is part of the build
	}
	files := http.FileServerFS(static)
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		http.ServeFileFS(w, r, static, "index.html")
	})
	m.Handle("GET /static/", http.StripPrefix("/static", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		if r.URL.Path == "/" || r.URL.Path == "/index.html" {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})))
	m.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
		d.json(w, d.cfgJSON)
	})
	m.HandleFunc("GET /snapshot.json", func(w http.ResponseWriter, r *http.Request) {
		b := d.current()
		if b == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "dashboard: no snapshot yet", http.StatusServiceUnavailable)
			return
		}
		d.json(w, b)
	})
	m.HandleFunc("GET /history.json", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		b, _ := json.Marshal(d.history())
		d.mu.Unlock()
		d.json(w, b)
	})
	m.HandleFunc("GET /events", d.events)
	d.mux = m
}

func (d *Dashboard) headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", d.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

func (d *Dashboard) json(w http.ResponseWriter, b []byte) {
	d.headers(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (d *Dashboard) current() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// ServeHTTP implements http.Handler.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.cfg.Authorize != nil {
		if err := d.cfg.Authorize(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	if r.URL.Path == "" {
		// Mounted with StripPrefix("/x") and asked for "/x": the page's
		// relative links need the trailing slash. The Location is
		// relative ("./x/"), so it cannot point at another host.
		w.Header().Set("Location", "./"+path.Base(requestPath(r))+"/")
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	d.mux.ServeHTTP(w, r)
}

func requestPath(r *http.Request) string {
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return "/"
	}
	return u.EscapedPath()
}

// streamWriteTimeout bounds one write to an event stream, so that a viewer
// that stopped reading does not hold a goroutine.
const streamWriteTimeout = 10 * time.Second

func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	select {
	case d.streams <- struct{}{}:
		defer func() { <-d.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "dashboard: too many event streams", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	d.headers(w)
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	d.mu.Lock()
	hist, _ := json.Marshal(d.history())
	d.mu.Unlock()
	retry := max(1000, 2*d.cfg.Interval.Milliseconds())
	if !d.write(rc, w, "retry: "+strconv.FormatInt(retry, 10)+"\nevent: history\ndata: ", hist) {
		return
	}
	var last uint64
	for {
		d.mu.Lock()
		cur, seq, changed := d.cur, d.seq, d.changed
		d.mu.Unlock()
		if seq != last && cur != nil {
			if !d.write(rc, w, "id: "+strconv.FormatUint(seq, 10)+"\nevent: snapshot\ndata: ", cur) {
				return
			}
			last = seq
		}
		select {
		case <-changed:
		case <-d.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// write sends one event (head, then data on one line) and flushes it.
func (d *Dashboard) write(rc *http.ResponseController, w http.ResponseWriter, head string, data []byte) bool {
	rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) // not every writer has deadlines
	buf := make([]byte, 0, len(head)+len(data)+2)
	buf = append(append(append(buf, head...), data...), "\n\n"...)
	if _, err := w.Write(buf); err != nil {
		return false
	}
	return rc.Flush() == nil
}
