package retry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidRetryAfter is wrapped by [ParseRetryAfter]'s error for a malformed header value.
var ErrInvalidRetryAfter = errors.New("retry: invalid Retry-After value")

// RetryAfterError is an error that carries the server's requested wait, for example from an
// HTTP 429 or 503 response's Retry-After header. [Policy.Do] waits After instead of its backoff
// delay before the next attempt.
type RetryAfterError struct {
	Err   error         // the underlying error
	After time.Duration // how long the server asked the client to wait
}

// Error returns the underlying error's message and the requested wait.
func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.After)
}

// Unwrap returns the underlying error.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter returns the requested wait.
func (e *RetryAfterError) RetryAfter() time.Duration { return e.After }

// RetryAfter returns the wait requested by the first error in err's tree that has a
// `RetryAfter() time.Duration` method, such as [*RetryAfterError].
func RetryAfter(err error) (time.Duration, bool) {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return max(ra.RetryAfter(), 0), true
	}
	return 0, false
}

// maxRetryAfter bounds a parsed Retry-After, so that absurd values cannot overflow.
const maxRetryAfter = 24 * time.Hour

// httpDateLayouts are the date formats HTTP allows (RFC 9110, section 5.6.7): IMF-fixdate and
// the two obsolete forms.
var httpDateLayouts = []string{
	"Mon, 02 Jan 2006 15:04:05 GMT",
	"Monday, 02-Jan-06 15:04:05 GMT",
	"Mon Jan _2 15:04:05 2006",
}

// ParseRetryAfter parses an HTTP Retry-After header value: a number of seconds or an HTTP date,
// which is turned into a wait from the instant now (0 if the date has passed). The result is
// capped at 24 hours.
func ParseRetryAfter(value string, now time.Time) (time.Duration, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, fmt.Errorf("%w: empty", ErrInvalidRetryAfter)
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return maxRetryAfter, nil
			}
			return 0, fmt.Errorf("%w: %q", ErrInvalidRetryAfter, value)
		}
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, nil
		}
		return time.Duration(secs) * time.Second, nil
	}
	for _, layout := range httpDateLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return min(max(t.Sub(now), 0), maxRetryAfter), nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrInvalidRetryAfter, value)
}
