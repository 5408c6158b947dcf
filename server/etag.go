package server

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/strata-project/strata/docstore"
)

// etag returns the strong entity tag of a version: the version in quotes.
func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// precondition is a parsed If-Match or If-None-Match header.
type precondition struct {
	present bool
	any     bool    // "*"
	tags    []int64 // versions named by strong tags
	weak    []int64 // versions named by weak tags (W/"n"), usable by weak comparison only
}

// maxPreconditionTags bounds how many entity tags one header may list.
const maxPreconditionTags = 64

// parsePrecondition parses an If-Match or If-None-Match field (RFC 9110 section 13.1): "*"
// or a comma-separated list of entity tags. Tags that are not versions can never match and
// are dropped; a malformed list is an error wrapping docstore.ErrInvalid.
func parsePrecondition(values []string) (precondition, error) {
	var p precondition
	if len(values) == 0 {
		return p, nil
	}
	p.present = true
	field := strings.Join(values, ",")
	if strings.TrimSpace(field) == "*" {
		p.any = true
		return p, nil
	}
	n := 0
	for part := range strings.SplitSeq(field, ",") {
		t := strings.TrimSpace(part)
		if t == "" {
			continue
		}
		if n++; n > maxPreconditionTags {
			return p, fmt.Errorf("%w: more than %d entity tags", docstore.ErrInvalid, maxPreconditionTags)
		}
		weak := false
		if rest, ok := strings.CutPrefix(t, "W/"); ok {
			weak, t = true, rest
		}
		if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' || strings.Contains(t[1:len(t)-1], `"`) {
			return p, fmt.Errorf("%w: malformed entity tag %q", docstore.ErrInvalid, part)
		}
		v, err := strconv.ParseInt(t[1:len(t)-1], 10, 64)
		if err != nil || v <= 0 {
			continue // a tag this server never issued: it matches nothing
		}
		if weak {
			p.weak = append(p.weak, v)
		} else {
			p.tags = append(p.tags, v)
		}
	}
	return p, nil
}

// matchStrong reports whether version (0: no current document) matches under the strong
// comparison of If-Match.
func (p precondition) matchStrong(version int64) bool {
	if version == 0 {
		return false
	}
	if p.any {
		return true
	}
	for _, v := range p.tags {
		if v == version {
			return true
		}
	}
	return false
}

// matchWeak reports whether version matches under the weak comparison of If-None-Match.
func (p precondition) matchWeak(version int64) bool {
	if p.matchStrong(version) {
		return true
	}
	for _, v := range p.weak {
		if v == version && version != 0 {
			return true
		}
	}
	return false
}

// single returns the one version a strong If-Match names, for a conditional write, and ok
// false when the header names several or "*".
func (p precondition) single() (int64, bool) {
	if p.any || len(p.tags) != 1 || len(p.weak) != 0 {
		return 0, false
	}
	return p.tags[0], true
}
