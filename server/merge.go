package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/strata-project/strata/docstore"
)

// maxMergeDepth bounds the nesting of documents and patches handled by mergePatch, so that a
// hostile body cannot exhaust the stack.
const maxMergeDepth = 64

// mergePatch applies an RFC 7396 JSON merge patch to a document and returns the result,
// which must be a JSON object. Numbers keep their exact text (no float64 round trip).
// Members of the result come out in sorted key order.
func mergePatch(doc, patch []byte) ([]byte, error) {
	var d, p any
	if err := decodeJSON(doc, &d); err != nil {
		return nil, fmt.Errorf("%w: document: %v", docstore.ErrInvalid, err)
	}
	if err := decodeJSON(patch, &p); err != nil {
		return nil, fmt.Errorf("%w: patch: %v", docstore.ErrInvalid, err)
	}
	if depth(p, 0) > maxMergeDepth || depth(d, 0) > maxMergeDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", docstore.ErrInvalid, maxMergeDepth)
	}
	out := merge(d, p)
	if _, ok := out.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: the patched document is not a JSON object", docstore.ErrInvalid)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("%w: %v", docstore.ErrInvalid, err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// merge is RFC 7396 section 2's MergePatch(Target, Patch).
func merge(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = merge(tm[k], v)
	}
	return tm
}

func depth(v any, d int) int {
	if d > maxMergeDepth {
		return d
	}
	m := d
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			m = max(m, depth(e, d+1))
		}
	case []any:
		for _, e := range x {
			m = max(m, depth(e, d+1))
		}
	}
	return m
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}
