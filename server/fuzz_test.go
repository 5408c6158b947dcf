package server

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/strata-project/strata/docstore"
)

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v1/docs/a", "/v1/docs", "/v1/docs:batchGet", "/v1/docs/a%2Fb", "/v1/docs/%00", "/v1//x",
		"/v1/Docs/a", "/v2/docs/a", "/v1/docs/a/b/c", "/v1/docs/%", "/v1/a:batchGet/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, coll, id, err := parsePath(p)
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) && !errors.Is(err, errPath) {
				t.Fatalf("%q: untyped error %v", p, err)
			}
			return
		}
		if docstore.CheckCollection(coll) != nil {
			t.Fatalf("%q: accepted bad collection %q", p, coll)
		}
		if rt == routeDoc {
			if docstore.CheckID(id) != nil {
				t.Fatalf("%q: accepted bad id %q", p, id)
			}
			// The id survives a round trip through percent-encoding.
			rt2, coll2, id2, err := parsePath("/v1/" + coll + "/" + url.PathEscape(id))
			if err != nil || rt2 != routeDoc || coll2 != coll || id2 != id {
				t.Fatalf("%q: round trip gave %v %q %q %v", p, rt2, coll2, id2, err)
			}
		} else if id != "" {
			t.Fatalf("%q: id on a collection route", p)
		}
	})
}

func FuzzMergePatch(f *testing.F) {
	f.Add(`{"a":1,"b":{"c":2}}`, `{"a":null,"b":{"d":3}}`)
	f.Add(`{"a":[1,2]}`, `{"a":{"x":1}}`)
	f.Add(`{}`, `[1]`)
	f.Add(`{"n":1.000000000000000000001}`, `{}`)
	f.Add(`{"a":1}`, `null`)
	f.Fuzz(func(t *testing.T, doc, patch string) {
		out, err := mergePatch([]byte(doc), []byte(patch))
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if docstore.CheckBody(out, 1<<30) != nil {
			t.Fatalf("result %s is not a JSON object", out)
		}
		var p map[string]any
		if json.Unmarshal([]byte(patch), &p) != nil {
			return
		}
		// Applying the same patch again changes nothing (merge patches are idempotent).
		again, err := mergePatch(out, []byte(patch))
		if err != nil || string(again) != string(out) {
			t.Fatalf("patch not idempotent: %s then %s (%v)", out, again, err)
		}
		// Members set to null are gone; others are present.
		var m map[string]any
		json.Unmarshal(out, &m)
		for k, v := range p {
			if _, ok := m[k]; ok == (v == nil) {
				t.Fatalf("member %q after patch %s: %s", k, patch, out)
			}
		}
	})
}

func FuzzParsePrecondition(f *testing.F) {
	for _, s := range []string{`"1"`, `*`, `W/"3", "4"`, `"a"`, `"1`, ``, `"1",,"2"`, `W/`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		p, err := parsePrecondition([]string{h})
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, v := range p.tags {
			if !p.matchStrong(v) || !strings.Contains(h, etag(v)[1:len(etag(v))-1]) {
				t.Fatalf("%q: tag %d", h, v)
			}
		}
		if p.matchStrong(0) {
			t.Fatalf("%q matches a missing document", h)
		}
	})
}

func FuzzDecodeBatchGet(f *testing.F) {
	for _, s := range []string{`{"ids":["a","b"]}`, `{"ids":[]}`, `{"ids":["a"],"x":1}`, `[]`, `{"ids":["\u0000"]}`, `{"ids":["a"]}{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := decodeBatchGet([]byte(body))
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if err := docstore.CheckBatch("c", req.IDs); err != nil || len(req.IDs) == 0 {
			t.Fatalf("accepted %q: %v", body, err)
		}
	})
}

func FuzzListCursor(f *testing.F) {
	f.Add("docs", docstore.EncodeCursor("docs", "k1"))
	f.Add("docs", docstore.EncodeCursor("other", "k1"))
	f.Add("docs", "AAAA")
	f.Fuzz(func(t *testing.T, coll, cursor string) {
		id, err := docstore.DecodeCursor(coll, cursor)
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if cursor != "" && docstore.CheckID(id) != nil {
			t.Fatalf("cursor %q decoded to a bad id %q", cursor, id)
		}
	})
}
