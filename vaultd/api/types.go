package api

import (
	"encoding/json"
	"time"
)

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	ID string `json:"id"`
}

// Tenant is a tenant as POST /v1/tenants and GET /v1/tenants/{id} answer
// it. It never holds key material.
type Tenant struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	KEKVersion uint32    `json:"kek_version"`
	DEKVersion uint32    `json:"dek_version"`
	Status     string    `json:"status"`
}

// TenantKeys is a tenant as the key-management extensions (the tenant
// list, rotate-dek, rewrap) show it: Tenant plus the KEK versions that
// wrap any of the tenant's DEKs. A KEK may be retired once no tenant lists
// it.
type TenantKeys struct {
	Tenant
	KEKVersionsInUse []uint32 `json:"kek_versions_in_use"`
}

// TenantRewrap is the answer of POST /v1/tenants/{id}/rewrap: the tenant
// and how many of its DEKs were wrapped again under the current KEK.
type TenantRewrap struct {
	TenantKeys
	RewrappedDEKs int `json:"rewrapped_deks"`
}

// TenantList is the answer of GET /v1/tenants.
type TenantList struct {
	Tenants []TenantKeys `json:"tenants"`
}

// StoreTokenRequest is the body of PUT /v1/integrations/{id}: the
// provider's name and its OAuth token response, as the provider sent it.
//
// Token may be omitted for a provider with the client_credentials grant:
// vaultd then obtains the token itself (Scopes: what to ask for, default
// the provider's inventory). Params are a catalog template's
// per-connection parameters; Client is a per-integration OAuth client,
// sealed like a token and never answered.
type StoreTokenRequest struct {
	Provider string            `json:"provider"`
	Token    json.RawMessage   `json:"token,omitempty"`
	Scopes   []string          `json:"scopes,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	Client   *OAuthClient      `json:"client,omitempty"`
}

// OAuthClient is a per-integration OAuth client ("bring your own app").
// It is write-only: no answer ever carries it.
type OAuthClient struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// CreateConnectSessionRequest is the body of POST /v1/connect/sessions.
type CreateConnectSessionRequest struct {
	IntegrationID string            `json:"integration_id"`
	Provider      string            `json:"provider"`
	Scopes        []string          `json:"scopes,omitempty"`
	ReturnTo      string            `json:"return_to"`
	Params        map[string]string `json:"params,omitempty"`
	Client        *OAuthClient      `json:"client,omitempty"`
}

// ConnectSessionCreated is the answer of POST /v1/connect/sessions: the
// one-time link to give the user's browser.
type ConnectSessionCreated struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ConnectSession is the answer of GET /v1/connect/sessions/{id}. Status is
// "pending", "completed", "failed" or "expired"; Error is the OAuth error
// code of a failed session.
type ConnectSession struct {
	ID            string    `json:"id"`
	IntegrationID string    `json:"integration_id"`
	Provider      string    `json:"provider"`
	Status        string    `json:"status"`
	Error         string    `json:"error"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// Integration is an integration's metadata: what store, get and list
// answer. It has no field that could hold a token. Status is "active",
// "degraded" (refreshes are failing; the token is used while valid) or
// "reauthorization_required" (the grant is dead). Times are RFC 3339 in
// UTC, null when unknown or never.
type Integration struct {
	ID                  string     `json:"id"`
	TenantID            string     `json:"tenant_id"`
	Provider            string     `json:"provider"`
	Scopes              []string   `json:"scopes"`
	Status              string     `json:"status"`
	ExpiresAt           *time.Time `json:"expires_at"`
	CreatedAt           *time.Time `json:"created_at"`
	UpdatedAt           *time.Time `json:"updated_at"`
	LastRefreshAt       *time.Time `json:"last_refresh_at"`
	LastUsedAt          *time.Time `json:"last_used_at"`
	RefreshCount        uint64     `json:"refresh_count"`
	ConsecutiveFailures uint32     `json:"consecutive_failures"`
	LastError           string     `json:"last_error"`
	// APIBaseURL is the integration's egress boundary, fixed when it was
	// stored.
	APIBaseURL string `json:"api_base_url"`
	// Grant is "authorization_code" or "client_credentials".
	Grant string `json:"grant"`
}

// IntegrationList is the answer of GET /v1/integrations.
type IntegrationList struct {
	Integrations []Integration `json:"integrations"`
}

// DeleteResult is the answer of DELETE /v1/integrations/{id}: whether
// the provider confirmed the revocation (the record is deleted either way).
type DeleteResult struct {
	RevokedAtProvider bool `json:"revoked_at_provider"`
}

// Provider is a configured provider as GET /v1/providers lists it.
type Provider struct {
	Name       string   `json:"name"`
	APIBaseURL string   `json:"api_base_url"`
	Scopes     []string `json:"scopes"`
	Revocation bool     `json:"revocation"`
}

// ProviderList is the answer of GET /v1/providers.
type ProviderList struct {
	Providers []Provider `json:"providers"`
}
