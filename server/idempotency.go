package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/strata-project/strata/docstore"
)

// IdempotencyCollection is the reserved collection that holds idempotency records. It lives
// in the document store, so records are durable and shared by every app server. Collection
// names beginning with "strata-" are reserved and never served by the API.
const IdempotencyCollection = "strata-idempotency"

// ReservedPrefix begins the names of collections the server keeps for itself.
const ReservedPrefix = "strata-"

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// idemRecord is the stored state of one idempotency key.
type idemRecord struct {
	// State is "pending" while the first request runs, "done" once its response is stored.
	State string `json:"state"`
	// FP is the fingerprint of the request (method, path, preconditions, body).
	FP string `json:"fp"`
	// At is when the state was written, in Unix milliseconds.
	At int64 `json:"at"`
	// Status, Header and Body are the stored response. The body is kept as bytes (base64
	// in JSON), since a store may normalise nested JSON.
	Status int               `json:"status,omitempty"`
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"body,omitempty"`
}

// replayedHeaders are the response fields an idempotent replay repeats.
var replayedHeaders = []string{"Content-Type", "ETag", "Last-Modified", "Location"}

// checkIdempotencyKey validates an Idempotency-Key: 1 to 255 printable ASCII characters.
func checkIdempotencyKey(k string) error {
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return fmt.Errorf("%w: Idempotency-Key of %d bytes (1..%d)", docstore.ErrInvalid, len(k), maxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return fmt.Errorf("%w: Idempotency-Key must be printable ASCII", docstore.ErrInvalid)
		}
	}
	return nil
}

// idemID returns the record id of a principal's idempotency key: keys of different
// principals never collide, and the key itself is not stored.
func idemID(principal, key string) string {
	h := sha256.New()
	h.Write([]byte(principal))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

// fingerprint identifies a request, so that a key reused for another request is caught.
func fingerprint(r *http.Request, body []byte) string {
	h := sha256.New()
	for _, s := range []string{r.Method, r.URL.EscapedPath(), r.Header.Get("If-Match"), r.Header.Get("If-None-Match")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// bufferedResponse is an http.ResponseWriter that keeps the response in memory.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// copyTo writes the buffered response to w.
func (b *bufferedResponse) copyTo(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range b.header {
		h[k] = v
	}
	w.WriteHeader(cmpStatus(b.status))
	w.Write(b.body.Bytes())
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

// idempotent runs a write at most once per (principal, Idempotency-Key): the first request
// claims the key with a conditional create of a pending record, runs, and stores its
// response; a retry with the same key and request gets the stored response (with
// Idempotent-Replayed: true); a retry while the first is still running gets 409; the same key
// with a different request gets 422. A response with status 5xx (outcome unknown, or nothing
// done) releases the key so that a retry runs again: PUT and merge patch bodies converge, and a
// DELETE retried after a lost response answers 404.
func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, p *Principal, key string, body []byte, run func(w http.ResponseWriter)) {
	ctx := r.Context()
	id := idemID(p.ID, key)
	fp := fingerprint(r, body)
	now := s.now()
	claim, _ := json.Marshal(idemRecord{State: "pending", FP: fp, At: now.UnixMilli()})
	var held int64
	for attempt := 0; held == 0; attempt++ {
		if attempt == 4 {
			writeProblem(w, r, http.StatusConflict, ProblemIdempotencyBusy, "the Idempotency-Key is contended; retry", s.cfg.RetryAfter)
			return
		}
		d, err := s.idem.PutIfVersion(ctx, IdempotencyCollection, id, claim, 0)
		if err == nil {
			held = d.Version
			break
		}
		if !errors.Is(err, docstore.ErrVersionConflict) {
			s.storeError(w, r, err)
			return
		}
		cur, err := s.idem.Get(ctx, IdempotencyCollection, id)
		if errors.Is(err, docstore.ErrNotFound) {
			continue
		}
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		var rec idemRecord
		if json.Unmarshal(cur.Body, &rec) != nil {
			rec = idemRecord{} // unreadable: treat as expired
		}
		age := now.Sub(time.UnixMilli(rec.At))
		expired := rec.State == "done" && age > s.cfg.IdempotencyTTL ||
			rec.State == "pending" && age > s.cfg.IdempotencyLease ||
			rec.State != "done" && rec.State != "pending"
		if expired {
			if d, err := s.idem.PutIfVersion(ctx, IdempotencyCollection, id, claim, cur.Version); err == nil {
				held = d.Version
			}
			continue
		}
		if rec.FP != fp {
			writeProblem(w, r, http.StatusUnprocessableEntity, ProblemIdempotencyReuse,
				"this Idempotency-Key was used for a different request", 0)
			return
		}
		if rec.State == "pending" {
			writeProblem(w, r, http.StatusConflict, ProblemIdempotencyBusy,
				"a request with this Idempotency-Key is in progress", s.cfg.RetryAfter)
			return
		}
		h := w.Header()
		for k, v := range rec.Header {
			h.Set(k, v)
		}
		h.Set("Idempotent-Replayed", "true")
		w.WriteHeader(cmpStatus(rec.Status))
		w.Write(rec.Body)
		return
	}

	buf := &bufferedResponse{header: w.Header()}
	run(buf)
	status := cmpStatus(buf.status)
	// The record is written even if the client has gone: its retry must find it.
	bg := context.WithoutCancel(ctx)
	if status >= 500 {
		if _, err := s.idem.DeleteIfVersion(bg, IdempotencyCollection, id, held); err != nil {
			s.log.WarnContext(ctx, "idempotency: release failed", "err", err)
		}
	} else {
		rec := idemRecord{State: "done", FP: fp, At: s.now().UnixMilli(), Status: status, Header: map[string]string{}}
		for _, k := range replayedHeaders {
			if v := buf.header.Get(k); v != "" {
				rec.Header[k] = v
			}
		}
		rec.Body = buf.body.Bytes()
		data, _ := json.Marshal(rec)
		if _, err := s.idem.PutIfVersion(bg, IdempotencyCollection, id, data, held); err != nil {
			s.log.WarnContext(ctx, "idempotency: storing the response failed", "err", err)
		}
	}
	buf.copyTo(w)
}
