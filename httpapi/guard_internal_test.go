package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// A route added to the table without a permission must not be served.
func TestRouteWithoutPermissionIsRefused(t *testing.T) {
	h := &handler{}
	defer func() {
		v := recover()
		if v == nil || !strings.Contains(v.(string), "declares no permission") {
			t.Fatalf("got %v, want a panic naming the route without a permission", v)
		}
	}()
	h.guard(route{method: "GET", path: "/new", fn: func(http.ResponseWriter, *http.Request) {}})
}
