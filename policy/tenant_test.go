package policy

import (
	"errors"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestResolveTenant(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	good := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())                                // tenant acme, sub user-42@acme
	globex := sign(t, jose.RS256, k.rsa, "rsa1", with(goodClaims(), "tenant_id", "globex")) // another tenant
	forged := sign(t, jose.RS256, k.rsaOther, "rsa1", with(goodClaims(), "tenant_id", "globex"))
	noSub := sign(t, jose.RS256, k.rsa, "rsa1", without(goodClaims(), "sub"))

	unboundApp := Principal{Name: "spiffe://x/app", Roles: []Role{RoleApp}}
	boundApp := Principal{Name: "spiffe://x/acme", Roles: []Role{RoleApp}, Tenant: "acme"}
	operator := Principal{Name: "ops-admin", Roles: []Role{RoleOperator}}
	unboundAuditor := Principal{Name: "auditor-all", Roles: []Role{RoleAuditor}}
	boundAuditor := Principal{Name: "auditor-acme", Roles: []Role{RoleAuditor}, Tenant: "acme"}
	opAuditor := Principal{Name: "op-aud", Roles: []Role{RoleOperator, RoleAuditor}}
	appAuditor := Principal{Name: "app-aud", Roles: []Role{RoleApp, RoleAuditor}}
	noRoles := Principal{Name: "nobody"}

	cases := []struct {
		name           string
		p              Principal
		header         string
		v              *Verifier
		tenant, behalf string
		err            error
	}{
		{"unbound app, good JWT", unboundApp, good, v, "acme", "user-42@acme", nil},
		{"unbound app, other tenant's JWT", unboundApp, globex, v, "globex", "user-42@acme", nil},
		{"unbound app, JWT without sub", unboundApp, noSub, v, "acme", "", nil},
		{"unbound app, no header", unboundApp, "", v, "", "", ErrMissingAssertion},
		{"unbound app, forged JWT", unboundApp, forged, v, "", "", ErrInvalidAssertion},
		{"unbound app, garbage", unboundApp, "acme", v, "", "", ErrInvalidAssertion},
		{"unbound app, no verifier", unboundApp, good, nil, "", "", ErrInvalidAssertion},
		{"unbound app, no verifier, no header", unboundApp, "", nil, "", "", ErrMissingAssertion},
		// A fixed tenant is never changed by the header, valid or not.
		{"bound app, other tenant's JWT", boundApp, globex, v, "acme", "", nil},
		{"bound app, garbage header", boundApp, "garbage", v, "acme", "", nil},
		{"bound app, no header", boundApp, "", v, "acme", "", nil},
		{"bound app, no verifier", boundApp, good, nil, "acme", "", nil},
		{"bound auditor, other tenant's JWT", boundAuditor, globex, v, "acme", "", nil},
		// Operators are platform-wide and need no assertion.
		{"operator, no header", operator, "", nil, "", "", nil},
		{"operator, JWT", operator, good, v, "", "", nil},
		{"operator, garbage", operator, "garbage", v, "", "", nil},
		// An unbound auditor is platform-wide; a presented JWT narrows it.
		{"unbound auditor, no header", unboundAuditor, "", v, "", "", nil},
		{"unbound auditor, JWT", unboundAuditor, globex, v, "globex", "user-42@acme", nil},
		{"unbound auditor, forged JWT", unboundAuditor, forged, v, "", "", ErrInvalidAssertion},
		{"operator+auditor, no header", opAuditor, "", v, "", "", nil},
		{"operator+auditor, bad JWT", opAuditor, "x.y.z", v, "", "", ErrInvalidAssertion},
		// The app role needs an assertion even alongside auditor.
		{"app+auditor, no header", appAuditor, "", v, "", "", ErrMissingAssertion},
		{"app+auditor, JWT", appAuditor, good, v, "acme", "user-42@acme", nil},
		{"no roles", noRoles, good, v, "", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant, behalf, err := ResolveTenant(tc.p, tc.header, tc.v)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v; want %v", err, tc.err)
				}
				if tenant != "" || behalf != "" {
					t.Fatalf("refusal returned tenant %q, on behalf of %q", tenant, behalf)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if tenant != tc.tenant || behalf != tc.behalf {
				t.Fatalf("ResolveTenant = %q, %q; want %q, %q", tenant, behalf, tc.tenant, tc.behalf)
			}
		})
	}
}

// TestResolveThenDecide walks the whole chain for the cases that matter:
// a JWT can give an unbound app a tenant, but never another tenant's data.
func TestResolveThenDecide(t *testing.T) {
	t.Parallel()
	k := testKeys()
	v := newTestVerifier(t)
	d := testDirectory(t)
	acmeJWT := sign(t, jose.ES256, k.ec256, "ec256", goodClaims())
	globexJWT := sign(t, jose.ES256, k.ec256, "ec256", with(goodClaims(), "tenant_id", "globex"))

	decide := func(certCN string, uris []string, header string, a Action, rt string) (Decision, error) {
		p, ok := d.Lookup(makeCert(t, certCN, uris...))
		if !ok {
			return Decision{}, errors.New("unknown principal")
		}
		tenant, behalf, err := ResolveTenant(p, header, v)
		if err != nil {
			return Decision{}, err
		}
		return Decide(p.Subject(tenant, behalf), a, Resource{Tenant: rt}), nil
	}

	crm := []string{"spiffe://example.internal/app/crm-sync"}
	acmeOnly := []string{"spiffe://example.internal/app/acme-only"}
	if dec, err := decide("", crm, acmeJWT, ActIntegrationUse, "acme"); err != nil || !dec.Allow {
		t.Fatalf("unbound app with acme JWT on acme: %+v %v", dec, err)
	}
	if dec, err := decide("", crm, acmeJWT, ActIntegrationUse, "globex"); err != nil || dec.Allow {
		t.Fatalf("unbound app with acme JWT on globex: %+v %v", dec, err)
	}
	if dec, err := decide("", acmeOnly, globexJWT, ActIntegrationUse, "globex"); err != nil || dec.Allow {
		t.Fatalf("bound app escaped its tenant via JWT: %+v %v", dec, err)
	}
	if _, err := decide("", crm, "", ActIntegrationList, "acme"); !errors.Is(err, ErrMissingAssertion) {
		t.Fatalf("unbound app without JWT: %v", err)
	}
	if dec, err := decide("ops-admin", nil, "", ActIntegrationRead, ""); err != nil || dec.Allow {
		t.Fatalf("operator read a token: %+v %v", dec, err)
	}
	if dec, err := decide("ops-admin", nil, acmeJWT, ActIntegrationRead, "acme"); err != nil || dec.Allow {
		t.Fatalf("operator with JWT read a token: %+v %v", dec, err)
	}
	if dec, err := decide("ops-admin", nil, "", ActTenantCreate, "newco"); err != nil || !dec.Allow {
		t.Fatalf("operator tenant.create: %+v %v", dec, err)
	}
	if dec, err := decide("auditor-acme", nil, "", ActAuditRead, ""); err != nil || dec.Allow {
		t.Fatalf("bound auditor read all tenants: %+v %v", dec, err)
	}
	if dec, err := decide("auditor-all", nil, "", ActAuditRead, ""); err != nil || !dec.Allow {
		t.Fatalf("unbound auditor read all: %+v %v", dec, err)
	}
}
