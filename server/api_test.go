package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/server"
)

func TestDocumentLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) docstore.Store) {
		e := start(t, open(t), nil)
		r := e.do("PUT", "/v1/docs/a", writerKey, `{"n":1,"s":"x"}`, "Content-Type", "application/json")
		if r.status != http.StatusCreated || r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/v1/docs/a" {
			t.Fatalf("create: %d %v %s", r.status, r.header, r.body)
		}
		r = e.do("GET", "/v1/docs/a", readerKey, "")
		if r.status != 200 || r.header.Get("ETag") != `"1"` || r.json(t)["n"] != float64(1) {
			t.Fatalf("get: %d %v %s", r.status, r.header, r.body)
		}
		for h, want := range map[string]string{"X-Cache": "bypass", "Strata-Consistency": "strong", "Content-Type": "application/json"} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		if r.header.Get("Last-Modified") == "" || r.header.Get("X-Request-Id") == "" {
			t.Errorf("missing Last-Modified or X-Request-Id: %v", r.header)
		}
		if r := e.do("HEAD", "/v1/docs/a", readerKey, ""); r.status != 200 || len(r.body) != 0 || r.header.Get("ETag") != `"1"` {
			t.Fatalf("head: %d %v", r.status, r.header)
		}
		if r := e.do("PUT", "/v1/docs/a", writerKey, `{"n":2}`); r.status != 200 || r.header.Get("ETag") != `"2"` {
			t.Fatalf("replace: %d %s", r.status, r.body)
		}
		// Reads: If-None-Match gives 304 on the current version (weak comparison too);
		// If-Match gives 412 on an old one.
		if r := e.do("GET", "/v1/docs/a", readerKey, "", "If-None-Match", `"2"`); r.status != 304 || r.header.Get("ETag") != `"2"` {
			t.Fatalf("If-None-Match current: %d", r.status)
		}
		if r := e.do("GET", "/v1/docs/a", readerKey, "", "If-None-Match", `"7", W/"2"`); r.status != 304 {
			t.Fatalf("If-None-Match weak: %d", r.status)
		}
		if r := e.do("GET", "/v1/docs/a", readerKey, "", "If-None-Match", `"1"`); r.status != 200 {
			t.Fatalf("If-None-Match old: %d", r.status)
		}
		e.do("GET", "/v1/docs/a", readerKey, "", "If-Match", `"1"`).problem(t, 412, "precondition-failed")
		if r := e.do("GET", "/v1/docs/a", readerKey, "", "If-Match", `"2"`); r.status != 200 {
			t.Fatalf("If-Match current: %d", r.status)
		}
		// Conditional writes.
		e.do("PUT", "/v1/docs/a", writerKey, `{"n":3}`, "If-Match", `"1"`).problem(t, 412, "precondition-failed")
		e.do("PUT", "/v1/docs/a", writerKey, `{"n":3}`, "If-Match", `W/"2"`).problem(t, 412, "precondition-failed")
		if r := e.do("PUT", "/v1/docs/a", writerKey, `{"n":3}`, "If-Match", `"2"`); r.status != 200 || r.header.Get("ETag") != `"3"` {
			t.Fatalf("If-Match put: %d %s", r.status, r.body)
		}
		if r := e.do("PUT", "/v1/docs/a", writerKey, `{"n":4}`, "If-Match", `*`); r.status != 200 || r.header.Get("ETag") != `"4"` {
			t.Fatalf("If-Match * put: %d %s", r.status, r.body)
		}
		e.do("PUT", "/v1/docs/a", writerKey, `{"n":5}`, "If-None-Match", `*`).problem(t, 412, "precondition-failed")
		e.do("PUT", "/v1/docs/nope", writerKey, `{"n":5}`, "If-Match", `*`).problem(t, 412, "precondition-failed")
		if r := e.do("PUT", "/v1/docs/b", writerKey, `{"n":5}`, "If-None-Match", `*`); r.status != 201 {
			t.Fatalf("create-only: %d %s", r.status, r.body)
		}
		// Merge patch: members merge, null deletes, nested objects merge.
		e.do("PUT", "/v1/docs/p", writerKey, `{"a":1,"b":{"c":2,"d":3},"keep":true}`)
		r = e.do("PATCH", "/v1/docs/p", writerKey, `{"a":null,"b":{"c":20},"e":[1,2]}`, "Content-Type", "application/merge-patch+json")
		if r.status != 200 || r.header.Get("ETag") != `"2"` {
			t.Fatalf("patch: %d %s", r.status, r.body)
		}
		got := e.do("GET", "/v1/docs/p", readerKey, "").json(t)
		if fmt.Sprint(got) != "map[b:map[c:20 d:3] e:[1 2] keep:true]" {
			t.Fatalf("patched doc %v", got)
		}
		e.do("PATCH", "/v1/docs/p", writerKey, `{"a":1}`, "If-Match", `"1"`).problem(t, 412, "precondition-failed")
		if r := e.do("PATCH", "/v1/docs/p", writerKey, `{"a":1}`, "If-Match", `"2"`); r.status != 200 || r.header.Get("ETag") != `"3"` {
			t.Fatalf("conditional patch: %d %s", r.status, r.body)
		}
		e.do("PATCH", "/v1/docs/p", writerKey, `[1]`).problem(t, 400, "invalid-body")
		e.do("PATCH", "/v1/docs/p", writerKey, `{"a":`).problem(t, 400, "invalid-body")
		e.do("PATCH", "/v1/docs/missing", writerKey, `{"a":1}`).problem(t, 404, "not-found")
		e.do("PATCH", "/v1/docs/p", writerKey, `{"a":1}`, "Content-Type", "text/plain").problem(t, 415, "unsupported-media")
		// Delete: conditional, tombstone version as ETag, then 404.
		e.do("DELETE", "/v1/docs/a", writerKey, "", "If-Match", `"1"`).problem(t, 412, "precondition-failed")
		if r := e.do("DELETE", "/v1/docs/a", writerKey, "", "If-Match", `"4"`); r.status != 204 || r.header.Get("ETag") != `"5"` {
			t.Fatalf("delete: %d %v %s", r.status, r.header, r.body)
		}
		e.do("GET", "/v1/docs/a", readerKey, "").problem(t, 404, "not-found")
		e.do("DELETE", "/v1/docs/a", writerKey, "").problem(t, 404, "not-found")
		// Re-creation continues from the tombstone's version.
		if r := e.do("PUT", "/v1/docs/a", writerKey, `{}`); r.status != 200 || r.header.Get("ETag") != `"6"` {
			t.Fatalf("re-create: %d %v", r.status, r.header)
		}
		// Ids with slashes and spaces, percent-encoded.
		id := "dir/sub file?#%"
		if r := e.do("PUT", "/v1/docs/"+url.PathEscape(id), writerKey, `{"id":1}`); r.status != 201 {
			t.Fatalf("odd id: %d %s", r.status, r.body)
		}
		if r := e.do("GET", "/v1/docs/"+strings.ReplaceAll(url.PathEscape(id), "%2F", "/"), readerKey, ""); r.status != 200 {
			t.Fatalf("odd id with a raw slash: %d %s", r.status, r.body)
		}
	})
}

func TestListAndBatchGet(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) docstore.Store) {
		e := start(t, open(t), nil)
		for i := range 5 {
			e.do("PUT", fmt.Sprintf("/v1/docs/k%d", i), writerKey, fmt.Sprintf(`{"i":%d}`, i))
		}
		e.do("PUT", "/v1/eventual/other", adminKey, `{}`)
		var ids []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("listing does not end")
			}
			q := "/v1/docs?limit=2"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			r := e.do("GET", q, readerKey, "")
			if r.status != 200 || r.header.Get("X-Cache") != "bypass" {
				t.Fatalf("list: %d %s", r.status, r.body)
			}
			m := r.json(t)
			for _, it := range m["items"].([]any) {
				ids = append(ids, it.(map[string]any)["id"].(string))
			}
			next, _ := m["next"].(string)
			if next == "" {
				break
			}
			cursor = next
		}
		if fmt.Sprint(ids) != "[k0 k1 k2 k3 k4]" {
			t.Fatalf("listed %v", ids)
		}
		e.do("GET", "/v1/docs?limit=0", readerKey, "").problem(t, 400, "invalid-query")
		e.do("GET", "/v1/docs?limit=1001", readerKey, "").problem(t, 400, "invalid-query")
		e.do("GET", "/v1/docs?limit=x", readerKey, "").problem(t, 400, "invalid-query")
		e.do("GET", "/v1/docs?cursor=AAAA", readerKey, "").problem(t, 400, "invalid-query")
		e.do("GET", "/v1/docs?sort=id", readerKey, "").problem(t, 400, "invalid-query")
		e.do("GET", "/v1/docs?limit=1&limit=2", readerKey, "").problem(t, 400, "invalid-query")
		// A cursor of another collection is refused.
		other := docstore.EncodeCursor("eventual", "k1")
		e.do("GET", "/v1/docs?cursor="+other, readerKey, "").problem(t, 400, "invalid-query")

		r := e.do("POST", "/v1/docs:batchGet", readerKey, `{"ids":["k3","zz","k1","k3"]}`, "Content-Type", "application/json")
		if r.status != 200 {
			t.Fatalf("batchGet: %d %s", r.status, r.body)
		}
		m := r.json(t)
		var got []string
		for _, it := range m["items"].([]any) {
			got = append(got, it.(map[string]any)["id"].(string))
		}
		if fmt.Sprint(got, m["missing"]) != "[k3 k1] [zz]" {
			t.Fatalf("batchGet items %v missing %v", got, m["missing"])
		}
		e.do("POST", "/v1/docs:batchGet", readerKey, `{"ids":["a"],"extra":1}`).problem(t, 400, "invalid-body")
		e.do("POST", "/v1/docs:batchGet", readerKey, `{"ids":[]}`).problem(t, 400, "invalid-body")
		e.do("POST", "/v1/docs:batchGet", readerKey, `["a"]`).problem(t, 400, "invalid-body")
		e.do("POST", "/v1/docs:batchGet", readerKey, `{"ids":["a"]} x`).problem(t, 400, "invalid-body")
		e.do("POST", "/v1/docs:batchGet", readerKey, `{"ids":["a\u0000"]}`).problem(t, 400, "invalid-body")
		e.do("GET", "/v1/docs:batchGet", readerKey, "").problem(t, 405, "method-not-allowed")
	})
}

func TestLimitsAndFormats(t *testing.T) {
	e := start(t, openSQLite(t), func(c *server.Config, _ *server.Listen) { c.MaxBodyBytes = 1024 })
	big := `{"x":"` + strings.Repeat("a", 2000) + `"}`
	e.do("PUT", "/v1/docs/a", writerKey, big).problem(t, 413, "body-too-large")
	// A chunked body (no Content-Length) is cut off at the limit too.
	req, _ := http.NewRequest("PUT", e.base+"/v1/docs/a", struct{ *strings.Reader }{strings.NewReader(big)})
	req.Header.Set("Authorization", "Bearer "+writerKey)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Fatalf("chunked big body: %d", res.StatusCode)
	}
	// Header too large: 431 from http.Server.MaxHeaderBytes.
	if r := e.do("GET", "/v1/docs/a", readerKey, "", "X-Pad", strings.Repeat("p", 64<<10)); r.status != 431 {
		t.Fatalf("big header: %d", r.status)
	}
	e.do("PUT", "/v1/docs/a", writerKey, `[1,2]`).problem(t, 400, "invalid-body")
	e.do("PUT", "/v1/docs/a", writerKey, `"s"`).problem(t, 400, "invalid-body")
	e.do("PUT", "/v1/docs/a", writerKey, `{"a":`).problem(t, 400, "invalid-body")
	e.do("PUT", "/v1/docs/a", writerKey, `{}`, "Content-Type", "text/plain").problem(t, 415, "unsupported-media")
	e.do("GET", "/v1/Docs/a", readerKey, "").problem(t, 400, "invalid-path")
	e.do("GET", "/v1/docs/%00", readerKey, "").problem(t, 400, "invalid-path")
	e.do("GET", "/v1/docs/"+strings.Repeat("i", 300), readerKey, "").problem(t, 400, "invalid-path")
	e.do("GET", "/v1/unknown/a", adminKey, "").problem(t, 404, "unknown-collection")
	e.do("GET", "/v1/strata-idempotency/x", adminKey, "").problem(t, 404, "unknown-collection")
	e.do("GET", "/nowhere", "", "").problem(t, 404, "not-found")
	r := e.do("POST", "/v1/docs/a", writerKey, `{}`)
	r.problem(t, 405, "method-not-allowed")
	if r.header.Get("Allow") != "GET, HEAD, PUT, PATCH, DELETE" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	e.do("PUT", "/v1/docs/a", writerKey, `{}`, "If-Match", `"1`).problem(t, 400, "invalid-header")
	e.do("PUT", "/v1/docs/a", writerKey, `{}`, "If-None-Match", `"1"`).problem(t, 400, "invalid-header")
	e.do("PUT", "/v1/docs/a", writerKey, `{}`, "Idempotency-Key", "").problem(t, 400, "invalid-header")
	e.do("PUT", "/v1/docs/a", writerKey, `{}`, "Idempotency-Key", strings.Repeat("k", 256)).problem(t, 400, "invalid-header")
}

func TestSessionToken(t *testing.T) {
	e := start(t, openSQLite(t), nil)
	e.do("GET", "/v1/sess/a", writerKey, "", "Strata-Session", "garbage").problem(t, 400, "invalid-header")
	other, _ := replica.NewSigner([]byte("another key of sixteen bytes or more"))
	forged := other.Encode(replica.Token{}.Add(1, 99))
	e.do("GET", "/v1/sess/a", writerKey, "", "Strata-Session", forged).problem(t, 400, "invalid-header")
	// A valid token comes back (advanced by the request's writes, if the store records
	// them) on every response of a session collection, errors included.
	tok := e.signer.Encode(replica.Token{}.Add(3, 12345))
	r := e.do("PUT", "/v1/sess/a", writerKey, `{}`, "Strata-Session", tok)
	if r.status != 201 || r.header.Get("Strata-Consistency") != "session" {
		t.Fatalf("session put: %d %v", r.status, r.header)
	}
	back, err := e.signer.Decode(r.header.Get("Strata-Session"))
	if err != nil || back.For(3) < 12345 {
		t.Fatalf("returned token %q: %v %v", r.header.Get("Strata-Session"), back, err)
	}
	r = e.do("GET", "/v1/sess/missing", writerKey, "", "Strata-Session", tok)
	if r.status != 404 || r.header.Get("Strata-Session") == "" {
		t.Fatalf("session 404: %d %v", r.status, r.header)
	}
	// Strong and eventual collections carry no token.
	if r := e.do("PUT", "/v1/docs/a", writerKey, `{}`); r.header.Get("Strata-Session") != "" {
		t.Fatalf("strong collection returned a token")
	}
	if r := e.do("GET", "/v1/eventual/a", adminKey, ""); r.header.Get("Strata-Consistency") != "eventual" {
		t.Fatalf("eventual: %v", r.header)
	}
}
