package api

import "time"

// The tenant lifecycle's wire types: offboarding's answer and the pending
// revocations. Disable and enable answer a Tenant.

// OffboardResult answers DELETE /v1/tenants/{id}: how many integrations
// the tenant had (all deleted), how many of them the providers confirmed
// revoked, and how many tokens whose revocation failed are queued for
// retry (GET /v1/admin/revocations).
type OffboardResult struct {
	Integrations       int `json:"integrations"`
	RevokedAtProvider  int `json:"revoked_at_provider"`
	RevocationsPending int `json:"revocations_pending"`
}

// Revocation is a pending revocation: a token the provider has not
// confirmed revoked, retried with backoff. Never the token nor the client.
type Revocation struct {
	ID            string    `json:"id"`
	TenantID      string    `json:"tenant_id"`
	IntegrationID string    `json:"integration_id"`
	Provider      string    `json:"provider"`
	Hint          string    `json:"hint"` // "refresh_token" or "access_token"
	Attempts      uint32    `json:"attempts"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error"` // a reason code ("invalid_client", "http_503", "timeout", ...)
	CreatedAt     time.Time `json:"created_at"`
}

// RevocationList answers GET /v1/admin/revocations, sorted by id.
type RevocationList struct {
	Revocations []Revocation `json:"revocations"`
}
