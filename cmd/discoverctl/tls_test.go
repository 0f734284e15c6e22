package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/testnode"
)

func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	ok(t, "127.0.0.1:1", "tls", "ca", "create", "--dir", dir)
	out := ok(t, "127.0.0.1:1", "tls", "cert", "create", "--dir", dir, "--name", "node1", "--hosts", "node1,10.0.0.7")
	if !strings.Contains(out, filepath.Join(dir, "node1.pem")) {
		t.Fatalf("output %q does not name the certificate", out)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "discoverd-ca.pem"))
	certPEM, _ := os.ReadFile(filepath.Join(dir, "node1.pem"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("discoverd-ca.pem holds no certificate")
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("node1.pem holds no PEM block")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"node1", "10.0.0.7", "localhost", "127.0.0.1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("certificate for %s, usage %v: %v", host, usage, err)
			}
		}
	}
	if info, err := os.Stat(filepath.Join(dir, "node1-key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v, want 0600", err, info.Mode().Perm())
	}
	// Nothing is overwritten.
	if code, _, errOut := ctl(t, "127.0.0.1:1", "tls", "ca", "create", "--dir", dir); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("a second CA in the same folder: exit %d, %q", code, errOut)
	}
	if code, _, errOut := ctl(t, "127.0.0.1:1", "tls", "cert", "create", "--dir", t.TempDir(), "--name", "x"); code != 1 || !strings.Contains(errOut, "tls ca create") {
		t.Fatalf("a certificate without a CA: exit %d, %q", code, errOut)
	}
}

func TestTokenAndCAFlags(t *testing.T) {
	srv := testnode.Start(t, testnode.Options{TTL: time.Minute, Secure: true})
	addr := srv.Addr()
	ok(t, addr, "--ca", srv.CAFile(), "--token", testnode.AdminSecret, "add-service", "web")
	if out := ok(t, addr, "--ca", srv.CAFile(), "--token", testnode.ReadSecret, "services"); !strings.Contains(out, "web") {
		t.Fatalf("services: %q", out)
	}
	if code, _, errOut := ctl(t, addr, "--ca", srv.CAFile(), "--token", testnode.ReadSecret, "add-service", "web-x"); code != 1 || !strings.Contains(errOut, "may not") {
		t.Fatalf("a read token writing: exit %d, %q", code, errOut)
	}
	if code, _, errOut := ctl(t, addr, "--ca", srv.CAFile(), "services"); code != 1 || !strings.Contains(errOut, "needs a token") {
		t.Fatalf("no token: exit %d, %q", code, errOut)
	}
	t.Setenv("DISCOVERD_TOKEN", testnode.AdminSecret)
	t.Setenv("DISCOVERD_CA", srv.CAFile())
	ok(t, addr, "services")
}
