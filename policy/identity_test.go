package policy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// makeCert creates and parses a real self-signed certificate, so the
// URI SANs go through crypto/x509's own encoding and parsing.
func makeCert(t *testing.T, cn string, uris ...string) *x509.Certificate {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPrincipalName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"URI SAN wins over CN", makeCert(t, "ops-admin", "spiffe://example.internal/app/crm"), "spiffe://example.internal/app/crm"},
		{"first URI SAN", makeCert(t, "", "spiffe://example.internal/a", "spiffe://example.internal/b"), "spiffe://example.internal/a"},
		{"CN without URI SAN", makeCert(t, "ops-admin"), "ops-admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PrincipalName(tc.cert)
			if err != nil || got != tc.want {
				t.Fatalf("PrincipalName = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	for name, c := range map[string]*x509.Certificate{
		"nil":             nil,
		"no SAN no CN":    makeCert(t, ""),
		"nil URI entry":   {URIs: []*url.URL{nil}, Subject: pkix.Name{CommonName: "ops-admin"}},
		"empty URI entry": {URIs: []*url.URL{{}}, Subject: pkix.Name{CommonName: "ops-admin"}},
	} {
		if got, err := PrincipalName(c); !errors.Is(err, ErrNoPrincipalName) {
			t.Errorf("%s: PrincipalName = %q, %v; want ErrNoPrincipalName", name, got, err)
		}
	}
}

func testDirectory(t *testing.T) *Directory {
	t.Helper()
	d, err := NewDirectory([]Principal{
		{URISAN: "spiffe://example.internal/app/crm-sync", Roles: []Role{RoleApp}},
		{URISAN: "spiffe://example.internal/app/acme-only", Roles: []Role{RoleApp}, Tenant: "acme"},
		{SubjectCN: "ops-admin", Roles: []Role{RoleOperator}},
		{SubjectCN: "auditor-acme", Roles: []Role{RoleAuditor}, Tenant: "acme"},
		{SubjectCN: "auditor-all", Roles: []Role{RoleAuditor, RoleOperator}},
	})
	if err != nil {
		t.Fatalf("NewDirectory: %v", err)
	}
	return d
}

func TestDirectoryLookup(t *testing.T) {
	t.Parallel()
	d := testDirectory(t)
	if d.Len() != 5 {
		t.Fatalf("Len = %d", d.Len())
	}
	cases := []struct {
		name      string
		cert      *x509.Certificate
		wantName  string
		wantRoles []Role
		tenant    string
	}{
		{"by URI SAN", makeCert(t, "whatever", "spiffe://example.internal/app/crm-sync"), "spiffe://example.internal/app/crm-sync", []Role{RoleApp}, ""},
		{"by URI SAN, fixed tenant", makeCert(t, "", "spiffe://example.internal/app/acme-only"), "spiffe://example.internal/app/acme-only", []Role{RoleApp}, "acme"},
		{"by CN", makeCert(t, "ops-admin"), "ops-admin", []Role{RoleOperator}, ""},
		{"by CN, bound auditor", makeCert(t, "auditor-acme"), "auditor-acme", []Role{RoleAuditor}, "acme"},
		{"first URI SAN decides", makeCert(t, "", "spiffe://example.internal/app/crm-sync", "spiffe://example.internal/app/acme-only"), "spiffe://example.internal/app/crm-sync", []Role{RoleApp}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := d.Lookup(tc.cert)
			if !ok {
				t.Fatal("not found")
			}
			if p.Name != tc.wantName || !slices.Equal(p.Roles, tc.wantRoles) || p.Tenant != tc.tenant {
				t.Fatalf("Lookup = %+v", p)
			}
		})
	}

	notFound := map[string]*x509.Certificate{
		"unknown URI SAN":         makeCert(t, "", "spiffe://example.internal/app/other"),
		"unknown CN":              makeCert(t, "intruder"),
		"no name":                 makeCert(t, ""),
		"nil cert":                nil,
		"operator CN behind URI":  makeCert(t, "ops-admin", "spiffe://example.internal/app/unknown"),
		"URI SAN only as 2nd SAN": makeCert(t, "", "spiffe://example.internal/app/other", "spiffe://example.internal/app/crm-sync"),
		"CN equal to a URI entry": makeCert(t, "spiffe://example.internal/app/crm-sync"),
		"URI equal to CN entry":   makeCert(t, "", "ops-admin"),
		"URI case differs":        makeCert(t, "", "spiffe://example.internal/APP/crm-sync"),
		"CN case differs":         makeCert(t, "OPS-ADMIN"),
	}
	for name, c := range notFound {
		if p, ok := d.Lookup(c); ok {
			t.Errorf("%s: Lookup found %+v; want not found", name, p)
		}
	}
	var nilDir *Directory
	if _, ok := nilDir.Lookup(makeCert(t, "ops-admin")); ok || nilDir.Len() != 0 {
		t.Error("nil Directory found a principal")
	}
}

func TestDirectoryLookupReturnsCopy(t *testing.T) {
	t.Parallel()
	d := testDirectory(t)
	c := makeCert(t, "ops-admin")
	p, _ := d.Lookup(c)
	p.Roles[0] = RoleApp
	again, _ := d.Lookup(c)
	if again.Roles[0] != RoleOperator {
		t.Fatalf("caller mutated the directory: %v", again.Roles)
	}
}

func TestNewDirectoryValidation(t *testing.T) {
	t.Parallel()
	app := []Role{RoleApp}
	cases := []struct {
		name string
		ps   []Principal
		msg  string
	}{
		{"neither id", []Principal{{Roles: app}}, "needs uri_san or subject_cn"},
		{"both ids", []Principal{{URISAN: "spiffe://x/a", SubjectCN: "a", Roles: app}}, "not both"},
		{"relative URI", []Principal{{URISAN: "app/crm", Roles: app}}, "absolute URI"},
		{"unparsable URI", []Principal{{URISAN: "spiffe://x/%zz", Roles: app}}, "absolute URI"},
		{"CN control char", []Principal{{SubjectCN: "a\nb", Roles: app}}, "printable"},
		{"duplicate URI", []Principal{{URISAN: "spiffe://x/a", Roles: app}, {URISAN: "spiffe://x/a", Roles: []Role{RoleAuditor}}}, "twice"},
		{"duplicate CN", []Principal{{SubjectCN: "a", Roles: app}, {SubjectCN: "a", Roles: app}}, "twice"},
		{"URI equals CN", []Principal{{URISAN: "x:a", Roles: app}, {SubjectCN: "x:a", Roles: app}}, "twice"},
		{"no roles", []Principal{{SubjectCN: "a"}}, "no roles"},
		{"unknown role", []Principal{{SubjectCN: "a", Roles: []Role{"admin"}}}, "unknown role"},
		{"empty role", []Principal{{SubjectCN: "a", Roles: []Role{""}}}, "unknown role"},
		{"role case", []Principal{{SubjectCN: "a", Roles: []Role{"App"}}}, "unknown role"},
		{"repeated role", []Principal{{SubjectCN: "a", Roles: []Role{RoleApp, RoleApp}}}, "twice"},
		{"operator with tenant", []Principal{{SubjectCN: "a", Roles: []Role{RoleOperator}, Tenant: "acme"}}, "take no tenant"},
		{"operator and app", []Principal{{SubjectCN: "a", Roles: []Role{RoleOperator, RoleApp}}}, "app role"},
		{"bad tenant", []Principal{{SubjectCN: "a", Roles: app, Tenant: "acme/x"}}, "valid id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDirectory(tc.ps)
			if err == nil || !errors.Is(err, ErrInvalidDirectory) {
				t.Fatalf("NewDirectory = %v, %v; want ErrInvalidDirectory", d, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
	if d, err := NewDirectory(nil); err != nil || d.Len() != 0 {
		t.Fatalf("empty directory: %v", err)
	}
}

func TestPrincipalSubject(t *testing.T) {
	t.Parallel()
	p := Principal{Name: "spiffe://x/a", Roles: []Role{RoleApp}}
	s := p.Subject("acme", "user-1")
	want := Subject{Principal: "spiffe://x/a", Roles: []Role{RoleApp}, Tenant: "acme", OnBehalfOf: "user-1"}
	if s.Principal != want.Principal || !slices.Equal(s.Roles, want.Roles) || s.Tenant != want.Tenant || s.OnBehalfOf != want.OnBehalfOf {
		t.Fatalf("Subject = %+v", s)
	}
	s.Roles[0] = RoleOperator
	if p.Roles[0] != RoleApp {
		t.Fatal("Subject aliases the principal's roles")
	}
}

func TestParseRoles(t *testing.T) {
	t.Parallel()
	got, i, err := ParseRoles([]string{"auditor", "app"})
	if err != nil || i != -1 || !slices.Equal(got, []Role{RoleAuditor, RoleApp}) {
		t.Fatalf("ParseRoles = %v, %d, %v", got, i, err)
	}
	for _, tc := range []struct {
		names []string
		i     int
		msg   string
	}{
		{nil, -1, `at least one role is required ("app", "operator" or "auditor")`},
		{[]string{}, -1, `at least one role is required ("app", "operator" or "auditor")`},
		{[]string{"operator", "admin"}, 1, `not a role (want "app", "operator" or "auditor")`},
		{[]string{"App"}, 0, `not a role (want "app", "operator" or "auditor")`},
		{[]string{""}, 0, `not a role (want "app", "operator" or "auditor")`},
		{[]string{"operator", "auditor", "operator"}, 2, "listed twice"},
	} {
		_, i, err := ParseRoles(tc.names)
		if err == nil || i != tc.i || err.Error() != tc.msg || !errors.Is(err, ErrInvalidDirectory) {
			t.Errorf("ParseRoles(%q) = %d, %v; want %d, %q", tc.names, i, err, tc.i, tc.msg)
		}
	}
}
