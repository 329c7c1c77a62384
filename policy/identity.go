package policy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/vaultd/vaultd/internal/ids"
)

// Role is a principal's role (docs/api.md, "Calling vaultd").
type Role string

// Roles.
const (
	// RoleApp stores tokens, proxies and executes calls, and reads and
	// disconnects its tenant's integrations.
	RoleApp Role = "app"
	// RoleOperator manages tenants, keys and providers platform-wide and
	// never reads or uses a token.
	RoleOperator Role = "operator"
	// RoleAuditor reads the audit trail: a tenant-bound auditor its tenant's
	// events only, an unbound one every tenant's.
	RoleAuditor Role = "auditor"
)

// roles are every role, in the order messages list them.
var roles = []Role{RoleApp, RoleOperator, RoleAuditor}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(roles, r) }

// ParseRoles reads a principal's roles as written in the config file: at
// least one, each a known role, none twice. A refusal gives the index of
// the entry at fault, or -1 when the list as a whole is; its message is
// the bare reason, for the caller to prefix with where the list came from,
// and it matches ErrInvalidDirectory.
func ParseRoles(names []string) ([]Role, int, error) {
	q := make([]string, len(roles))
	for i, r := range roles {
		q[i] = fmt.Sprintf("%q", r)
	}
	want := strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1] // "app", "operator" or "auditor"
	if len(names) == 0 {
		return nil, -1, &roleError{"at least one role is required (" + want + ")"}
	}
	out := make([]Role, 0, len(names))
	for i, n := range names {
		r := Role(n)
		if !r.Valid() {
			return nil, i, &roleError{"not a role (want " + want + ")"}
		}
		if slices.Contains(out, r) {
			return nil, i, &roleError{"listed twice"}
		}
		out = append(out, r)
	}
	return out, -1, nil
}

// roleError is a refused role list; its text is only the reason.
type roleError struct{ reason string }

func (e *roleError) Error() string { return e.reason }
func (e *roleError) Unwrap() error { return ErrInvalidDirectory }

// Sentinel errors of the identity layer.
var (
	// ErrNoPrincipalName: the certificate carries neither a URI SAN nor a
	// subject CN, so it names nobody.
	ErrNoPrincipalName = errors.New("policy: certificate names no principal (no URI SAN, no subject CN)")
	// ErrInvalidDirectory: the configured principals are inconsistent.
	ErrInvalidDirectory = errors.New("policy: invalid principals")
)

// PrincipalName returns the name a client certificate authenticates as:
// the string form of its first URI SAN if it has any, else its subject
// common name (docs/api.md). A certificate with neither is an error.
func PrincipalName(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", ErrNoPrincipalName
	}
	if len(cert.URIs) > 0 {
		if cert.URIs[0] == nil {
			return "", ErrNoPrincipalName
		}
		if s := cert.URIs[0].String(); s != "" {
			return s, nil
		}
		// An empty first URI SAN still takes precedence over the CN:
		// falling back would let the CN decide for a cert that has a URI.
		return "", ErrNoPrincipalName
	}
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName, nil
	}
	return "", ErrNoPrincipalName
}

// Principal is one configured caller ([[principals]] in the config file).
// Exactly one of URISAN and SubjectCN identifies it; Name is the identity
// used in audit ("actor") and is filled in by NewDirectory and Lookup.
type Principal struct {
	Name      string
	URISAN    string
	SubjectCN string
	Roles     []Role
	// Tenant is the fixed tenant of an app or auditor principal; "" means
	// the tenant comes from a verified tenant-context JWT per request (app)
	// or that the auditor is platform-wide. Operators never have one.
	Tenant string
}

// HasRole reports whether p holds role r.
func (p Principal) HasRole(r Role) bool { return slices.Contains(p.Roles, r) }

// Subject is the authorization subject of a request made by p for tenant
// (as resolved by ResolveTenant) on behalf of onBehalfOf.
func (p Principal) Subject(tenant, onBehalfOf string) Subject {
	return Subject{
		Principal:  p.Name,
		Roles:      slices.Clone(p.Roles),
		Tenant:     tenant,
		OnBehalfOf: onBehalfOf,
	}
}

func (p Principal) clone() Principal {
	p.Roles = slices.Clone(p.Roles)
	return p
}

// Directory maps client certificates to configured principals. It is
// immutable once built, so it is safe for concurrent use; a config reload
// builds a new one.
//
// Matching: a certificate's principal name is its first URI SAN if it has
// one, else its subject CN (PrincipalName). An entry configured by uri_san
// matches a certificate whose first URI SAN equals it; an entry configured
// by subject_cn matches only a certificate that has NO URI SAN and whose CN
// equals it. So a certificate carrying a URI SAN can never be taken for a
// CN-configured principal, whatever its CN says.
type Directory struct {
	byURI map[string]Principal
	byCN  map[string]Principal
}

// NewDirectory validates ps and builds a Directory. It refuses: an entry
// with both or neither of URISAN and SubjectCN; a URI SAN that is not an
// absolute URI; a CN that is not printable UTF-8; the same name configured
// twice (also across uri_san and subject_cn, since the name is the audit
// actor); no roles, an unknown or repeated role; a tenant that is not a
// valid id; an operator with a tenant; and an operator that also holds the
// app role (operators never use tokens, docs/api.md, so one identity may
// not be both).
func NewDirectory(ps []Principal) (*Directory, error) {
	d := &Directory{byURI: map[string]Principal{}, byCN: map[string]Principal{}}
	names := map[string]int{}
	for i, p := range ps {
		where := fmt.Sprintf("principal #%d", i+1)
		switch {
		case p.URISAN != "" && p.SubjectCN != "":
			return nil, fmt.Errorf("%w: %s: set uri_san or subject_cn, not both", ErrInvalidDirectory, where)
		case p.URISAN == "" && p.SubjectCN == "":
			return nil, fmt.Errorf("%w: %s: needs uri_san or subject_cn", ErrInvalidDirectory, where)
		}
		if p.URISAN != "" {
			u, err := url.Parse(p.URISAN)
			if err != nil || u.Scheme == "" {
				return nil, fmt.Errorf("%w: %s: uri_san %q is not an absolute URI", ErrInvalidDirectory, where, p.URISAN)
			}
			// Compare in the form crypto/x509 produces for a parsed SAN.
			p.Name = u.String()
			p.URISAN = p.Name
		} else {
			if !printable(p.SubjectCN) {
				return nil, fmt.Errorf("%w: %s: subject_cn is not printable UTF-8", ErrInvalidDirectory, where)
			}
			p.Name = p.SubjectCN
		}
		where = fmt.Sprintf("principal %q", p.Name)
		if j, dup := names[p.Name]; dup {
			return nil, fmt.Errorf("%w: %s configured twice (#%d and #%d)", ErrInvalidDirectory, where, j, i+1)
		}
		names[p.Name] = i + 1

		if len(p.Roles) == 0 {
			return nil, fmt.Errorf("%w: %s has no roles", ErrInvalidDirectory, where)
		}
		seen := map[Role]bool{}
		for _, r := range p.Roles {
			if !r.Valid() {
				return nil, fmt.Errorf("%w: %s: unknown role %q", ErrInvalidDirectory, where, r)
			}
			if seen[r] {
				return nil, fmt.Errorf("%w: %s: role %q listed twice", ErrInvalidDirectory, where, r)
			}
			seen[r] = true
		}
		if seen[RoleOperator] && p.Tenant != "" {
			return nil, fmt.Errorf("%w: %s: operators are platform-wide and take no tenant", ErrInvalidDirectory, where)
		}
		if seen[RoleOperator] && seen[RoleApp] {
			return nil, fmt.Errorf("%w: %s: an operator may not also hold the app role", ErrInvalidDirectory, where)
		}
		if p.Tenant != "" && !ids.Valid(p.Tenant) {
			return nil, fmt.Errorf("%w: %s: tenant is not a valid id", ErrInvalidDirectory, where)
		}

		p = p.clone()
		if p.URISAN != "" {
			d.byURI[p.Name] = p
		} else {
			d.byCN[p.Name] = p
		}
	}
	return d, nil
}

// Lookup returns the principal cert authenticates as (see Directory for
// the matching rule), or false if none is configured.
func (d *Directory) Lookup(cert *x509.Certificate) (Principal, bool) {
	if d == nil {
		return Principal{}, false
	}
	name, err := PrincipalName(cert)
	if err != nil {
		return Principal{}, false
	}
	var p Principal
	var ok bool
	if len(cert.URIs) > 0 {
		p, ok = d.byURI[name]
	} else {
		p, ok = d.byCN[name]
	}
	if !ok {
		return Principal{}, false
	}
	return p.clone(), true
}

// Len is the number of configured principals.
func (d *Directory) Len() int {
	if d == nil {
		return 0
	}
	return len(d.byURI) + len(d.byCN)
}

// printable reports whether s is valid UTF-8 without control characters,
// so it can travel into audit records and logs verbatim.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) })
}
