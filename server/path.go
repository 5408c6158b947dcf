package server

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/strata-project/strata/docstore"
)

// route names one kind of document request; it is also the route label of metrics.
type route string

const (
	routeDoc      route = "doc"      // /v1/{collection}/{id}
	routeList     route = "list"     // /v1/{collection}
	routeBatchGet route = "batchGet" // /v1/{collection}:batchGet
)

// errPath reports a request path that names no document route.
var errPath = errors.New("server: no such route")

// ParsePath parses the escaped path of a document request (URL.EscapedPath) into its route,
// collection and id. The id is the percent-decoded rest of the path after the collection, so
// ids may hold any character docstore.CheckID accepts, "/" included (sent as %2F or as is).
// It returns an error wrapping docstore.ErrInvalid for a bad collection or id, and one
// wrapping errPath for a path outside /v1/.
func parsePath(escaped string) (r route, collection, id string, err error) {
	rest, ok := strings.CutPrefix(escaped, "/v1/")
	if !ok {
		return "", "", "", errPath
	}
	coll, tail, hasID := strings.Cut(rest, "/")
	switch {
	case hasID:
		r = routeDoc
	case strings.HasSuffix(coll, ":batchGet"):
		r, coll = routeBatchGet, strings.TrimSuffix(coll, ":batchGet")
	default:
		r = routeList
	}
	if err := docstore.CheckCollection(coll); err != nil {
		return "", "", "", err
	}
	if r != routeDoc {
		return r, coll, "", nil
	}
	id, err = url.PathUnescape(tail)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: id: bad percent-encoding", docstore.ErrInvalid)
	}
	if err := docstore.CheckID(id); err != nil {
		return "", "", "", err
	}
	return r, coll, id, nil
}
