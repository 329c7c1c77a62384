package devpki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateChainsAndIdempotent(t *testing.T) {
	dir := t.TempDir()
	clients := []Client{{Name: "app", CN: "app", URI: "spiffe://dev.local/app"}, {Name: "ops", CN: "ops-admin"}}
	if err := Generate(dir, clients); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	for _, name := range []string{"server", "app", "ops"} {
		l, err := os.ReadFile(filepath.Join(dir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, name+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s.key mode: %v %v", name, st.Mode(), err)
		}
		leaf := Leaf{CertPEM: l}
		c, err := x509.ParseCertificate(mustDER(t, leaf.CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		usage := x509.ExtKeyUsageClientAuth
		if name == "server" {
			usage = x509.ExtKeyUsageServerAuth
			if err := c.VerifyHostname("127.0.0.1"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("%s does not chain: %v", name, err)
		}
		if name == "app" && (len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://dev.local/app") {
			t.Fatalf("app URI SAN: %v", c.URIs)
		}
	}
	// Second run keeps the files.
	before, _ := os.ReadFile(filepath.Join(dir, "server.crt"))
	if err := Generate(dir, clients); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "server.crt"))
	if string(before) != string(after) {
		t.Fatal("Generate is not idempotent")
	}
}

func mustDER(t *testing.T, p []byte) []byte {
	t.Helper()
	b, _ := pemDecode(p)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b
}
