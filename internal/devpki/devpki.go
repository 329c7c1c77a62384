// Package devpki makes a small throwaway PKI for development and tests: a
// CA, a server certificate for the loopback names, and client certificates
// carrying a URI SAN or a subject CN. It is not for production: operators
// issue certificates from their own PKI (docs/operations.md).
package devpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority held in memory.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// Leaf is an issued certificate and its key, PEM encoded.
type Leaf struct {
	CertPEM []byte
	KeyPEM  []byte
	Cert    *x509.Certificate
}

// TLSCertificate returns the leaf as a tls.Certificate.
func (l Leaf) TLSCertificate() (tls.Certificate, error) { return tls.X509KeyPair(l.CertPEM, l.KeyPEM) }

// NewCA creates a CA with the given common name, valid for a year.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"vaultd dev PKI"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pool returns a cert pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server issues a server certificate for the given DNS names and IPs.
func (ca *CA) Server(names ...string) (Leaf, error) {
	tmpl := ca.template(names[0])
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tmpl)
}

// Client issues a client certificate with subject CN cn and, when uri is
// not empty, a URI SAN (the principal name vaultd uses first).
func (ca *CA) Client(cn, uri string) (Leaf, error) {
	tmpl := ca.template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			return Leaf{}, fmt.Errorf("devpki: bad URI SAN: %w", err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	return ca.issue(tmpl)
}

func (ca *CA) template(cn string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func (ca *CA) issue(tmpl *x509.Certificate) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Leaf{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Leaf{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		Cert:    cert,
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// WriteFiles writes name.crt and name.key (0600) into dir.
func (l Leaf) WriteFiles(dir, name string) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, l.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, l.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// Client describes a client certificate to make with Generate.
type Client struct {
	Name string // file base name
	CN   string
	URI  string
}

// Generate writes a complete dev PKI into dir: ca.crt, server.crt/key for
// 127.0.0.1, ::1 and localhost, and each client's crt/key. Existing files
// are kept (idempotent) unless the CA is missing.
func Generate(dir string, clients []Client) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caPath := filepath.Join(dir, "ca.crt")
	if _, err := os.Stat(caPath); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ca, err := NewCA("vaultd dev CA")
	if err != nil {
		return err
	}
	srv, err := ca.Server("localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	if _, _, err := srv.WriteFiles(dir, "server"); err != nil {
		return err
	}
	for _, c := range clients {
		l, err := ca.Client(c.CN, c.URI)
		if err != nil {
			return err
		}
		if _, _, err := l.WriteFiles(dir, c.Name); err != nil {
			return err
		}
	}
	// The CA is written last: its presence marks a complete PKI.
	return os.WriteFile(caPath, ca.CertPEM, 0o644)
}

func pemDecode(p []byte) ([]byte, []byte) {
	b, rest := pem.Decode(p)
	if b == nil {
		return nil, rest
	}
	return b.Bytes, rest
}
