package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// ProblemTypePrefix begins the "type" of every problem+json body the server writes. The rest
// is the problem's stable name (Problem* constants), so clients can switch on it.
const ProblemTypePrefix = "urn:strata:problem:"

// Stable problem names, appended to ProblemTypePrefix in the "type" member.
const (
	ProblemNotFound           = "not-found"             // 404: no live document, or unknown route
	ProblemUnknownCollection  = "unknown-collection"    // 404: the collection is not configured
	ProblemMethodNotAllowed   = "method-not-allowed"    // 405
	ProblemInvalidPath        = "invalid-path"          // 400: collection or id format
	ProblemInvalidBody        = "invalid-body"          // 400: not a JSON object, bad control body
	ProblemInvalidQuery       = "invalid-query"         // 400: limit or cursor
	ProblemInvalidHeader      = "invalid-header"        // 400: If-Match, Idempotency-Key, session token
	ProblemBodyTooLarge       = "body-too-large"        // 413
	ProblemUnsupportedMedia   = "unsupported-media"     // 415: content type of a write
	ProblemPreconditionFailed = "precondition-failed"   // 412: If-Match / If-None-Match
	ProblemUnauthorized       = "unauthorized"          // 401: no or unknown API key
	ProblemForbidden          = "forbidden"             // 403: the key lacks the scope
	ProblemRateLimited        = "rate-limited"          // 429
	ProblemIdempotencyBusy    = "idempotency-in-flight" // 409: the same key is being processed
	ProblemIdempotencyReuse   = "idempotency-key-reuse" // 422: same key, different request
	ProblemUnavailable        = "unavailable"           // 503: a dependency cannot serve safely now
	// 400: a conditional write or PATCH on a write-behind collection.
	ProblemConditionalUnsupported = "conditional-write-unsupported"
	ProblemTimeout                = "timeout"  // 504: the store did not answer in time
	ProblemInternal               = "internal" // 500
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// RequestID repeats the X-Request-Id of the request, for support.
	RequestID string `json:"request_id,omitempty"`
}

// writeProblem writes an application/problem+json response. retryAfter > 0 adds Retry-After
// in whole seconds, rounded up. detail must never hold a secret: it is shown to the client.
func writeProblem(w http.ResponseWriter, r *http.Request, status int, name, detail string, retryAfter time.Duration) {
	p := Problem{
		Type:      ProblemTypePrefix + name,
		Title:     http.StatusText(status),
		Status:    status,
		Detail:    detail,
		Instance:  r.URL.EscapedPath(),
		RequestID: w.Header().Get("X-Request-Id"),
	}
	h := w.Header()
	h.Del("ETag")
	h.Del("Content-Length")
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="strata"`)
	}
	b, _ := json.Marshal(p)
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
