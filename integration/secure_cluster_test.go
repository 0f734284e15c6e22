package integration

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
	"github.com/discoverd/discoverd/bus"
	"github.com/discoverd/discoverd/connlimit"
	"github.com/discoverd/discoverd/node"
	"github.com/discoverd/discoverd/pki"
)

// useSecureSuite makes every NewCluster of the test secure and every helper
// request speak HTTPS with the admin token, until the test ends.
func useSecureSuite(t *testing.T) *Security {
	sec := NewSecurity(t)
	// The daemon's default connection limit: with TLS its counting sits
	// under the TLS layer, and nodes must still know each other by their
	// certificates through it.
	defaultOptions = []Option{WithSecurity(sec), WithMaxConnsPerClient(connlimit.DefaultMax)}
	tr := &http.Transport{TLSClientConfig: sec.ClientTLS.Clone()}
	suiteClient = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	suiteToken = AdminSecret
	t.Cleanup(func() {
		defaultOptions, suiteClient, suiteToken = nil, nil, ""
		tr.CloseIdleConnections()
	})
	return sec
}

// TestClusterSuiteOverMutualTLS runs every test of the cluster suite on
// clusters whose every port speaks TLS, whose nodes authenticate each other
// with certificates from one CA, and whose clients need a token.
func TestClusterSuiteOverMutualTLS(t *testing.T) {
	useSecureSuite(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"WritesThroughFollowerAndProxyAreVisibleEverywhere", TestClusterWritesThroughFollowerAndProxyAreVisibleEverywhere},
		{"SSEThroughProxy", TestClusterSSEThroughProxy},
		{"LeaderKillFailsOverWithoutExpiringLiveInstances", TestClusterLeaderKillFailsOverWithoutExpiringLiveInstances},
		{"ExpiryAfterFailoverWithinTTLPlus3s", TestClusterExpiryAfterFailoverWithinTTLPlus3s},
		{"RestartedFollowerDeliversHeartbeatsToLeader", TestClusterRestartedFollowerDeliversHeartbeatsToLeader},
		{"MinorityAnswers503AndLosesNoAckedWrite", TestClusterMinorityAnswers503AndLosesNoAckedWrite},
		{"RestartAllVotersKeepsRegistry", TestClusterRestartAllVotersKeepsRegistry},
		{"PromoteAndDemote", TestClusterPromoteAndDemote},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// TestForeignCertificateCannotJoin: a node whose certificate comes from
// another CA can neither speak Raft to a voter, nor call /raft/apply, nor
// join the NATS cluster as a leafnode.
func TestForeignCertificateCannotJoin(t *testing.T) {
	sec := NewSecurity(t)
	c := NewCluster(t, 3, 0, WithSecurity(sec))
	leader := c.WaitForLeader(10 * time.Second)
	foreign := NewSecurity(t) // another CA, its own node certificate

	// The foreign node trusts the cluster's CA, so only its own certificate
	// can fail the handshake.
	foreignClient := foreign.TLS.ClientConfig(nil)
	foreignClient.VerifyConnection = func(cs tls.ConnectionState) error { return pki.VerifyServer(cs, sec.TLS.Pool()) }

	t.Run("raft", func(t *testing.T) {
		cfg := foreignClient.Clone()
		cfg.NextProtos = []string{node.RaftALPN}
		conn, err := tls.Dial("tcp", leader.Addr, cfg)
		if err == nil {
			// TLS 1.3 reports a refused client certificate on the first read.
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			conn.Write([]byte{0})
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a Raft connection with a foreign certificate: %v, want a refused certificate", err)
		}
	})

	t.Run("raft/apply", func(t *testing.T) {
		post := func(cfg *tls.Config, header map[string]string) (int, error) {
			tr := &http.Transport{TLSClientConfig: cfg}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest("POST", leader.URL()+node.ApplyPath, nil)
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		if _, err := post(foreignClient, map[string]string{api.ForwardedHeader: "1"}); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("/raft/apply with a foreign certificate: %v, want a refused certificate", err)
		}
		// Without a certificate, the marker header makes no node.
		if code, err := post(sec.ClientTLS, map[string]string{api.ForwardedHeader: "1"}); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("/raft/apply without a certificate: %d %v, want 401", code, err)
		}
		// A cluster node's certificate passes (an empty command is a read barrier).
		if code, err := post(sec.TLS.ClientConfig(nil), map[string]string{api.ForwardedHeader: "1"}); err != nil || code != http.StatusOK {
			t.Fatalf("/raft/apply from a node: %d %v, want 200", code, err)
		}
	})

	t.Run("nats leafnode", func(t *testing.T) {
		info := leader.Node().Info()
		logs := &lockedBuffer{}
		// It trusts the cluster's CA: only its own certificate can fail.
		peer := foreign.TLS.StaticServerConfig(true)
		peer.RootCAs = sec.TLS.Pool()
		srv, err := bus.StartServer(bus.ServerConfig{
			Name:        "foreign",
			ClientAddr:  bus.ClientAddrOff,
			LeafRemotes: []string{info.NATSLeaf},
			TLS:         &bus.ServerTLS{Client: foreign.TLS.StaticServerConfig(false), Peer: peer},
			Log:         zerolog.New(logs),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		// With TLS 1.3 the dialer learns of its refused certificate when
		// the voter closes the connection right after the handshake; it
		// retries, and is closed every time.
		WaitFor(t, 30*time.Second, "the voter to close the foreign leafnode three times", func() bool {
			return strings.Count(logs.String(), "Leafnode connection closed") >= 3
		})
		if strings.Contains(logs.String(), "ubscription") {
			t.Fatalf("the foreign leafnode exchanged subscriptions with the voter: %s", logs.String())
		}
	})
}

// TestProxyPassesTheCallersIdentity: a proxy reaches voters with its node
// certificate, but each request is judged by its caller's token, so a read
// token cannot write through a proxy and a service token writes only its
// own services.
func TestProxyPassesTheCallersIdentity(t *testing.T) {
	useSecureSuite(t)
	c := NewCluster(t, 3, 1)
	c.WaitForLeader(10 * time.Second)
	proxy := c.Proxies()[0]
	mustDo(t, "PUT", proxy.URL()+"/services/db", api.ServiceConfig{})
	for _, tc := range []struct {
		token, path string
		want        int
	}{
		{"", "/services/web-a", http.StatusUnauthorized},
		{ReadSecret, "/services/web-a", http.StatusForbidden},
		{ServiceSecret, "/services/db/instances/x", http.StatusForbidden},
		{ServiceSecret, "/services/web-a", http.StatusOK},
		{ReadSecret, "/services", http.StatusOK},
	} {
		suiteToken = tc.token
		method := "PUT"
		var body any = api.ServiceConfig{}
		if strings.Contains(tc.path, "/instances/") {
			body = api.Instance{Addr: "10.0.0.1:80", Proto: "http"}
		}
		if tc.path == "/services" {
			method, body = "GET", nil
		}
		code, b := do(t, method, proxy.URL()+tc.path, body)
		if code != tc.want {
			t.Errorf("%s %s through the proxy with token %q: %d %s, want %d", method, tc.path, tc.token, code, b, tc.want)
		}
	}
	suiteToken = AdminSecret
}
