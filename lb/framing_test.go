package lb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		err  error
		body bodyKind
		n    int64
	}{
		{"get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, bodyNone, -1},
		{"length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", nil, bodyLength, 5},
		{"same lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", nil, bodyLength, 5},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", nil, bodyChunked, -1},
		{"http/1.0 no host", "GET / HTTP/1.0\r\n\r\n", nil, bodyNone, -1},
		{"te and cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", ErrMalformed, 0, 0},
		{"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ErrMalformed, 0, 0},
		{"bad length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", ErrMalformed, 0, 0},
		{"gzip te", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrUnsupported, 0, 0},
		{"two te", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnsupported, 0, 0},
		{"no host", "GET / HTTP/1.1\r\n\r\n", ErrMalformed, 0, 0},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrMalformed, 0, 0},
		{"folding", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", ErrMalformed, 0, 0},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", ErrMalformed, 0, 0},
		{"version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", ErrMalformed, 0, 0},
		{"target space", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed, 0, 0},
		{"expect", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", ErrUnsupported, 0, 0},
		{"nul", "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", ErrMalformed, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h head
			err := parseRequest([]byte(tc.raw), &h)
			if !errors.Is(err, tc.err) || (tc.err != nil) != (err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && (h.body != tc.body || h.contentLength != tc.n) {
				t.Fatalf("body %v %d, want %v %d", h.body, h.contentLength, tc.body, tc.n)
			}
		})
	}
}

func TestParseResponseFraming(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		isHead    bool
		body      bodyKind
		closeConn bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false, bodyLength, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, bodyNone, false},
		{"HTTP/1.1 204 No Content\r\n\r\n", false, bodyNone, false},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, bodyNone, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, bodyChunked, false},
		{"HTTP/1.1 200 OK\r\n\r\n", false, bodyClose, true},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false, bodyLength, true},
		{"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, bodyLength, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false, bodyLength, false},
	} {
		var h head
		if err := parseResponse([]byte(tc.raw), &h, tc.isHead); err != nil {
			t.Fatalf("%q: %v", tc.raw, err)
		}
		if h.body != tc.body || h.closeConn != tc.closeConn {
			t.Errorf("%q head=%v: body %v close %v, want %v %v", tc.raw, tc.isHead, h.body, h.closeConn, tc.body, tc.closeConn)
		}
	}
}

func TestCopyChunked(t *testing.T) {
	in := "4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT"
	br := bufio.NewReader(strings.NewReader(in))
	var out strings.Builder
	bw := bufio.NewWriter(&out)
	if err := copyChunked(bw, br, true); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	if got := out.String(); got != "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n" {
		t.Fatalf("rechunked %q", got)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
		t.Fatalf("left %q", rest)
	}
	for _, bad := range []string{"zz\r\n", "4\r\nWikiX\r\n", "4\r\nWi", "\r\n"} {
		br := bufio.NewReader(strings.NewReader(bad))
		if err := copyChunked(bufio.NewWriter(io.Discard), br, true); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestFramingEndToEnd sends raw requests through the proxy to a backend
// that answers in various framings.
func TestFramingEndToEnd(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1-"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/nocontent":
			w.WriteHeader(204)
		case "/echo":
			fmt.Fprintf(w, "%s|%s|%d", r.Method, body, r.ContentLength)
		case "/close":
			w.Header().Set("Connection", "close")
			fmt.Fprint(w, "bye")
		default:
			fmt.Fprint(w, "ok")
		}
	})
	_, url := startLB(t, Config{Backends: []BackendConfig{{Addr: be.addr()}}, Health: HealthConfig{Disabled: true}})

	for _, tc := range []struct {
		name, raw string
		want      []string
		not       []string
	}{
		{"chunked to 1.1", "GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"Transfer-Encoding: chunked", "part1-", "part2", "0\r\n\r\n"}, nil},
		{"chunked to 1.0", "GET /chunked HTTP/1.0\r\n\r\n",
			[]string{"Connection: close", "part1-part2"}, []string{"Transfer-Encoding"}},
		{"chunked request", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
			[]string{"POST|abcde|-1"}, nil},
		{"expect continue", "PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz",
			[]string{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", "PUT|xyz|3"}, nil},
		{"204", "GET /nocontent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 204"}, []string{"Content-Length", "Transfer-Encoding"}},
		{"head", "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 200", "Content-Length: 2"}, []string{"\r\n\r\nok"}},
		{"pipelined", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"ok", "HTTP/1.1 200 OK", "Connection: close"}, nil},
		{"backend close", "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"bye"}, nil},
		{"smuggling", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			[]string{"HTTP/1.1 400"}, nil},
		{"too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 20000) + "\r\n\r\n",
			[]string{"HTTP/1.1 431"}, nil},
		{"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
			[]string{"Connection: keep-alive", "Connection: close"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rawExchange(t, url, tc.raw)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("response lacks %q:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("response has %q:\n%s", n, got)
				}
			}
		})
	}
}

// FuzzRequestHead checks that any head the proxy accepts is forwarded as a
// well-formed head that parses again, with the peer as the last
// X-Forwarded-For hop and no hop-by-hop field.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	f.Add("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=\"[2001:db8::1]\";proto=https, for=unknown\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Add("GET / HTTP/1.0\r\nX-Request-Id: abc\r\nX-Forwarded-Proto: https\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		if !strings.HasSuffix(raw, "\r\n\r\n") || strings.Index(raw, "\r\n\r\n") != len(raw)-4 {
			return
		}
		var h head
		if parseRequest([]byte(raw), &h) != nil {
			return
		}
		l := &LB{idPrefix: [16]byte([]byte("0123456789abcdef"))}
		cc := &clientConn{lb: l, peerIP: []byte("192.0.2.7"), peerNode: []byte("192.0.2.7"), trusted: true, local: []byte("127.0.0.1:80")}
		cc.req = h
		cc.buildRequestHead()
		var out head
		if err := parseRequest(cc.out, &out); err != nil {
			t.Fatalf("forwarded head does not parse: %v\n%q", err, cc.out)
		}
		var xff []string
		for _, hd := range out.headers {
			for _, hop := range []string{"Connection", "Keep-Alive", "TE", "Upgrade", "Proxy-Connection", "Trailer"} {
				if equalFold(hd.name, hop) {
					t.Fatalf("hop-by-hop %s forwarded", hop)
				}
			}
			if equalFold(hd.name, "X-Forwarded-For") {
				xff = append(xff, string(hd.value))
			}
		}
		if len(xff) != 1 || !strings.HasSuffix(xff[0], "192.0.2.7") {
			t.Fatalf("X-Forwarded-For %q", xff)
		}
		if out.body != h.body || out.contentLength != h.contentLength {
			t.Fatalf("framing changed: %v/%d -> %v/%d", h.body, h.contentLength, out.body, out.contentLength)
		}
	})
}
