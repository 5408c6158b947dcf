package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/replica"
)

// routeAPI dispatches the API listener's requests.
func (s *Server) routeAPI(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/v1/"):
		s.serveDocs(w, r)
	case p == "/healthz":
		info(r).route = "healthz"
		s.healthz(w, r)
	case p == "/readyz":
		info(r).route = "readyz"
		s.readyz(w, r)
	case p == "/openapi.yaml" || p == "/openapi.json":
		info(r).route = "openapi"
		serveOpenAPI(w, r)
	case strings.HasPrefix(p, "/admin/"):
		s.routeAdminScoped(w, r, "/admin")
	default:
		writeProblem(w, r, http.StatusNotFound, ProblemNotFound, "no such route", 0)
	}
}

// routeAdmin serves the admin listener: every endpoint needs the admin scope.
func (s *Server) routeAdmin(w http.ResponseWriter, r *http.Request) {
	s.routeAdminScoped(w, r, "")
}

func (s *Server) routeAdminScoped(w http.ResponseWriter, r *http.Request, prefix string) {
	ri := info(r)
	ri.route = "admin"
	p, err := s.keys.Load().authenticate(r)
	if err != nil {
		writeProblem(w, r, http.StatusUnauthorized, ProblemUnauthorized, "an API key with the admin scope is required", 0)
		return
	}
	ri.principal = p.ID
	if !p.Allowed("admin", "") {
		writeProblem(w, r, http.StatusForbidden, ProblemForbidden, "the admin scope is required", 0)
		return
	}
	http.StripPrefix(prefix, s.adminMux()).ServeHTTP(w, r)
}

// serveDocs serves /v1/{collection}[/{id} | :batchGet]: path checks, authentication, the
// key's rate limit, the scope, the collection's rate limit, then the consistency session.
func (s *Server) serveDocs(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	rt, coll, id, err := parsePath(r.URL.EscapedPath())
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidPath, trimPkg(err), 0)
		return
	}
	ri.route = string(rt)
	col := s.collections[coll]
	if col == nil {
		writeProblem(w, r, http.StatusNotFound, ProblemUnknownCollection, fmt.Sprintf("collection %q is not served here", coll), 0)
		return
	}
	ri.collection = coll
	p, err := s.keys.Load().authenticate(r)
	if err != nil {
		detail := "an API key is required (Authorization: Bearer KEY or X-API-Key)"
		if errors.Is(err, errBadKey) {
			detail = "the API key is not valid"
		}
		writeProblem(w, r, http.StatusUnauthorized, ProblemUnauthorized, detail, 0)
		return
	}
	ri.principal = p.ID
	r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))

	var h http.Handler
	action := "read"
	switch {
	case rt == routeDoc && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h = s.docHandler(col, id, s.getDoc)
	case rt == routeDoc && r.Method == http.MethodPut:
		action, h = "write", s.docHandler(col, id, s.writeHandler(s.putDoc))
	case rt == routeDoc && r.Method == http.MethodPatch:
		action, h = "write", s.docHandler(col, id, s.writeHandler(s.patchDoc))
	case rt == routeDoc && r.Method == http.MethodDelete:
		action, h = "write", s.docHandler(col, id, s.writeHandler(s.deleteDoc))
	case rt == routeList && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h = s.docHandler(col, "", s.listDocs)
	case rt == routeBatchGet && r.Method == http.MethodPost:
		h = s.docHandler(col, "", s.batchGet)
	default:
		allow := map[route]string{routeDoc: "GET, HEAD, PUT, PATCH, DELETE", routeList: "GET, HEAD", routeBatchGet: "POST"}[rt]
		w.Header().Set("Allow", allow)
		writeProblem(w, r, http.StatusMethodNotAllowed, ProblemMethodNotAllowed, r.Method+" is not allowed here; allowed: "+allow, 0)
		return
	}
	scoped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.Allowed(action, coll) {
			writeProblem(w, r, http.StatusForbidden, ProblemForbidden,
				fmt.Sprintf("the key lacks the scope %s:%s", action, coll), 0)
			return
		}
		if col.limit != nil {
			col.limit.Wrap(h).ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	if p.limit != nil {
		p.limit.Wrap(scoped).ServeHTTP(w, r)
		return
	}
	scoped.ServeHTTP(w, r)
}

// docFunc serves one document request within its consistency session.
type docFunc func(w http.ResponseWriter, r *http.Request, col *collection, id string)

// docHandler sets up the request's deadline and consistency session around fn: in session
// mode it decodes the presented token, and the advanced token is added to the response just
// before its header is written.
func (s *Server) docHandler(col *collection, id string, fn docFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		var presented replica.Token
		if col.Consistency == Session {
			t, err := s.cfg.Signer.Decode(r.Header.Get(s.cfg.SessionHeader))
			if err != nil {
				writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, "the "+s.cfg.SessionHeader+" token is not valid", 0)
				return
			}
			presented = t
		}
		sess := replica.NewSession(col.Consistency.replica(), presented)
		ctx = replica.WithSession(ctx, sess)
		w.Header().Set("Strata-Consistency", string(col.Consistency))
		if col.Consistency == Session {
			if sw, ok := w.(*statusWriter); ok {
				sw.onWrite = func(h http.Header) {
					if t := sess.Token(); !t.IsZero() {
						h.Set(s.cfg.SessionHeader, s.cfg.Signer.Encode(t))
					}
				}
			}
		}
		fn(w, r.WithContext(ctx), col, id)
	})
}

// writeFunc serves a write whose body has been read.
type writeFunc func(w http.ResponseWriter, r *http.Request, col *collection, id string, body []byte)

// writeHandler reads the body of a write and runs it, once per Idempotency-Key if one is
// given.
func (s *Server) writeHandler(fn writeFunc) docFunc {
	return func(w http.ResponseWriter, r *http.Request, col *collection, id string) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		key, has := r.Header["Idempotency-Key"]
		if !has {
			fn(w, r, col, id, body)
			return
		}
		if len(key) != 1 || checkIdempotencyKey(key[0]) != nil {
			writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, "Idempotency-Key must be one value of 1 to 255 printable ASCII characters", 0)
			return
		}
		s.idempotent(w, r, PrincipalFrom(r.Context()), key[0], col.name, id, body, func(w http.ResponseWriter, r *http.Request) {
			fn(w, r, col, id, body)
		})
	}
}

// readBody reads a request body within MaxBodyBytes; on failure it has answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		writeProblem(w, r, http.StatusRequestEntityTooLarge, ProblemBodyTooLarge,
			fmt.Sprintf("the body is larger than %d bytes", s.cfg.MaxBodyBytes), 0)
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			writeProblem(w, r, http.StatusRequestEntityTooLarge, ProblemBodyTooLarge,
				fmt.Sprintf("the body is larger than %d bytes", s.cfg.MaxBodyBytes), 0)
			return nil, false
		}
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, "the body could not be read", 0)
		return nil, false
	}
	return b, true
}

// checkContentType accepts a missing Content-Type or one of the given media types.
func checkContentType(w http.ResponseWriter, r *http.Request, types ...string) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, t := range types {
			if mt == t {
				return true
			}
		}
	}
	writeProblem(w, r, http.StatusUnsupportedMediaType, ProblemUnsupportedMedia, "Content-Type must be "+strings.Join(types, " or "), 0)
	return false
}

// preconditions parses If-Match and If-None-Match; on failure it has answered.
func preconditions(w http.ResponseWriter, r *http.Request) (ifMatch, ifNone precondition, ok bool) {
	var err error
	if ifMatch, err = parsePrecondition(r.Header.Values("If-Match")); err == nil {
		ifNone, err = parsePrecondition(r.Header.Values("If-None-Match"))
	}
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, trimPkg(err), 0)
		return ifMatch, ifNone, false
	}
	return ifMatch, ifNone, true
}

// getDoc serves GET and HEAD of a document, with If-Match (412) and If-None-Match (304).
func (s *Server) getDoc(w http.ResponseWriter, r *http.Request, col *collection, id string) {
	ifMatch, ifNone, ok := preconditions(w, r)
	if !ok {
		return
	}
	d, src, err := col.Access.Get(r.Context(), col.name, id)
	s.countCache(r, col, src)
	setSource(w, src) // a 404 from the cache is a hit too
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if ifMatch.present && !ifMatch.matchStrong(d.Version) {
		writeProblem(w, r, http.StatusPreconditionFailed, ProblemPreconditionFailed, "If-Match does not match the current version", 0)
		return
	}
	if ifNone.present && ifNone.matchWeak(d.Version) {
		h := w.Header()
		h.Set("ETag", etag(d.Version))
		h.Set("Cache-Control", "private, no-cache")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeDoc(w, d, http.StatusOK)
}

// putDoc serves PUT: create or replace, conditional on If-Match or If-None-Match: *.
func (s *Server) putDoc(w http.ResponseWriter, r *http.Request, col *collection, id string, body []byte) {
	if !checkContentType(w, r, "application/json") {
		return
	}
	if err := docstore.CheckBody(body, int(s.cfg.MaxBodyBytes)); err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, trimPkg(err), 0)
		return
	}
	ifVersion, ok := s.writeVersion(w, r, col, id)
	if !ok {
		return
	}
	d, err := col.Access.Put(r.Context(), col.name, id, body, ifVersion)
	answer := func(w http.ResponseWriter) {
		status := http.StatusOK
		switch {
		case d.Version == 0:
			// Write-behind: acknowledged in the durable queue, applied later.
			status = http.StatusAccepted
		case d.Version == 1 || ifVersion == 0:
			status = http.StatusCreated
			w.Header().Set("Location", "/v1/"+col.name+"/"+url.PathEscape(id))
		}
		writeDoc(w, d, status)
	}
	if err != nil {
		s.writeFailed(w, r, col, id, err, answer)
		return
	}
	answer(w)
}

// writeFailed answers a write that failed. A write that is in the store but unconfirmed
// (UnconfirmedError) under an Idempotency-Key also leaves, through the request's
// idempotency slot, the answer it would have had, for the retry that confirms it.
func (s *Server) writeFailed(w http.ResponseWriter, r *http.Request, col *collection, id string, err error, answer func(http.ResponseWriter)) {
	var ue *UnconfirmedError
	if slot, ok := r.Context().Value(idemSlotKey{}).(*idemSlot); ok && errors.As(err, &ue) {
		alt := &bufferedResponse{header: http.Header{}}
		answer(alt)
		slot.unconfirmed = &idemRecord{Coll: col.name, ID: id, Version: ue.Version,
			Status: cmpStatus(alt.status), Header: replayable(alt.header), Body: alt.body.Bytes()}
	}
	s.storeError(w, r, err)
}

// writeVersion turns the preconditions of a write into the version it is conditional on:
// -1 for none, 0 for "must not exist" (If-None-Match: *), or the current version.
func (s *Server) writeVersion(w http.ResponseWriter, r *http.Request, col *collection, id string) (int64, bool) {
	ifMatch, ifNone, ok := preconditions(w, r)
	if !ok {
		return 0, false
	}
	if ifNone.present && !ifNone.any {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, "on writes, If-None-Match supports only *", 0)
		return 0, false
	}
	switch {
	case ifMatch.present && ifNone.present:
		writeProblem(w, r, http.StatusPreconditionFailed, ProblemPreconditionFailed, "If-Match and If-None-Match: * cannot both hold", 0)
		return 0, false
	case ifNone.present:
		return 0, true
	case !ifMatch.present:
		return -1, true
	}
	if v, ok := ifMatch.single(); ok {
		return v, true
	}
	// "*" or several tags: read the current version from the primary, then write
	// conditionally on it, so that a concurrent write in between is still caught.
	cur, _, err := col.Access.Get(strongContext(r.Context()), col.name, id)
	if err != nil && !errors.Is(err, docstore.ErrNotFound) {
		s.storeError(w, r, err)
		return 0, false
	}
	if !ifMatch.matchStrong(cur.Version) {
		writeProblem(w, r, http.StatusPreconditionFailed, ProblemPreconditionFailed, "If-Match does not match the current version", 0)
		return 0, false
	}
	return cur.Version, true
}

// strongContext returns ctx with a strong session: reads go to the primary.
func strongContext(ctx context.Context) context.Context {
	return replica.WithSession(ctx, replica.NewSession(replica.Strong, replica.Token{}))
}

// maxPatchAttempts bounds the read-merge-write loop of an unconditional PATCH under
// contention.
const maxPatchAttempts = 8

// patchDoc serves PATCH with an RFC 7396 merge patch: read the current version from the
// primary, merge, write conditionally on that version, and start over if another write came
// in between (unless If-Match pinned the version: then 412).
func (s *Server) patchDoc(w http.ResponseWriter, r *http.Request, col *collection, id string, patch []byte) {
	if !checkContentType(w, r, "application/merge-patch+json", "application/json") {
		return
	}
	var v any
	if err := decodeJSON(patch, &v); err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, "the merge patch is not valid JSON", 0)
		return
	}
	ifMatch, ifNone, ok := preconditions(w, r)
	if !ok {
		return
	}
	if ifNone.present {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, "PATCH does not take If-None-Match", 0)
		return
	}
	ctx := r.Context()
	for range maxPatchAttempts {
		cur, _, err := col.Access.Get(strongContext(ctx), col.name, id)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		if ifMatch.present && !ifMatch.matchStrong(cur.Version) {
			writeProblem(w, r, http.StatusPreconditionFailed, ProblemPreconditionFailed, "If-Match does not match the current version", 0)
			return
		}
		merged, err := mergePatch(cur.Body, patch)
		if err == nil {
			err = docstore.CheckBody(merged, int(s.cfg.MaxBodyBytes))
		}
		if err != nil {
			writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, trimPkg(err), 0)
			return
		}
		d, err := col.Access.Put(ctx, col.name, id, merged, cur.Version)
		if errors.Is(err, docstore.ErrVersionConflict) && !ifMatch.present {
			continue
		}
		answer := func(w http.ResponseWriter) { writeDoc(w, d, http.StatusOK) }
		if err != nil {
			s.writeFailed(w, r, col, id, err, answer)
			return
		}
		answer(w)
		return
	}
	writeProblem(w, r, http.StatusServiceUnavailable, ProblemUnavailable, "the document is changing too fast to patch; retry", s.cfg.RetryAfter)
}

// deleteDoc serves DELETE, conditional on If-Match. The tombstone's version is the ETag.
func (s *Server) deleteDoc(w http.ResponseWriter, r *http.Request, col *collection, id string, _ []byte) {
	ifVersion, ok := s.writeVersion(w, r, col, id)
	if !ok {
		return
	}
	if ifVersion == 0 {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidHeader, "DELETE does not take If-None-Match", 0)
		return
	}
	v, err := col.Access.Delete(r.Context(), col.name, id, ifVersion)
	answer := func(w http.ResponseWriter) {
		if v == 0 {
			// Write-behind: acknowledged in the durable queue, applied later.
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("ETag", etag(v))
		w.WriteHeader(http.StatusNoContent)
	}
	if err != nil {
		s.writeFailed(w, r, col, id, err, answer)
		return
	}
	answer(w)
}

// listItem is one document in list and batchGet responses.
type listItem struct {
	ID      string          `json:"id"`
	Version int64           `json:"version"`
	Updated time.Time       `json:"updated"`
	Body    json.RawMessage `json:"body"`
}

func item(d docstore.Doc) listItem {
	return listItem{ID: d.ID, Version: d.Version, Updated: d.Updated, Body: d.Body}
}

// listDocs serves GET /v1/{collection}?limit=&cursor=.
func (s *Server) listDocs(w http.ResponseWriter, r *http.Request, col *collection, _ string) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidQuery, "the query string is malformed", 0)
		return
	}
	limit := 0
	for k, v := range q {
		if len(v) != 1 {
			writeProblem(w, r, http.StatusBadRequest, ProblemInvalidQuery, k+" given more than once", 0)
			return
		}
		switch k {
		case "limit":
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > docstore.MaxLimit {
				writeProblem(w, r, http.StatusBadRequest, ProblemInvalidQuery, fmt.Sprintf("limit must be 1..%d", docstore.MaxLimit), 0)
				return
			}
			limit = n
		case "cursor":
			if _, err := docstore.DecodeCursor(col.name, v[0]); err != nil {
				writeProblem(w, r, http.StatusBadRequest, ProblemInvalidQuery, "the cursor is not valid for this collection", 0)
				return
			}
		default:
			writeProblem(w, r, http.StatusBadRequest, ProblemInvalidQuery, "unknown query parameter "+strconv.Quote(k), 0)
			return
		}
	}
	page, src, err := col.Access.List(r.Context(), col.name, q.Get("cursor"), limit)
	s.countCache(r, col, src)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	setSource(w, src)
	out := struct {
		Items []listItem `json:"items"`
		Next  string     `json:"next,omitempty"`
	}{Items: make([]listItem, 0, len(page.Docs)), Next: page.Next}
	for _, d := range page.Docs {
		out.Items = append(out.Items, item(d))
	}
	writeJSON(w, http.StatusOK, out)
}

// batchGetRequest is the control body of :batchGet. Unknown fields are refused.
type batchGetRequest struct {
	IDs []string `json:"ids"`
}

// batchGet serves POST /v1/{collection}:batchGet.
func (s *Server) batchGet(w http.ResponseWriter, r *http.Request, col *collection, _ string) {
	if !checkContentType(w, r, "application/json") {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, err := decodeBatchGet(body)
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, trimPkg(err), 0)
		return
	}
	m, src, err := col.Access.GetMany(r.Context(), col.name, req.IDs)
	s.countCache(r, col, src)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	setSource(w, src)
	out := struct {
		Items   []listItem `json:"items"`
		Missing []string   `json:"missing"`
	}{Items: []listItem{}, Missing: []string{}}
	seen := map[string]bool{}
	for _, id := range req.IDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		if d, ok := m[id]; ok {
			out.Items = append(out.Items, item(d))
		} else {
			out.Missing = append(out.Missing, id)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeBatchGet parses a :batchGet body: {"ids": [...]} with 1 to docstore.MaxBatch valid
// ids and no other member.
func decodeBatchGet(body []byte) (batchGetRequest, error) {
	var req batchGetRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("%w: batchGet body: %v", docstore.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, fmt.Errorf("%w: batchGet body: trailing data", docstore.ErrInvalid)
	}
	if len(req.IDs) == 0 || len(req.IDs) > docstore.MaxBatch {
		return req, fmt.Errorf("%w: ids: want 1..%d ids", docstore.ErrInvalid, docstore.MaxBatch)
	}
	for _, id := range req.IDs {
		if err := docstore.CheckID(id); err != nil {
			return req, err
		}
	}
	return req, nil
}

// writeDoc writes a document: its body, with its version as a strong ETag.
func writeDoc(w http.ResponseWriter, d docstore.Doc, status int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if d.Version > 0 { // 0: a write-behind write not applied yet has no version
		h.Set("ETag", etag(d.Version))
	}
	if !d.Updated.IsZero() {
		h.Set("Last-Modified", d.Updated.UTC().Format(http.TimeFormat))
	}
	h.Set("Cache-Control", "private, no-cache")
	w.WriteHeader(status)
	w.Write(d.Body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "private, no-cache")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// setSource writes X-Cache and Age for a read.
func setSource(w http.ResponseWriter, src Source) {
	h := w.Header()
	h.Set("X-Cache", string(cmpOr(src.Cache, CacheBypass)))
	if src.Age > 0 {
		h.Set("Age", strconv.FormatInt(int64(src.Age/time.Second), 10))
	}
	if src.Replica {
		h.Set("X-Served-By", "replica")
	}
}

func (s *Server) countCache(r *http.Request, col *collection, src Source) {
	c := cmpOr(src.Cache, CacheBypass)
	info(r).cache = c
	s.metrics.cache(col.name, string(c))
}

// storeError answers a failed store call. Dependencies that cannot serve now give 503 with
// Retry-After: for a strong collection that is failing closed.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var vc *docstore.VersionConflictError
	switch {
	case errors.Is(err, docstore.ErrNotFound):
		writeProblem(w, r, http.StatusNotFound, ProblemNotFound, "no such document", 0)
	case errors.As(err, &vc):
		if vc.Current > 0 {
			w.Header().Set("ETag", etag(vc.Current))
		}
		writeProblem(w, r, http.StatusPreconditionFailed, ProblemPreconditionFailed, "the document's version is not the one the request is conditional on", 0)
	case errors.Is(err, ErrConditionalUnsupported):
		writeProblem(w, r, http.StatusBadRequest, ProblemConditionalUnsupported,
			"this collection is served write-behind: only unconditional PUT and DELETE are accepted (no If-Match, If-None-Match or PATCH)", 0)
	case errors.Is(err, ErrCacheUnavailable):
		s.log.WarnContext(r.Context(), "write refused: the shared cache cannot take its invalidation", "request_id", RequestID(r.Context()), "err", err)
		detail := "the shared cache tier is unreachable: writes of this collection are refused until it is back, so that no app server serves an old value from it; "
		if errors.Is(err, errNotApplied) {
			detail += "this write was not applied"
			w.Header().Set(HeaderWriteApplied, "false")
		} else {
			detail += "this write reached the store but its outcome is not confirmed: read the document before retrying, or retry with the same Idempotency-Key"
		}
		writeProblem(w, r, http.StatusServiceUnavailable, ProblemUnavailable, detail, s.cfg.RetryAfter)
	case errors.Is(err, docstore.ErrInvalid):
		writeProblem(w, r, http.StatusBadRequest, ProblemInvalidBody, trimPkg(err), 0)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		writeProblem(w, r, 499, ProblemUnavailable, "the request was canceled", 0)
	case errors.Is(err, docstore.ErrUnavailable), errors.Is(err, docstore.ErrClosed),
		errors.Is(err, breaker.ErrOpen), errors.Is(err, breaker.ErrTooManyProbes),
		errors.Is(err, replica.ErrNoPrimary), errors.Is(err, replica.ErrNoReplica),
		errors.Is(err, context.DeadlineExceeded):
		s.log.WarnContext(r.Context(), "dependency unavailable", "request_id", RequestID(r.Context()), "err", err)
		writeProblem(w, r, http.StatusServiceUnavailable, ProblemUnavailable, "a dependency cannot serve this request safely now", s.cfg.RetryAfter)
	default:
		s.log.ErrorContext(r.Context(), "store error", "request_id", RequestID(r.Context()), "err", err)
		writeProblem(w, r, http.StatusInternalServerError, ProblemInternal, "", 0)
	}
}

// trimPkg drops the "docstore: " style prefix of an error for problem details.
func trimPkg(err error) string {
	s := err.Error()
	if pre, rest, ok := strings.Cut(s, ": "); ok && !strings.Contains(pre, " ") {
		return rest
	}
	return s
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
