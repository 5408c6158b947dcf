package server

import (
	_ "embed"
	"net/http"
	"sync"

	"encoding/json"
	"go.yaml.in/yaml/v3"
)

// OpenAPI is the OpenAPI 3 description of the HTTP API, served at /openapi.yaml and, converted,
// at /openapi.json.
//
//go:embed openapi.yaml
var OpenAPI []byte

var openAPIJSON = sync.OnceValues(func() ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(OpenAPI, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
})

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeProblem(w, r, http.StatusMethodNotAllowed, ProblemMethodNotAllowed, "", 0)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	if r.URL.Path == "/openapi.json" {
		b, err := openAPIJSON()
		if err != nil {
			writeProblem(w, r, http.StatusInternalServerError, ProblemInternal, "", 0)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(OpenAPI)
}
