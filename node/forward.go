package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/fsm"
)

// ApplyPath is the internal route on which a follower hands a write to the
// Raft leader: the body is one encoded command, the answer an
// api.AppliedCommand or an api.Error. An empty body asks for the leader's
// applied index after it confirmed its leadership (a read barrier).
const ApplyPath = "/raft/apply"

// forwarder sends writes from a follower to the leader over HTTP, on the
// same port as everything else, with kept-alive connections.
type forwarder struct {
	client *http.Client
	// scheme is https when nodes reach each other over mutual TLS.
	scheme    string
	peerToken func() string
	// batcher sends concurrent writes in one request (forward_batch.go).
	batcher forwardBatcher
}

func newForwarder(cfg *Config) *forwarder {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
	}
	f := &forwarder{client: &http.Client{Transport: tr}, scheme: "http://", peerToken: cfg.PeerToken}
	f.batcher.fwd = f
	if cfg.PeerTLS != nil {
		tr.TLSClientConfig = cfg.PeerTLS.Clone()
		tr.ForceAttemptHTTP2 = false
		f.scheme = "https://"
	}
	return f
}

// authorize marks req as a node's own request and, when nodes authenticate
// with a token rather than a certificate, adds it.
func (f *forwarder) authorize(req *http.Request) {
	req.Header.Set(api.ForwardedHeader, "1")
	if f.peerToken != nil {
		if t := f.peerToken(); t != "" {
			req.Header.Set("Authorization", "Bearer "+t)
		}
	}
}

// forward applies cmd on the leader at addr. A nil cmd is a read barrier.
func (f *forwarder) forward(ctx context.Context, addr string, cmd []byte) (*fsm.Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultApplyTimeout)
		defer cancel()
	}
	body, hdr, err := f.postToLeader(ctx, addr, ApplyPath, cmd, 4<<20)
	if err != nil {
		var e *api.Error
		if hdr != nil && errors.As(err, &e) {
			// The leader's own refusal: the caller learns the index it
			// was refused at, as from a local apply.
			idx, _ := strconv.ParseUint(hdr.Get(api.IndexHeader), 10, 64)
			return &fsm.Result{Index: idx, Err: e}, e
		}
		return nil, err
	}
	var ac api.AppliedCommand
	if err := json.Unmarshal(body, &ac); err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "leader %s answered malformed JSON: %v", addr, err)
	}
	return &fsm.Result{Index: ac.Index, Instance: ac.Instance, Meta: ac.Meta}, nil
}

// postToLeader posts body to path on the leader at addr as this node, and
// returns the answer of a 200 (at most limit bytes) with its headers. Any
// other answer is the leader's api.Error, returned with the answer's
// headers, or, when the leader could not be reached or answered no JSON
// error, an unavailable error without headers.
func (f *forwarder) postToLeader(ctx context.Context, addr, path string, body []byte, limit int64) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.scheme+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, api.Errorf(api.CodeUnavailable, "forwarding to leader %s: %v", addr, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	f.authorize(req)
	resp, err := f.client.Do(req)
	if err != nil {
		// The writes may or may not have reached the leader; none was
		// acknowledged, and each caller may retry.
		return nil, nil, api.Errorf(api.CodeUnavailable, "forwarding to leader %s: %v", addr, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, api.Errorf(api.CodeUnavailable, "reading the leader's answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(answer, &e) != nil || e.Code == "" {
			return nil, nil, api.Errorf(api.CodeUnavailable, "leader %s answered %s", addr, resp.Status)
		}
		return nil, resp.Header, &e
	}
	return answer, resp.Header, nil
}

// ApplyForwarded serves a write a follower forwarded: it applies cmd here if
// this node leads, and never forwards it again.
func (n *Node) ApplyForwarded(ctx context.Context, cmd []byte) (*api.AppliedCommand, error) {
	v := n.v.Load()
	if v == nil || !v.isLeader() {
		return nil, n.noLeaderError()
	}
	if len(cmd) == 0 {
		if err := v.raft.VerifyLeader().Error(); err != nil {
			return nil, raftError(err)
		}
		return &api.AppliedCommand{Index: v.fsm.AppliedIndex()}, nil
	}
	res, err := v.applyLocal(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &api.AppliedCommand{Index: res.Index, Instance: res.Instance, Meta: res.Meta}, nil
}
