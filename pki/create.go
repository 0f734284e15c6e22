package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// File names in a certificate folder.
const (
	CAFile    = "discoverd-ca.pem"
	CAKeyFile = "discoverd-ca-key.pem"
)

// Validity of what CreateCA and CreateCert make.
const (
	CAValidity   = 5 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
)

var certNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// CreateCA writes a new CA's certificate and key into dir (created if
// missing) and returns their paths. It refuses to overwrite a CA.
func CreateCA(dir string) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	err = issue(dir, certPath, keyPath, nil, nil, func(serial *big.Int, now time.Time) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: "discoverd CA " + serial.Text(16)[:8], Organization: []string{"discoverd"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(CAValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
	})
	if err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// CreateCert writes name.pem and name-key.pem into dir, signed by the CA in
// dir, valid for server and client use for hosts (IP addresses or DNS
// names) and for localhost and 127.0.0.1.
func CreateCert(dir, name string, hosts []string) (certPath, keyPath string, err error) {
	if !certNameRE.MatchString(name) {
		return "", "", fmt.Errorf("certificate name %q: want 1-64 characters of [A-Za-z0-9_.-]", name)
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	err = issue(dir, certPath, keyPath, ca, caKey, func(serial *big.Int, now time.Time) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: serial,
			Subject:      pkix.Name{CommonName: name, Organization: []string{"discoverd"}},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(CertValidity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		seen := map[string]bool{}
		for _, h := range append(hosts, "localhost", "127.0.0.1") {
			h = strings.TrimSpace(h)
			if h == "" || seen[h] {
				continue
			}
			seen[h] = true
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		if tmpl.NotAfter.After(ca.NotAfter) {
			tmpl.NotAfter = ca.NotAfter
		}
		return tmpl
	})
	if err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// issue makes a new P-256 key and a serial number, signs the certificate
// template builds with parent's key (the new key itself, self-signed, when
// parent is nil) and writes the pair. It refuses to overwrite either file.
func issue(dir, certPath, keyPath string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, template func(serial *big.Int, now time.Time) *x509.Certificate) error {
	if err := refuseExisting(certPath, keyPath); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := serialNumber()
	if err != nil {
		return err
	}
	tmpl := template(serial, time.Now())
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return err
	}
	return writePair(dir, certPath, keyPath, der, key)
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA (create one with `discoverctl tls ca create`): %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", filepath.Join(dir, CAFile))
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", filepath.Join(dir, CAKeyFile))
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	return ca, key, nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s already exists; remove it first to make a new one", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func writePair(dir, certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
