// Package api is the wire format of vaultd's mTLS JSON API, shared by the
// server (vaultd/server) and the Go client (vaultd/client): the bodies
// each route takes and answers, the error body and its codes, and the
// headers vaultd sets. docs/api.md describes the API for people and
// docs/openapi.json for machines; both follow these types.
//
// The package holds data only: no HTTP handling, no I/O. A type here is
// what goes over the wire, field for field and in this order, so changing
// one changes the API.
package api

// Headers and trailers of the API.
const (
	// HeaderRequestID is on every answer: the id of the request in vaultd's
	// logs and audit events (request_id).
	HeaderRequestID = "X-Request-Id"
	// HeaderError is on vaultd's own error answers and carries the code, so
	// a client of the proxy route can tell them from upstream answers.
	HeaderError = "X-Vaultd-Error"
	// HeaderTenantContext carries the tenant-context JWT of principals
	// without a fixed tenant.
	HeaderTenantContext = "X-Tenant-Context"
	// HeaderUpstreamRequestID carries an upstream's own X-Request-Id on the
	// proxy route (the answer's X-Request-Id is vaultd's).
	HeaderUpstreamRequestID = "X-Upstream-Request-Id"
	// TrailerBackupSize and TrailerBackupSHA256 follow the backup stream:
	// its length in bytes and its SHA-256 in lower-case hex.
	TrailerBackupSize   = "X-Vaultd-Backup-Size"
	TrailerBackupSHA256 = "X-Vaultd-Backup-Sha256"
)
