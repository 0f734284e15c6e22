package httpapi

import (
	"net/http"

	"github.com/discoverd/discoverd/auth"
)

// RouteSpec is one route of the table, for tests.
type RouteSpec struct {
	Method, Path string
	Perm         auth.Perm
}

// RoutesOf lists the route table of a handler returned by New.
func RoutesOf(h http.Handler) []RouteSpec {
	var out []RouteSpec
	for _, r := range h.(*handler).routes {
		out = append(out, RouteSpec{r.method, r.path, r.perm})
	}
	return out
}
