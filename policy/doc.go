// Package policy decides who a caller is, which tenant a request acts for,
// and whether the caller may do what it asks (docs/api.md, "Calling
// vaultd").
//
// Three steps, in this order, on every API request:
//
//  1. Identity: the mTLS client certificate names a principal (its first URI
//     SAN, else its subject CN; see PrincipalName) which the Directory maps to
//     configured roles and an optional fixed tenant. An unknown principal is
//     refused.
//  2. Tenancy: ResolveTenant takes the tenant ONLY from the principal's fixed
//     tenant or, when that is empty, from a tenant-context JWT (the
//     X-Tenant-Context header) checked by a Verifier against a configured
//     JWKS. A tenant id in a path, query or body never selects a tenant.
//  3. Authorization: Decide is a pure function of (Subject, Action, Resource)
//     that denies anything it does not explicitly allow.
//
// Nothing in this package logs, and no error it returns contains a token or
// key material: assertion failures carry only a short fixed reason.
package policy
