package httpapi

import (
	"net/http"
	"strings"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/ui"
)

// uiBackend is what the web page needs of b: b itself when it is a full
// node, else b with no cluster beyond itself.
func uiBackend(b Backend) ui.Backend {
	if ub, ok := b.(ui.Backend); ok {
		return ub
	}
	return soloUI{b}
}

type soloUI struct{ Backend }

func (soloUI) RaftLeader() string  { return "" }
func (soloUI) RaftPeers() []string { return nil }

// GET /: a browser (Accept: text/html) is sent to the web page; an API
// client gets the JSON 404 of a path with no route.
func (h *handler) root(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		http.Redirect(w, r, ui.Prefix, http.StatusFound)
		return
	}
	h.fail(w, api.Errorf(api.CodeNotFound, "no route for %s /: the API is under /services, the web page at %s", r.Method, ui.Prefix))
}
