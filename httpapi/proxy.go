package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/snapshot"
	"github.com/discoverd/discoverd/ui"
	"github.com/rs/zerolog"
)

// proxyLocalPaths are answered by the proxy itself; everything else is
// forwarded to a voter.
var proxyLocalPaths = map[string]bool{
	"/ping":               true,
	"/.well-known/status": true,
	"/metrics":            true,
	"/raft/promote":       true,
	"/raft/demote":        true,
	// The web page is the proxy's own; its API calls are then forwarded.
	"/": true,
}

// hopHeaders are per-connection headers a proxy must not pass on.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

type proxy struct {
	voters func() []string
	// sticky is the voter that last answered: requests keep going to it, so
	// a client of the proxy sees one voter's state move only forward (its
	// own writes included) until that voter fails.
	sticky    atomic.Pointer[string]
	local     http.Handler
	transport *http.Transport
	// scheme is https when the node reaches voters over mutual TLS.
	scheme string
	log    zerolog.Logger
}

// NewProxy returns the handler of a proxy node: every request is served by
// forwarding it to a voter (voters lists them, the leader first when known)
// and passing the voter's answer through, streams included. When a voter
// cannot be reached, or answers 503, the next one is tried. The proxy's own
// liveness, status, metrics and promote/demote routes go to local.
func NewProxy(voters func() []string, local http.Handler, opts Options) http.Handler {
	p := &proxy{
		voters: voters,
		local:  local,
		log:    opts.Log,
		scheme: "http://",
		transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       time.Minute,
			ResponseHeaderTimeout: 30 * time.Second,
		},
	}
	if opts.PeerTLS != nil {
		p.transport.TLSClientConfig = opts.PeerTLS.Clone()
		p.scheme = "https://"
	}
	return p
}

// ByRole serves each request with voter while isProxy reports false, and
// with proxy while it reports true, so a node can be promoted or demoted
// without restarting its HTTP server.
func ByRole(isProxy func() bool, voter, proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isProxy() {
			proxy.ServeHTTP(w, r)
			return
		}
		voter.ServeHTTP(w, r)
	})
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if proxyLocalPaths[r.URL.Path] || strings.HasPrefix(r.URL.Path, ui.Prefix) {
		p.local.ServeHTTP(w, r)
		return
	}
	// Buffer the body so the request can be sent again to another voter.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		limit := int64(MaxBodyBytes)
		if r.URL.Path == snapshotPath {
			limit = snapshot.MaxBytes
		}
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				p.fail(w, http.StatusRequestEntityTooLarge, &api.Error{Code: api.CodeValidation, Message: fmt.Sprintf("request body is larger than the limit of %d bytes", limit)})
				return
			}
			p.fail(w, http.StatusBadRequest, api.Errorf(api.CodeValidation, "reading the request body failed: %v", err))
			return
		}
	}
	voters := p.voters()
	if last := p.sticky.Load(); last != nil {
		if i := slices.Index(voters, *last); i > 0 {
			voters = append([]string{*last}, slices.Delete(voters, i, i+1)...)
		}
	}
	if len(voters) == 0 {
		p.fail(w, http.StatusServiceUnavailable, api.Errorf(api.CodeUnavailable, "this proxy knows no voter to forward to"))
		return
	}
	var lastErr error
	for i, addr := range voters {
		out, err := http.NewRequestWithContext(r.Context(), r.Method, p.scheme+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			lastErr = err
			continue
		}
		copyHeaders(out.Header, r.Header)
		// The voter judges a relayed request by the caller's token: the
		// node-to-node marker is a node's own, never a caller's. The relay
		// marker keeps the proxy's connections out of the voter's
		// per-client limit (the proxy counts its own clients).
		out.Header.Del(api.ForwardedHeader)
		out.Header.Set(api.RelayedHeader, "1")
		out.ContentLength = int64(len(body))
		resp, err := p.transport.RoundTrip(out)
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			lastErr = err
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable && i < len(voters)-1 {
			// This voter has no leader; another may.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			lastErr = errors.New(addr + " answered 503")
			continue
		}
		if last := p.sticky.Load(); last == nil || *last != addr {
			p.sticky.Store(&addr)
		}
		p.relay(w, resp)
		return
	}
	p.fail(w, http.StatusServiceUnavailable, api.Errorf(api.CodeUnavailable, "no voter answered: %v", lastErr))
}

// relay passes a voter's answer through, flushing as it goes for streams.
func (p *proxy) relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	copyHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), sseContentType) {
		io.Copy(w, resp.Body)
		return
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	// Events are small and come one by one: a small buffer serves them,
	// and a proxy holds one per relayed stream.
	buf := make([]byte, 4<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) fail(w http.ResponseWriter, status int, e *api.Error) {
	b, _ := jsonMarshal(e)
	writeBody(w, status, b)
}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}
