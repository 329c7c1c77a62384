package policy

// TenantContextHeader carries the tenant-context JWT (docs/api.md).
const TenantContextHeader = "X-Tenant-Context"

// ResolveTenant decides the tenant a request by p acts for, and on whose
// behalf, from p's configuration and the X-Tenant-Context header value
// (docs/api.md, "Calling vaultd"). The rules, in order:
//
//   - p has a fixed tenant: that tenant. The header is ignored, not even
//     verified: it can neither change the tenant nor put an unverified
//     sub into audit. onBehalfOf is "".
//   - p holds neither the app nor the auditor role (an operator): "" and
//     the header is ignored; operator actions are platform-wide.
//   - otherwise (p is unbound and holds app or auditor): a non-empty header
//     must verify (else an *AssertionError wrapping ErrInvalidAssertion,
//     also when v is nil) and gives the JWT's tenant and sub. An empty
//     header is ErrMissingAssertion if p holds the app role (an unbound app
//     needs an assertion on every request); for an unbound auditor
//     without the app role it means platform-wide: "" (an auditor
//     without a tenant sees every tenant's events). A presented
//     header is never ignored by an unbound principal: an invalid one is
//     refused rather than falling back to platform-wide.
//
// The server maps ErrMissingAssertion and ErrInvalidAssertion to 401
// unauthenticated.
func ResolveTenant(p Principal, header string, v *Verifier) (tenant, onBehalfOf string, err error) {
	if p.Tenant != "" {
		return p.Tenant, "", nil
	}
	if !p.HasRole(RoleApp) && !p.HasRole(RoleAuditor) {
		return "", "", nil
	}
	if header == "" {
		if p.HasRole(RoleApp) {
			return "", "", ErrMissingAssertion
		}
		return "", "", nil
	}
	c, err := v.Verify(header)
	if err != nil {
		return "", "", err
	}
	return c.Tenant, c.Subject, nil
}
