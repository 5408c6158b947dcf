package loadgen

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a minimal Strata app server: GET and PUT of JSON objects at /v1/{c}/{id}, an API
// key, X-Cache (miss on a document's first read, hit after, miss while the cache is
// "stopped"), 429 and 500 on every n-th request, and the chaos endpoint of strata up.
// It counts everything it answers.
type fake struct {
	key      string        // required API key ("" none)
	keyHdr   string        // header of the key: "Authorization" (Bearer) or another
	delay    time.Duration // per request
	every429 int
	every500 int

	mu                    sync.Mutex // protects the fields below
	stallFrom, stallUntil time.Time  // requests arriving in [from, until) wait until until
	docs                  map[string]bool
	read                  map[string]bool
	n                     int
	gets, puts            int
	status                map[int]int
	xcache                map[string]int
	inflight, maxInflight int
	killed, cacheDown     bool
	chaos                 []chaosCall
}

type chaosCall struct {
	at             time.Time
	action, target string
	auth           string
}

func newFake() *fake {
	return &fake{docs: map[string]bool{}, read: map[string]bool{}, status: map[int]int{}, xcache: map[string]int{}}
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if action, ok := strings.CutPrefix(r.URL.Path, "/chaos/"); ok && r.Method == http.MethodPost {
		f.mu.Lock()
		f.chaos = append(f.chaos, chaosCall{time.Now(), action, r.URL.Query().Get("target"), r.Header.Get("Authorization")})
		switch action {
		case "kill-app":
			f.killed = true
		case "restart-app":
			f.killed = false
		case "stop-cache":
			f.cacheDown = true
		case "fail":
			f.mu.Unlock()
			http.Error(w, `{"title":"no such node"}`, http.StatusNotFound)
			return
		}
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/v1/bench/")
	if !ok || id == "" || strings.Contains(id, "/") {
		http.NotFound(w, r)
		return
	}
	if f.key != "" {
		got := r.Header.Get(f.keyHdr)
		if f.keyHdr == "Authorization" {
			got, _ = strings.CutPrefix(got, "Bearer ")
		}
		if got != f.key {
			f.answer(w, http.StatusUnauthorized, "")
			return
		}
	}
	f.mu.Lock()
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	now := time.Now()
	wait := f.delay
	if !now.Before(f.stallFrom) && now.Before(f.stallUntil) {
		wait = max(wait, f.stallUntil.Sub(now))
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inflight--; f.mu.Unlock() }()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	var body map[string]any
	if r.Method == http.MethodPut {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			f.answer(w, http.StatusBadRequest, "")
			return
		}
	}
	f.mu.Lock()
	f.n++
	n := f.n
	killed, cacheDown := f.killed, f.cacheDown
	switch r.Method {
	case http.MethodGet:
		f.gets++
	case http.MethodPut:
		f.puts++
	}
	f.mu.Unlock()
	switch {
	case f.every429 > 0 && n%f.every429 == 0:
		f.answer(w, http.StatusTooManyRequests, "")
	case f.every500 > 0 && n%f.every500 == 0:
		f.answer(w, http.StatusInternalServerError, "")
	case killed:
		f.answer(w, http.StatusServiceUnavailable, "")
	case r.Method == http.MethodPut:
		f.mu.Lock()
		existed := f.docs[id]
		f.docs[id] = true
		f.mu.Unlock()
		if existed {
			f.answer(w, http.StatusOK, "")
		} else {
			f.answer(w, http.StatusCreated, "")
		}
	case r.Method == http.MethodGet:
		f.mu.Lock()
		exists, seen := f.docs[id], f.read[id]
		f.read[id] = true
		f.mu.Unlock()
		switch {
		case !exists:
			f.answer(w, http.StatusNotFound, "")
		case seen && !cacheDown:
			f.answer(w, http.StatusOK, "hit")
		default:
			f.answer(w, http.StatusOK, "miss")
		}
	default:
		f.answer(w, http.StatusMethodNotAllowed, "")
	}
}

func (f *fake) answer(w http.ResponseWriter, status int, xcache string) {
	f.mu.Lock()
	f.status[status]++
	if xcache != "" {
		f.xcache[xcache]++
	}
	f.mu.Unlock()
	if xcache != "" {
		w.Header().Set("X-Cache", xcache)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status == http.StatusOK {
		w.Write([]byte(`{"id":"x"}`))
	}
}

// inMemory is a transport that calls a handler directly, so that whole runs fit in a
// synctest bubble with fake time.
type inMemory struct{ h http.Handler }

func (t inMemory) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); t.h.ServeHTTP(rec, req) }()
	select {
	case <-done:
		return rec.Result(), nil
	case <-req.Context().Done():
		<-done // the handler watches the context too
		return nil, req.Context().Err()
	}
}

func memClient(h http.Handler) *http.Client { return &http.Client{Transport: inMemory{h}} }
