package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// etcd-register measures what a registration with a TTL costs in etcd, the
// usual alternative to discoverd: a lease grant and a put of the instance
// under that lease, the two requests a service makes to register there.
// It speaks etcd's JSON gateway (POST /v3/lease/grant, POST /v3/kv/put,
// keys and values in base64) over plain HTTP with the same lean keep-alive
// client and the same --concurrency and --duration as register, the
// workers spread over the --etcd endpoints in turn, so that the bench needs
// no etcd library. One operation is both requests; its latency is theirs
// together.

// standaloneWorkloads need no discoverd server: the bench does not wait for
// one when they are all it runs.
var standaloneWorkloads = map[string]bool{"etcd-register": true}

func allStandalone(names []string) bool {
	for _, n := range names {
		if !standaloneWorkloads[n] {
			return false
		}
	}
	return len(names) > 0
}

// etcdLeaseTTL is the TTL of the leases granted, in seconds: the server's
// --ttl, as the instances registered by register live that long.
func (b *bench) etcdLeaseTTL() int64 { return max(int64(b.cfg.ttl.Seconds()), 1) }

func runEtcdRegister(ctx context.Context, b *bench) []Result {
	const name = "etcd-register"
	if len(b.cfg.etcd) == 0 {
		return []Result{{Workload: name, Skipped: "no --etcd endpoint given"}}
	}
	var hosts []string
	for _, e := range b.cfg.etcd {
		srv, err := parseServer(e)
		if err != nil {
			return failed(name, fmt.Errorf("--etcd: %v", err))
		}
		if srv.tls || !srv.raw {
			return failed(name, fmt.Errorf("--etcd %q: want http://host:port", e))
		}
		hosts = append(hosts, srv.host)
	}
	// A run prefix keeps the keys of runs against the same etcd apart.
	prefix := "/discoverd-bench/" + strconv.FormatInt(time.Now().UnixNano()%(1<<32), 36) + "/r-"
	grant := []byte(`{"TTL":` + strconv.FormatInt(b.etcdLeaseTTL(), 10) + `}`)
	mk := func(w int) (func(int64) error, func()) {
		c := newRawConn(hosts[w%len(hosts)])
		grantReq := request{method: http.MethodPost, path: "/v3/lease/grant", body: grant}
		grantReq.wire = encodeWire(nil, c.host, "", &grantReq)
		var body []byte
		return func(seq int64) error {
			st, resp, err := c.do(&grantReq)
			if err != nil {
				return fmt.Errorf("lease grant: %w", err)
			}
			if st != http.StatusOK {
				return fmt.Errorf("lease grant: %w", httpError(st, resp))
			}
			lease, err := etcdLeaseID(resp)
			if err != nil {
				return err
			}
			id := instanceID(prefix, seq)
			body = etcdPutBody(body[:0], id, appendInstanceBody(nil, id, seq), lease)
			put := request{method: http.MethodPost, path: "/v3/kv/put", body: body}
			st, resp, err = c.do(&put)
			if err != nil {
				return fmt.Errorf("put: %w", err)
			}
			if st != http.StatusOK {
				return fmt.Errorf("put: %w", httpError(st, resp))
			}
			return nil
		}, c.close
	}
	res := b.load(ctx, "granting leases and putting", b.cfg.concurrency, b.cfg.duration, 0, mk)
	row := loadRow(name, res)
	if row.Note == "" {
		row.Note = fmt.Sprintf("lease grant (TTL %ds) + put per op, concurrency %d, over %d etcd endpoints", b.etcdLeaseTTL(), b.cfg.concurrency, len(hosts))
	}
	return []Result{row}
}

// etcdLeaseID finds the lease id in a lease grant answer, e.g.
// {"header":{...},"ID":"7587871563528795906","TTL":"60"}: the gateway
// writes 64-bit numbers as JSON strings, which the put takes back as is.
func etcdLeaseID(resp []byte) (string, error) {
	const key = `"ID":`
	i := bytes.Index(resp, []byte(key))
	if i < 0 {
		return "", fmt.Errorf("lease grant: no ID in %q", truncate(resp, 200))
	}
	v := bytes.TrimSpace(resp[i+len(key):])
	v = bytes.TrimPrefix(v, []byte{'"'})
	end := bytes.IndexAny(v, "\",}")
	if end <= 0 {
		return "", fmt.Errorf("lease grant: bad ID in %q", truncate(resp, 200))
	}
	id := string(v[:end])
	if _, err := strconv.ParseInt(id, 10, 64); err != nil {
		return "", errors.New("lease grant: ID " + strconv.Quote(id) + " is not a number")
	}
	return id, nil
}

// etcdPutBody appends the JSON of a put of key=value under lease.
func etcdPutBody(dst []byte, key string, value []byte, lease string) []byte {
	dst = append(dst, `{"key":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, []byte(key))
	dst = append(dst, `","value":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, value)
	dst = append(dst, `","lease":"`...)
	dst = append(dst, lease...)
	return append(dst, `"}`...)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimSpace(string(b))
}
