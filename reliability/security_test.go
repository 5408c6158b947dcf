package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/lb"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/server"
)

// The security scenario sends bad input through the balancer to real app servers over
// PostgreSQL: requests without a key or with the wrong scope, SQL-looking ids and collection
// names, oversized heads and bodies, forged X-Forwarded-For and Forwarded headers against the
// balancer's and the app servers' rate limits, 500 slowloris connections; then it reads every
// log the topology wrote and every body it answered, looking for the API keys it used.

// Clients whose real address must differ from the balancer's (the app servers trust
// 127.0.0.1/32, where the balancer runs, to report client addresses) dial from other
// loopback addresses.
const (
	spoofAddr   = "127.0.0.2"
	controlAddr = "127.0.0.3"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers: the balancers' log.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secRun reports the checks of the scenario to the running test or subtest t, and counts
// them in a tally that all share.
type secRun struct {
	t *testing.T
	*secTally
}

// secTally counts checks and keeps every answer for the leak check.
type secTally struct {
	mu      sync.Mutex // protects the fields below
	checks  int
	failed  int
	answers []string // status, headers and body of every answer, scanned for keys at the end
}

func newSecRun(t *testing.T) *secRun { return &secRun{t: t, secTally: &secTally{}} }

// in returns s reporting to the subtest t.
func (s *secRun) in(t *testing.T) *secRun { return &secRun{t: t, secTally: s.secTally} }

// record keeps an answer for the leak check.
func (s *secRun) record(status int, h http.Header, body []byte) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", status)
	for k, vs := range h {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.Write(body)
	s.mu.Lock()
	s.answers = append(s.answers, b.String())
	s.mu.Unlock()
}

// check counts one assertion; a false one fails the test with the message.
func (s *secRun) check(ok bool, format string, args ...any) bool {
	s.t.Helper()
	s.mu.Lock()
	s.checks++
	if !ok {
		s.failed++
	}
	s.mu.Unlock()
	if !ok {
		s.t.Errorf(format, args...)
	}
	return ok
}

// secAnswer is one HTTP answer.
type secAnswer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// problem returns the stable name of a problem+json answer ("" for another body).
func (a secAnswer) problem() string {
	var p struct{ Type string }
	if json.Unmarshal(a.body, &p) != nil {
		return ""
	}
	return strings.TrimPrefix(p.Type, server.ProblemTypePrefix)
}

func (a secAnswer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	b := a.body
	if len(b) > 300 {
		b = b[:300]
	}
	return fmt.Sprintf("%d %s", a.status, b)
}

// secClient returns an HTTP client whose connections come from local (a loopback address;
// "" for any), closed when t ends.
func secClient(t *testing.T, local string) *http.Client {
	d := &net.Dialer{Timeout: time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// do sends one request; hdr holds name, value pairs (a name may repeat). The answer is
// recorded for the leak check.
func (s *secRun) do(c *http.Client, method, u string, body []byte, hdr ...string) secAnswer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return secAnswer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return secAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	s.record(resp.StatusCode, resp.Header, b)
	return secAnswer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// raw sends bytes on a fresh connection to addr (host:port) and reads one answer, writing
// and reading at once so that an answer sent before the whole request was read is seen.
func (s *secRun) raw(addr string, req []byte, timeout time.Duration) secAnswer {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return secAnswer{err: err}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(req); werr <- err }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return secAnswer{err: fmt.Errorf("read: %w (write: %v)", err, <-werr)}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	conn.Close()
	<-werr
	s.record(resp.StatusCode, resp.Header, b)
	return secAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// secKeys are the API keys of the scenario: valid ones, configured hashed on the app servers
// and the balancer's admin API, and invalid ones. No log line and no answer may hold any.
type secKeys struct {
	rw, ro, docsOnly, admin string // read+write on all; read on all; read+write on docs; admin
	lbRead, lbWrite         string // the balancer's admin API
	wrong, short, unicode   string // unknown keys of valid, short and non-ASCII forms
	sqlish, long            string
}

func newSecKeys() secKeys {
	return secKeys{
		rw: "sk-rw-" + randHex(16), ro: "sk-ro-" + randHex(16), docsOnly: "sk-docs-" + randHex(16),
		admin: "sk-admin-" + randHex(16), lbRead: "lb-read-" + randHex(16), lbWrite: "lb-write-" + randHex(16),
		wrong: "sk-wrong-" + randHex(16), short: "s-" + randHex(6), unicode: "sk-ünïcødé-" + randHex(12),
		sqlish: "sk-' OR '1'='1' -- " + randHex(12), long: "sk-long-" + randHex(1024),
	}
}

func (k secKeys) all() []string {
	return []string{k.rw, k.ro, k.docsOnly, k.admin, k.lbRead, k.lbWrite, k.wrong, k.short, k.unicode, k.sqlish, k.long}
}

// needles returns what the leak check looks for: every key, and the random hex tail of each
// (24 characters), which no escaping of the key's other characters can hide.
func (k secKeys) needles() []string {
	var out []string
	for _, key := range k.all() {
		out = append(out, key)
		if tail := key[max(0, len(key)-24):]; len(key) > 24 && strings.Trim(tail, "0123456789abcdef") == "" {
			out = append(out, tail)
		}
	}
	return out
}

// config returns the keys: section of the app servers.
func (k secKeys) config() []map[string]any {
	hash := func(s string) string { h := server.HashKey(s); return hex.EncodeToString(h[:]) }
	return []map[string]any{
		{"id": "rw", "sha256": hash(k.rw), "scopes": []string{"read:*", "write:*"}},
		{"id": "ro", "sha256": hash(k.ro), "scopes": []string{"read:*"}},
		{"id": "docs-only", "sha256": hash(k.docsOnly), "scopes": []string{"read:docs", "write:docs"}},
		{"id": "ops", "sha256": hash(k.admin), "scopes": []string{"admin"}},
	}
}

func bearer(k string) []string { return []string{"Authorization", "Bearer " + k} }

// TestSecurity drives bad input and attacks through the balancer (see the comment at the
// top of the file) and checks that each is refused with the documented status, never a 5xx,
// that the database is unharmed, that the servers keep serving and that no key leaks.
func TestSecurity(t *testing.T) {
	c, db := sharedPG.get(t)
	keys := newSecKeys()
	lbLogs := &syncBuffer{}
	lbLog := slog.New(slog.NewJSONHandler(lbLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tp := startTopo(t, topoSpec{
		shards:      pgShards(c, db),
		collections: map[string]map[string]any{"docs": {}, "other": {}},
		extra: map[string]any{
			"keys": keys.config(),
			// Below the balancer's 64 KiB retry buffer, so that bodies it buffers and bodies
			// it streams are both refused by the app servers.
			"max_body_bytes": 32 << 10,
			// Below the balancer's 16 KiB, so that both tiers' head limits are reached.
			"max_header_bytes": 4 << 10,
		},
		lbConfig: func(cfg *lb.Config) { cfg.Logger = lbLog },
	})
	s := newSecRun(t)
	rw := secClient(t, "")
	base := tp.lbURL
	docURL := func(coll, id string) string { return base + "/v1/" + coll + "/" + url.PathEscape(id) }

	// Canaries: documents that every attack below must leave as they are.
	canaries := []string{"canary-1", "canary-2", "canary-3"}
	for i, id := range canaries {
		a := s.do(rw, "PUT", docURL("docs", id), fmt.Appendf(nil, `{"canary":true,"n":%d}`, i), bearer(keys.rw)...)
		if a.status != 201 {
			t.Fatalf("seed %s: %v", id, a)
		}
	}

	t.Run("auth", func(t *testing.T) { secAuth(t, s.in(t), tp, keys, lbLog) })
	accepted, refused := secIDs(t, s, tp, keys)
	t.Run("oversized", func(t *testing.T) { secOversized(t, s.in(t), tp, keys) })
	t.Run("spoofed-forwarding", func(t *testing.T) { secSpoof(t, s.in(t), tp, keys, lbLog) })
	slow := secSlowloris(t, s, tp, keys, lbLog)

	// The database is unharmed: read it directly, bypassing every Strata tier.
	store := openStore(t, c.Primary.Addr(), db)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	page, err := store.List(ctx, "docs", "", docstore.MaxLimit)
	if err != nil {
		t.Fatalf("list docs in the database: %v", err)
	}
	var got []string
	for _, d := range page.Docs {
		got = append(got, d.ID)
	}
	want := append(slices.Clone(canaries), accepted...)
	slices.Sort(got)
	slices.Sort(want)
	s.check(slices.Equal(got, want), "the database's docs collection holds %q, want the canaries and the accepted ids %q", got, want)
	for i, id := range canaries {
		d, err := store.Get(ctx, "docs", id)
		s.check(err == nil && d.Version == 1 && docValue(d.Body) == int64(i), "canary %s in the database: %v version %d body %s", id, err, d.Version, d.Body)
	}

	// No key in any log line or answer. The balancers' log is the one they write to: it
	// holds the admin change made in the auth part (by key name).
	s.check(strings.Contains(lbLogs.String(), `"msg":"lb: admin change","key":"ops-write"`), "the balancers' log lacks the admin change: %.500s", lbLogs.String())
	scanned := secNoKeyLeaks(t, s, keys, tp, lbLogs.String())

	s.mu.Lock()
	row := Row{Scenario: "bad input and security", Attempted: s.checks, Succeeded: s.checks - s.failed, Failed: s.failed,
		P99: slow.p99, Detect: slow.maxHeld, Recover: -1}
	row.Note = fmt.Sprintf("401 without/with unknown key, 403 wrong scope (app and lb admin); %d SQL-looking/unicode ids and bodies verbatim, %d ids refused 400, canaries intact; "+
		"oversized heads 431 (lb and app) and bodies 413, 5xx only as a known bug; forged XFF/Forwarded still limited (edge and app 429); "+
		"500 slowloris conns: %d normal requests (p99 column), max %s, all closed by the lb after %s (detect column; idle timeout %s); "+
		"no key in %d log bytes nor %d answers",
		len(accepted), refused, slow.normal, ms(slow.max), ms(slow.maxHeld), slow.idle, scanned, len(s.answers))
	s.mu.Unlock()
	addRow(t, row)
}

// secAuth: no key 401, unknown keys 401, wrong scope 403, on the document API, the app
// servers' admin endpoints (through the balancer) and the balancer's admin API.
func secAuth(t *testing.T, s *secRun, tp *topo, keys secKeys, lbLog *slog.Logger) {
	c := secClient(t, "")
	base := tp.lbURL
	doc := base + "/v1/docs/canary-1"
	other := base + "/v1/other/o1"
	is := func(a secAnswer, status int, problem, what string) {
		t.Helper()
		s.check(a.err == nil && a.status == status && a.problem() == problem, "%s: got %v, want %d %s", what, a, status, problem)
	}
	a := s.do(c, "GET", doc, nil)
	is(a, 401, server.ProblemUnauthorized, "GET without key")
	s.check(a.header.Get("WWW-Authenticate") != "", "401 without WWW-Authenticate")
	is(s.do(c, "PUT", doc, []byte(`{}`)), 401, server.ProblemUnauthorized, "PUT without key")
	is(s.do(c, "GET", doc, nil, "Authorization", "Bearer"), 401, server.ProblemUnauthorized, "empty Bearer")
	for _, k := range []string{keys.wrong, keys.short, keys.unicode, keys.sqlish, keys.long} {
		is(s.do(c, "GET", doc, nil, bearer(k)...), 401, server.ProblemUnauthorized, "GET with an unknown key")
		is(s.do(c, "GET", doc, nil, "X-API-Key", k), 401, server.ProblemUnauthorized, "X-API-Key with an unknown key")
		is(s.do(c, "DELETE", doc, nil, bearer(k)...), 401, server.ProblemUnauthorized, "DELETE with an unknown key")
	}
	// A valid key in another scheme is not a bearer token.
	is(s.do(c, "GET", doc, nil, "Authorization", "Basic "+keys.rw), 401, server.ProblemUnauthorized, "Basic scheme")

	// Scopes.
	if a := s.do(c, "GET", doc, nil, bearer(keys.ro)...); !s.check(a.status == 200, "read-only key reads: %v", a) {
		return
	}
	is(s.do(c, "PUT", doc, []byte(`{"n":9}`), bearer(keys.ro)...), 403, server.ProblemForbidden, "read-only key PUT")
	is(s.do(c, "PATCH", doc, []byte(`{"n":9}`), append(bearer(keys.ro), "Content-Type", "application/merge-patch+json")...), 403, server.ProblemForbidden, "read-only key PATCH")
	is(s.do(c, "DELETE", doc, nil, bearer(keys.ro)...), 403, server.ProblemForbidden, "read-only key DELETE")
	is(s.do(c, "GET", other, nil, bearer(keys.docsOnly)...), 403, server.ProblemForbidden, "docs-only key reads another collection")
	is(s.do(c, "PUT", other, []byte(`{}`), bearer(keys.docsOnly)...), 403, server.ProblemForbidden, "docs-only key writes another collection")
	is(s.do(c, "GET", doc, nil, bearer(keys.admin)...), 403, server.ProblemForbidden, "admin-only key reads a document")

	// The app servers' admin endpoints under /admin/ (through the balancer): admin scope.
	is(s.do(c, "GET", base+"/admin/metrics", nil), 401, server.ProblemUnauthorized, "app admin without key")
	is(s.do(c, "GET", base+"/admin/metrics", nil, bearer(keys.wrong)...), 401, server.ProblemUnauthorized, "app admin with an unknown key")
	for _, k := range []string{keys.rw, keys.ro, keys.docsOnly} {
		is(s.do(c, "GET", base+"/admin/metrics", nil, bearer(k)...), 403, server.ProblemForbidden, "app admin metrics without the admin scope")
		is(s.do(c, "POST", base+"/admin/reload", nil, bearer(k)...), 403, server.ProblemForbidden, "app admin reload without the admin scope")
		is(s.do(c, "GET", base+"/admin/debug/pprof/", nil, bearer(k)...), 403, server.ProblemForbidden, "app pprof without the admin scope")
	}
	a = s.do(c, "GET", base+"/admin/metrics", nil, bearer(keys.admin)...)
	s.check(a.status == 200 && bytes.Contains(a.body, []byte("strata_http_requests_total")), "app admin metrics with the admin key: %v", a)

	// The balancer's admin API: read and write keys.
	reg := prometheus.NewRegistry()
	h, err := tp.lb.AdminHandler([]lb.AdminKey{
		{Name: "ops-read", SHA256: server.HashKey(keys.lbRead)},
		{Name: "ops-write", SHA256: server.HashKey(keys.lbWrite), Write: true},
	}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second, ErrorLog: slog.NewLogLogger(lbLog.Handler(), slog.LevelError)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	admin := "http://" + ln.Addr().String()
	target := url.PathEscape(tp.apps[0].addr)
	code := func(a secAnswer, want int, what string) {
		t.Helper()
		s.check(a.err == nil && a.status == want, "lb admin %s: got %v, want %d", what, a, want)
	}
	code(s.do(c, "GET", admin+"/status", nil), 401, "status without key")
	code(s.do(c, "GET", admin+"/status", nil, bearer(keys.wrong)...), 401, "status with an unknown key")
	code(s.do(c, "GET", admin+"/status", nil, bearer(keys.rw)...), 401, "status with an app key")
	code(s.do(c, "POST", admin+"/backends/"+target+"/drain", nil, bearer(keys.lbRead)...), 403, "drain with a read key")
	code(s.do(c, "DELETE", admin+"/backends/"+target, nil, bearer(keys.lbRead)...), 403, "remove with a read key")
	code(s.do(c, "GET", admin+"/status", nil, bearer(keys.lbRead)...), 200, "status with a read key")
	code(s.do(c, "POST", admin+"/backends/"+target+"/drain", nil, bearer(keys.lbWrite)...), 200, "drain with a write key")
	code(s.do(c, "POST", admin+"/backends/"+target+"/undrain", nil, bearer(keys.lbWrite)...), 200, "undrain with a write key")
	s.check(!slices.ContainsFunc(tp.lb.Status(), func(b lb.BackendStatus) bool { return b.Drained }), "a backend is left drained: %+v", tp.lb.Status())
}

// secIDs stores SQL-looking, quoted and unicode ids verbatim, refuses what docstore.CheckID
// and docstore.CheckCollection forbid with 400, and returns the accepted ids.
func secIDs(t *testing.T, s *secRun, tp *topo, keys secKeys) (accepted []string, refusedN int) {
	c := secClient(t, "")
	auth := bearer(keys.rw)
	base := tp.lbURL
	docURL := func(coll, id string) string { return base + "/v1/" + coll + "/" + url.PathEscape(id) }
	accepted = []string{
		`x'; DROP TABLE docs;--`,
		`1 OR 1=1`,
		`' OR '1'='1`,
		`"; DELETE FROM docs; --`,
		`Robert'); DROP TABLE strata_meta;--`,
		`\'; SELECT pg_sleep(10);--`,
		`' UNION SELECT body FROM docs--`,
		`/* */ -- $1 ? %s %d`,
		`back\slash\\`,
		`"double" 'single' ` + "`back`",
		`%00 %27 %2F`,
		`../../etc/passwd`,
		`a/b/c`,
		`{"$ne":null}`,
		`<script>alert(1)</script>`,
		` `,
		`  spaces around  `,
		`日本語のキー`,
		`émoji 🚀 Ωmega`,
		"e\u0301 combining",
		"\U0001F600",
		strings.Repeat("é", docstore.MaxIDBytes/2), // 256 bytes: the longest id
	}
	refused := []string{
		"nul\x00byte",
		"line\nfeed",
		"carriage\rreturn",
		"tab\there",
		"del\x7f",
		"zero\u200bwidth",
		"no\u00a0break space",
		"bidi\u202eoverride",
		"bad utf-8 \xff\xfe",
		strings.Repeat("x", docstore.MaxIDBytes+1),
	}
	for i, id := range accepted {
		body, _ := json.Marshal(map[string]any{"id": id, "n": 100 + i})
		a := s.do(c, "PUT", docURL("docs", id), body, auth...)
		if !s.check(a.status == 201, "PUT id %q: %v", id, a) {
			continue
		}
		s.check(a.header.Get("Location") == "/v1/docs/"+url.PathEscape(id), "PUT id %q: Location %q", id, a.header.Get("Location"))
		a = s.do(c, "GET", docURL("docs", id), nil, auth...)
		var got struct {
			ID string `json:"id"`
			N  int    `json:"n"`
		}
		s.check(a.status == 200 && json.Unmarshal(a.body, &got) == nil && got.ID == id && got.N == 100+i, "GET id %q: %v", id, a)
	}
	// Raw (unescaped) SQL in the path, as a careless client sends it: the same documents.
	a := s.do(c, "GET", base+"/v1/docs/1%20OR%201=1", nil, auth...)
	s.check(a.status == 200 && bytes.Contains(a.body, []byte(`"1 OR 1=1"`)), "GET /v1/docs/1%%20OR%%201=1: %v", a)
	a = s.do(c, "GET", base+"/v1/docs/a/b/c", nil, auth...)
	s.check(a.status == 200 && bytes.Contains(a.body, []byte(`"a/b/c"`)), "GET /v1/docs/a/b/c (slashes unescaped): %v", a)

	// One batchGet (GetMany's query) and one listing (List's query) return them verbatim.
	ids := append([]string{"canary-1", "never-written'--"}, accepted...)
	body, _ := json.Marshal(map[string]any{"ids": ids})
	a = s.do(c, "POST", base+"/v1/docs:batchGet", body, auth...)
	var batch struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
		Missing []string `json:"missing"`
	}
	if s.check(a.status == 200 && json.Unmarshal(a.body, &batch) == nil, "batchGet: %v", a) {
		var found []string
		for _, it := range batch.Items {
			found = append(found, it.ID)
		}
		s.check(slices.Equal(found, append([]string{"canary-1"}, accepted...)) && slices.Equal(batch.Missing, []string{"never-written'--"}),
			"batchGet: items %q missing %q", found, batch.Missing)
	}
	a = s.do(c, "GET", base+"/v1/docs?limit=1000", nil, auth...)
	var list struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if s.check(a.status == 200 && json.Unmarshal(a.body, &list) == nil, "list: %v", a) {
		s.check(len(list.Items) == len(accepted)+3, "list: %d items, want %d", len(list.Items), len(accepted)+3)
		for _, id := range accepted {
			s.check(slices.ContainsFunc(list.Items, func(it struct {
				ID string `json:"id"`
			}) bool {
				return it.ID == id
			}), "list lacks id %q", id)
		}
	}

	// What the id grammar forbids is refused, for reads, writes and batches.
	for _, id := range refused {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			var body []byte
			if m == "PUT" {
				body = []byte(`{"n":1}`)
			}
			a := s.do(c, m, docURL("docs", id), body, auth...)
			s.check(a.status == 400 && a.problem() == server.ProblemInvalidPath, "%s id %q: %v, want 400 invalid-path", m, id, a)
		}
		if utf8.ValidString(id) { // json.Marshal would replace the invalid bytes
			body, _ := json.Marshal(map[string]any{"ids": []string{"canary-1", id}})
			a := s.do(c, "POST", base+"/v1/docs:batchGet", body, auth...)
			s.check(a.status == 400 && a.problem() == server.ProblemInvalidBody, "batchGet with id %q: %v, want 400 invalid-body", id, a)
		}
	}
	a = s.do(c, "GET", base+"/v1/docs/", nil, auth...)
	s.check(a.status == 400 && a.problem() == server.ProblemInvalidPath, "GET /v1/docs/ (empty id): %v, want 400 invalid-path", a)
	// Bad percent-encoding, sent raw (Go's client refuses to build such URLs): Go's server
	// refuses the request target with a plain 400 before the handler sees it.
	host := strings.TrimPrefix(base, "http://")
	for _, p := range []string{"/v1/docs/%zz", "/v1/docs/a%2", "/v1/docs/%"} {
		a := s.raw(host, fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", p, host, keys.rw), 5*time.Second)
		s.check(a.err == nil && a.status == 400, "GET %s: %v, want 400", p, a)
	}

	// Collection names: [a-z][a-z0-9_-]{0,62}; others are 400, unknown valid ones 404, and
	// the reserved idempotency collection is not reachable.
	for _, coll := range []string{`docs'; DROP TABLE docs;--`, `docs;`, `DOCS`, `1docs`, `docs%00`, `pg_catalog.pg_user`, `ドキュメント`, strings.Repeat("d", docstore.MaxCollectionBytes+1)} {
		a := s.do(c, "GET", base+"/v1/"+url.PathEscape(coll)+"/canary-1", nil, auth...)
		s.check(a.status == 400 && a.problem() == server.ProblemInvalidPath, "collection %q: %v, want 400 invalid-path", coll, a)
	}
	for _, coll := range []string{"pg_catalog", "strata_meta", server.IdempotencyCollection, "docs--"} {
		for _, m := range []string{"GET", "PUT"} {
			var body []byte
			if m == "PUT" {
				body = []byte(`{}`)
			}
			a := s.do(c, m, base+"/v1/"+coll+"/x", body, auth...)
			s.check(a.status == 404 && a.problem() == server.ProblemUnknownCollection, "%s collection %q: %v, want 404 unknown-collection", m, coll, a)
		}
	}

	// Query strings and bodies with SQL or what PostgreSQL's jsonb refuses: 4xx, never 5xx.
	for _, q := range []string{"limit=1;DROP%20TABLE%20docs", "limit=1%20OR%201=1", "cursor=%27%20OR%201=1--", "order=id;DROP", "limit=-1"} {
		a := s.do(c, "GET", base+"/v1/docs?"+q, nil, auth...)
		s.check(a.status == 400 && a.problem() == server.ProblemInvalidQuery, "list ?%s: %v, want 400 invalid-query", q, a)
	}
	for i, b := range []string{`{"q":"'; DROP TABLE docs;--","n":1}`, `{"nul":"a\u0000b"}`, `{"surrogate":"\ud800"}`, `{"deep":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`} {
		id := fmt.Sprintf("body-%d", i)
		a := s.do(c, "PUT", docURL("docs", id), []byte(b), auth...)
		t.Logf("PUT body %.40q...: %v", b, a)
		if a.status == 201 {
			accepted = append(accepted, id)
			g := s.do(c, "GET", docURL("docs", id), nil, auth...)
			var want, got any
			json.Unmarshal([]byte(b), &want)
			json.Unmarshal(g.body, &got)
			s.check(g.status == 200 && fmt.Sprint(got) == fmt.Sprint(want), "body %d read back: %v", i, g)
			continue
		}
		if s.check(a.status == 400 && a.problem() == server.ProblemInvalidBody, "PUT body %.60q: %v, want 201 or 400 invalid-body", b, a) {
			s.check(!bytes.Contains(a.body, []byte("SQLSTATE")) && !bytes.Contains(a.body, []byte("postgres")),
				"server: a 400 invalid-body answer shows the database's own error text to the client: %s", a.body)
		}
	}

	// The canaries are as they were, through the API.
	for i := range 3 {
		a := s.do(c, "GET", base+fmt.Sprintf("/v1/docs/canary-%d", i+1), nil, auth...)
		s.check(a.status == 200 && docValue(a.body) == int64(i) && a.header.Get("ETag") == `"1"`, "canary-%d after the SQL-looking input: %v etag %s", i+1, a, a.header.Get("ETag"))
	}
	return accepted, len(refused)
}

// serving checks that the balancer serves a read and every app server is up and healthy.
func (s *secRun) serving(tp *topo, keys secKeys, after string) {
	s.t.Helper()
	a := s.do(secClient(s.t, ""), "GET", tp.lbURL+"/v1/docs/canary-1", nil, bearer(keys.rw)...)
	s.check(a.status == 200, "after %s: read through the balancer: %v", after, a)
	for _, ap := range tp.apps {
		ap.mu.Lock()
		done := ap.done
		ap.mu.Unlock()
		select {
		case <-done:
			s.check(false, "after %s: app server %d exited: %s", after, ap.n, ap.logTail())
		default:
		}
		r, err := (&http.Client{Timeout: time.Second}).Get("http://" + ap.addr + "/readyz")
		if err == nil {
			r.Body.Close()
		}
		s.check(err == nil && r.StatusCode == 200, "after %s: app server %d /readyz: %v", after, ap.n, err)
	}
}

// secOversized sends heads and bodies beyond the balancer's and the app servers' limits.
func secOversized(t *testing.T, s *secRun, tp *topo, keys secKeys) {
	host := strings.TrimPrefix(tp.lbURL, "http://")
	head := func(method, target string, extra ...string) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", method, target, host, keys.rw)
		for _, e := range extra {
			b.WriteString(e + "\r\n")
		}
		b.WriteString("\r\n")
		return b.Bytes()
	}
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("X-H%d: v", i)
		}
		return out
	}
	heads := []struct {
		what string
		req  []byte
		want []int
	}{
		// The balancer's limit (16 KiB): one big field, many fields, a long target.
		{"20 KiB field", head("GET", "/v1/docs/canary-1", "X-Pad: "+strings.Repeat("a", 20<<10)), []int{431}},
		{"3000 fields", head("GET", "/v1/docs/canary-1", many(3000)...), []int{431}},
		{"20 KiB target", head("GET", "/v1/docs/"+strings.Repeat("b", 20<<10)), []int{431, 414}},
		{"20 KiB key", head("GET", "/v1/docs/canary-1", "X-API-Key: "+keys.wrong+strings.Repeat("c", 20<<10)), []int{431}},
		// Within the balancer's limit, beyond the app servers' 4 KiB. Go's server reads up to
		// 4 KiB beyond MaxHeaderBytes, and on a reused connection (the balancer's pool)
		// another 4 KiB before it starts counting: 12 KiB in all.
		{"14 KiB field", head("GET", "/v1/docs/canary-1", "X-Pad: "+strings.Repeat("d", 14<<10)), []int{431}},
		{"14 KiB target", head("GET", "/v1/docs/"+strings.Repeat("e", 14<<10)), []int{431, 414}},
	}
	for _, h := range heads {
		a := s.raw(host, h.req, 5*time.Second)
		s.check(a.err == nil && slices.Contains(h.want, a.status), "%s: %v, want %v", h.what, a, h.want)
	}
	s.serving(tp, keys, "oversized heads")

	// Bodies beyond the app servers' 32 KiB.
	jsonBody := func(n int) []byte {
		return append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("p"), n)...), `"}`...)
	}
	type bodyCase struct {
		what string
		req  []byte
		want int
		bug  bool // a 5xx here is the balancer's known bug, not the app server's
	}
	chunked := func(n int) []byte {
		var b bytes.Buffer
		b.Write(head("PUT", "/v1/docs/big-chunked", "Content-Type: application/json", "Transfer-Encoding: chunked"))
		body := jsonBody(n)
		for len(body) > 0 {
			k := min(len(body), 32<<10)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", k, body[:k])
			body = body[k:]
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}
	withBody := func(id string, n int) []byte {
		body := jsonBody(n)
		return append(head("PUT", "/v1/docs/"+id, "Content-Type: application/json", fmt.Sprintf("Content-Length: %d", len(body))), body...)
	}
	cases := []bodyCase{
		// Buffered by the balancer (up to 64 KiB) and refused by the app server.
		{"40 KiB body", withBody("big-1", 40<<10), 413, false},
		// Streamed by the balancer.
		{"100 KiB body", withBody("big-2", 100<<10), 413, true},
		{"4 MiB body", withBody("big-3", 4<<20), 413, true},
		{"4 MiB chunked body", chunked(4 << 20), 413, true},
	}
	for _, bc := range cases {
		a := s.raw(host, bc.req, 10*time.Second)
		t.Logf("%s: %v", bc.what, a)
		ok := a.err == nil && a.status == bc.want
		switch {
		case ok:
			s.check(true, "")
		case bc.bug && (a.err != nil || a.status >= 500):
			s.check(false, "lb: %s: got %v, want the app server's %d (a backend's early answer to a streamed body is relayed)", bc.what, a, bc.want)
		default:
			s.check(false, "%s: %v, want %d", bc.what, a, bc.want)
		}
		s.serving(tp, keys, bc.what)
	}
	// Nothing of them was stored.
	for _, id := range []string{"big-1", "big-2", "big-3", "big-chunked"} {
		a := s.do(secClient(t, ""), "GET", tp.lbURL+"/v1/docs/"+id, nil, bearer(keys.rw)...)
		s.check(a.status == 404, "oversized %s was stored: %v", id, a)
	}
}

// secSpoof checks that forged X-Forwarded-For and Forwarded headers from an untrusted client
// do not change its rate-limit key: at the balancer's edge limit, and at an app server's
// limit of anonymous requests, which trusts the balancer's X-Forwarded-For.
func secSpoof(t *testing.T, s *secRun, tp *topo, keys secKeys, lbLog *slog.Logger) {
	const burst, sent = 5, 14
	forge := func(i int) []string {
		return []string{
			"X-Forwarded-For", fmt.Sprintf("10.%d.0.1", i),
			"X-Forwarded-For", fmt.Sprintf("192.0.2.%d, 198.51.100.%d", i, i),
			"Forwarded", fmt.Sprintf(`for=203.0.113.%d;proto=https, for="[2001:db8::%x]"`, i, i),
			"X-Real-IP", fmt.Sprintf("10.1.1.%d", i),
			"True-Client-IP", fmt.Sprintf("10.2.2.%d", i),
		}
	}
	// run sends sent forged requests from spoofAddr, then three from controlAddr, and checks
	// that the forger got at most burst (+1 for a refill) answers before limited ones, and
	// the control client, another real address, was served.
	run := func(where, u string, auth []string, okStatus int, limited func(secAnswer) bool) {
		t.Helper()
		spoof, control := secClient(t, spoofAddr), secClient(t, controlAddr)
		served, refused := 0, 0
		for i := range sent {
			a := s.do(spoof, "GET", u, nil, append(slices.Clone(auth), forge(i)...)...)
			switch {
			case a.status == okStatus:
				served++
			case limited(a):
				refused++
			default:
				s.check(false, "%s: forged request %d: %v", where, i, a)
			}
		}
		s.check(served >= 1 && served <= burst+1 && refused == sent-served,
			"%s: a client rotating forged X-Forwarded-For/Forwarded was served %d times and limited %d times of %d (burst %d): the forged headers changed its rate-limit key",
			where, served, refused, sent, burst)
		for i := range 3 {
			a := s.do(control, "GET", u, nil, auth...)
			s.check(a.status == okStatus, "%s: control client request %d from another address: %v", where, i, a)
		}
	}

	// The edge: a second balancer in front of the same app servers, with a rate limit by
	// client address and no trusted proxy.
	cfg := lb.Config{
		RateLimit: lb.RateLimitConfig{Rate: ratelimit.PerMinute(burst), Burst: burst},
		Retry:     lb.RetryConfig{Attempts: 3, PerTryTimeout: 4 * time.Second},
		Logger:    lbLog,
	}
	for _, a := range tp.apps {
		cfg.Backends = append(cfg.Backends, lb.BackendConfig{Addr: a.addr})
	}
	_, edge := startLB(t, cfg)
	run("edge rate limit", edge+"/v1/docs/canary-1", bearer(keys.rw), 200, func(a secAnswer) bool { return a.status == 429 })

	// An app server's limit of anonymous requests, by client address as the balancer reports it.
	c, db := sharedPG.get(t)
	tpB := startTopo(t, topoSpec{
		apps:        1,
		shards:      pgShards(c, db),
		collections: map[string]map[string]any{"public": {"rate_limit": map[string]any{"rate": burst, "period": "1m", "burst": burst}}},
		anonymous:   []string{"read:public"},
		lbConfig:    func(cfg *lb.Config) { cfg.Logger = lbLog },
	})
	run("app rate limit (anonymous)", tpB.lbURL+"/v1/public/x", nil, 404, func(a secAnswer) bool {
		return a.status == 429 && a.problem() == server.ProblemRateLimited && a.header.Get("Retry-After") != ""
	})
	// Its log is scanned here: the topology's files go with this subtest.
	secNoKeyLeaks(t, s, keys, tpB, "")
}

// slowResult is what the slowloris part measured.
type slowResult struct {
	normal   int           // normal requests served while the connections were held
	max, p99 time.Duration // their latency
	maxHeld  time.Duration // the longest a held connection stayed open
	idle     time.Duration // the balancer's ClientIdleTimeout
}

// secSlowloris holds 500 connections to a balancer, half of them silent and half sending a
// partial head one byte at a time, plus one client that stops reading its answers, while
// another client is served; then checks that the balancer closes the held connections at its
// ClientIdleTimeout.
func secSlowloris(t *testing.T, s *secRun, tp *topo, keys secKeys, lbLog *slog.Logger) slowResult {
	const conns, idle = 500, 3 * time.Second
	res := slowResult{idle: idle}
	cfg := lb.Config{
		Retry:             lb.RetryConfig{Attempts: 3, PerTryTimeout: 4 * time.Second},
		ClientIdleTimeout: idle,
		Logger:            lbLog,
	}
	for _, a := range tp.apps {
		cfg.Backends = append(cfg.Backends, lb.BackendConfig{Addr: a.addr})
	}
	l, u := startLB(t, cfg)
	host := strings.TrimPrefix(u, "http://")
	c := secClient(t, "")
	// A large document for the client that does not read.
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("q"), 30<<10)...), `"}`...)
	if a := s.do(c, "PUT", u+"/v1/other/big", big, bearer(keys.rw)...); a.status != 201 {
		t.Fatalf("put big: %v", a)
	}

	type held struct {
		conn   net.Conn
		opened time.Time
		closed atomic.Int64 // ns after opened; 0 while open
	}
	hs := make([]*held, 0, conns)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, h := range hs {
			h.conn.Close()
		}
		wg.Wait()
	})
	partial := fmt.Sprintf("GET /v1/docs/canary-1 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Slow: ", host, keys.wrong)
	start := time.Now()
	for i := range conns {
		conn, err := net.DialTimeout("tcp", host, time.Second)
		if err != nil {
			t.Fatalf("slowloris connection %d: %v", i, err)
		}
		h := &held{conn: conn, opened: time.Now()}
		hs = append(hs, h)
		if i%2 == 1 {
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write([]byte(partial))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [512]byte
			for {
				n, err := conn.Read(b[:])
				if n > 0 {
					s.record(0, nil, b[:n])
				}
				if err != nil {
					h.closed.Store(max(int64(time.Since(h.opened)), 1))
					return
				}
			}
		}()
	}
	// The dripping half sends one more byte of its head every 200 ms until closed.
	stopDrip := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopDrip:
				return
			case <-tick.C:
			}
			for i, h := range hs {
				if i%2 == 1 && h.closed.Load() == 0 {
					h.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					h.conn.Write([]byte("a"))
				}
			}
		}
	}()
	defer close(stopDrip)

	// A client that sends 200 requests for the large document at once and reads nothing, on
	// a small receive buffer: the balancer's writes to it block.
	d := net.Dialer{Timeout: time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	reader, err := d.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var pipe bytes.Buffer
	for range 200 {
		fmt.Fprintf(&pipe, "GET /v1/other/big HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", host, keys.rw)
	}
	reader.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := reader.Write(pipe.Bytes()); err != nil {
		t.Fatalf("slow reader: %v", err)
	}
	sentAt := time.Now()

	// Meanwhile another client is served, with bounded latency.
	var lat []time.Duration
	var mu sync.Mutex
	var cw sync.WaitGroup
	// Done well before the held connections' idle timeout.
	end := time.Now().Add(1500 * time.Millisecond)
	if latest := start.Add(idle - 500*time.Millisecond); end.After(latest) {
		end = latest
	}
	for range 4 {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for time.Now().Before(end) {
				t0 := time.Now()
				a := s.do(c, "GET", u+"/v1/docs/canary-1", nil, bearer(keys.rw)...)
				d := time.Since(t0)
				s.check(a.status == 200, "normal request while 500 connections are held: %v", a)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	cw.Wait()
	stillHeld := 0
	for _, h := range hs {
		if h.closed.Load() == 0 {
			stillHeld++
		}
	}
	res.normal = len(lat)
	res.p99 = Percentile(lat, 0.99)
	res.max = slices.Max(lat)
	s.check(res.normal >= 20, "only %d normal requests in 1.5 s while the connections were held", res.normal)
	s.check(res.max < time.Second, "normal requests while 500 connections were held: max latency %s (p99 %s), want < 1 s", res.max, res.p99)
	s.check(stillHeld >= conns*9/10, "only %d of %d slowloris connections were still open during the normal requests: the test held nothing", stillHeld, conns)

	// The balancer closes every held connection at its ClientIdleTimeout (the bound of
	// reading a head), not before, and not much after.
	waitUntil(time.Until(start.Add(idle+4*time.Second)), func() bool {
		return !slices.ContainsFunc(hs, func(h *held) bool { return h.closed.Load() == 0 })
	})
	open, early, late := 0, 0, 0
	for _, h := range hs {
		d := time.Duration(h.closed.Load())
		switch {
		case d == 0:
			open++
		case d < idle-250*time.Millisecond:
			early++
		case d > idle+2*time.Second:
			late++
		}
		res.maxHeld = max(res.maxHeld, d)
	}
	s.check(open == 0 && early == 0 && late == 0, "of %d held connections, %d still open %s after the first, %d closed before the %s idle timeout, %d more than 2 s after it",
		conns, open, time.Since(start).Round(time.Millisecond), early, idle, late)

	// The client that stopped reading: its connection should be closed like the others,
	// and the backend request it holds given up.
	inflight := func() (n int64) {
		for _, b := range l.Status() {
			n += b.Inflight
		}
		return n
	}
	waitUntil(time.Until(sentAt.Add(idle+2*time.Second)), func() bool { return inflight() == 0 })
	s.check(inflight() == 0, "lb: a client that stops reading its answers still holds a backend request in flight %s after it sent its requests, "+
		"past the client write timeout (ClientIdleTimeout %s) + 2 s", time.Since(sentAt).Round(100*time.Millisecond), idle)
	reader.Close()
	s.check(waitUntil(3*time.Second, func() bool {
		return inflight() == 0
	}) >= 0, "the balancer still has requests in flight 3 s after the non-reading client left: %+v", l.Status())
	s.serving(tp, keys, "slowloris")
	return res
}

// secNoKeyLeaks reads the app servers' log files of tp and the balancers' log, and checks
// that no key of the scenario, valid or not, is in any of them nor in any answer recorded so
// far. It returns the number of log bytes scanned.
func secNoKeyLeaks(t *testing.T, s *secRun, keys secKeys, tp *topo, lbLogs string) int {
	t.Helper()
	var logs strings.Builder
	for _, a := range tp.apps {
		b, err := os.ReadFile(a.logPath)
		if err != nil {
			t.Fatalf("app server %d log: %v", a.n, err)
		}
		s.check(bytes.Contains(b, []byte(`"msg":"request"`)), "app server %d logged no request: is this its log? %.300s", a.n, b)
		logs.Write(b)
	}
	logs.WriteString(lbLogs)
	all := logs.String()
	s.mu.Lock()
	answers := strings.Join(s.answers, "\n")
	s.mu.Unlock()
	for _, k := range keys.needles() {
		if i := strings.Index(all, k); i >= 0 {
			s.check(false, "an API key (%.12s...) is in the logs: ...%s...", k, all[max(0, i-200):i])
		} else {
			s.check(true, "")
		}
		if i := strings.Index(answers, k); i >= 0 {
			s.check(false, "an API key (%.12s...) is in an answer: ...%s...", k, answers[max(0, i-200):i])
		} else {
			s.check(true, "")
		}
	}
	return len(all)
}
