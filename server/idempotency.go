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
	// State is "pending" while the first request runs, "done" once its response is stored,
	// "unconfirmed" when the write is in the store but the shared cache did not take its
	// invalidation (the first answer was 503): Status, Header and Body are then the answer
	// the write would have had, replayed once Coll/ID at Version has been republished.
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
	// Coll, ID and Version name the unconfirmed write.
	Coll    string `json:"coll,omitempty"`
	ID      string `json:"id,omitempty"`
	Version int64  `json:"version,omitempty"`
}

// idemSlot carries, from a write handler to idempotent, what a retry needs to confirm an
// unconfirmed write instead of applying it again.
type idemSlot struct{ unconfirmed *idemRecord }

type idemSlotKey struct{}

// republisher is implemented by access paths whose writes can be unconfirmed (Cached).
type republisher interface {
	Republish(ctx context.Context, c, id string, version int64) error
}

// replayable keeps the response fields an idempotent replay repeats.
func replayable(h http.Header) map[string]string {
	out := map[string]string{}
	for _, k := range replayedHeaders {
		if v := h.Get(k); v != "" {
			out[k] = v
		}
	}
	return out
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
// with a different request gets 422. A write that reached the store but whose invalidation
// the shared cache did not take (503, UnconfirmedError) is never applied again: its record
// keeps the answer it would have had, and a retry republishes the invalidation and, once the
// cache takes it, replays that answer (or answers 503 again). Any other response with status
// 5xx (nothing done, or an outcome the server cannot know) releases the key so that a retry
// runs again: PUT and merge patch bodies converge, and a DELETE retried after a lost response
// answers 404.
//
// The record is a companion of the document written (docstore.CompanionID): it lives on the
// document's shard, so a keyed write depends on no shard but its document's.
func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, p *Principal, key, coll, docID string, body []byte, run func(w http.ResponseWriter, r *http.Request)) {
	ctx := r.Context()
	id := docstore.CompanionID(coll, docID, idemID(p.ID, key))
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
		finished := rec.State == "done" || rec.State == "unconfirmed"
		expired := finished && age > s.cfg.IdempotencyTTL ||
			rec.State == "pending" && age > s.cfg.IdempotencyLease ||
			!finished && rec.State != "pending"
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
		if rec.State == "unconfirmed" {
			if !s.confirm(w, r, cur, rec) {
				return
			}
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
	slot := &idemSlot{}
	run(buf, r.WithContext(context.WithValue(ctx, idemSlotKey{}, slot)))
	status := cmpStatus(buf.status)
	// The record is written even if the client has gone: its retry must find it.
	bg := context.WithoutCancel(ctx)
	if status >= 500 && slot.unconfirmed != nil {
		rec := *slot.unconfirmed
		rec.State, rec.FP, rec.At = "unconfirmed", fp, s.now().UnixMilli()
		data, _ := json.Marshal(rec)
		if _, err := s.idem.PutIfVersion(bg, IdempotencyCollection, id, data, held); err != nil {
			s.log.WarnContext(ctx, "idempotency: storing an unconfirmed write failed", "err", err)
		}
	} else if status >= 500 {
		if _, err := s.idem.DeleteIfVersion(bg, IdempotencyCollection, id, held); err != nil {
			s.log.WarnContext(ctx, "idempotency: release failed", "err", err)
		}
	} else {
		rec := idemRecord{State: "done", FP: fp, At: s.now().UnixMilli(), Status: status,
			Header: replayable(buf.header), Body: buf.body.Bytes()}
		data, _ := json.Marshal(rec)
		if _, err := s.idem.PutIfVersion(bg, IdempotencyCollection, id, data, held); err != nil {
			s.log.WarnContext(ctx, "idempotency: storing the response failed", "err", err)
		}
	}
	buf.copyTo(w)
}

// confirm republishes the invalidation of an unconfirmed write for its retry, and marks the
// record done once the cache took it. It reports whether the stored answer may be replayed;
// when not, it has answered (503, as the first attempt was).
func (s *Server) confirm(w http.ResponseWriter, r *http.Request, cur docstore.Doc, rec idemRecord) bool {
	col := s.collections[rec.Coll]
	if col != nil {
		if rp, ok := col.Access.(republisher); ok {
			if err := rp.Republish(r.Context(), rec.Coll, rec.ID, rec.Version); err != nil {
				s.storeError(w, r, err)
				return false
			}
		}
	}
	rec.State, rec.Coll, rec.ID, rec.Version = "done", "", "", 0
	data, _ := json.Marshal(rec)
	if _, err := s.idem.PutIfVersion(context.WithoutCancel(r.Context()), IdempotencyCollection, cur.ID, data, cur.Version); err != nil {
		// Another retry confirmed it first, or the store is failing: the answer stands.
		s.log.DebugContext(r.Context(), "idempotency: marking a confirmed write done failed", "err", err)
	}
	return true
}

// PurgeIdempotency deletes the idempotency records that no retry can use any more: answers
// older than IdempotencyTTL and claims older than IdempotencyLease. Each deletion is
// conditional on the version read, so a record rewritten meanwhile (a new claim) stays. It
// returns how many records it deleted. Start runs it every IdempotencyPurge.
func (s *Server) PurgeIdempotency(ctx context.Context) (int, error) {
	n, cursor := 0, ""
	for {
		p, err := s.idem.List(ctx, IdempotencyCollection, cursor, docstore.MaxLimit)
		if err != nil {
			return n, err
		}
		now := s.now()
		for _, d := range p.Docs {
			var rec idemRecord
			if json.Unmarshal(d.Body, &rec) != nil {
				rec = idemRecord{} // unreadable: expired
			}
			age := now.Sub(time.UnixMilli(rec.At))
			keep := rec.State == "pending" && age <= s.cfg.IdempotencyLease ||
				(rec.State == "done" || rec.State == "unconfirmed") && age <= s.cfg.IdempotencyTTL
			if keep {
				continue
			}
			if _, err := s.idem.DeleteIfVersion(ctx, IdempotencyCollection, d.ID, d.Version); err == nil {
				n++
			} else if !errors.Is(err, docstore.ErrVersionConflict) && !errors.Is(err, docstore.ErrNotFound) {
				return n, err
			}
		}
		if p.Next == "" {
			return n, nil
		}
		cursor = p.Next
	}
}
