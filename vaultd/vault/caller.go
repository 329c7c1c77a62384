package vault

import (
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// Caller says who asks, for audit: every operation that writes an audit
// event takes one, and the vault builds its events itself.
type Caller struct {
	// Principal is the authenticated caller (the event's actor).
	Principal string
	// OnBehalfOf is the end user a tenant-context JWT names, if any.
	OnBehalfOf string
	// RequestID ties the events to the request that caused them.
	RequestID string
}

// event is an audit event of c's request about action.
func (c Caller) event(action, tenantID, integrationID, outcome, detail string) audit.Event {
	return audit.Event{
		TenantID: tenantID, IntegrationID: integrationID, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
		Action: action, Outcome: outcome, RequestID: c.RequestID, Detail: detail,
	}
}

// WriteOption completes the success event a write commits with its
// change (CreateTenant, RotateDEK, RewrapTenant, StoreToken, Disconnect).
type WriteOption struct {
	status int
}

// WithStatus records status as the success event's http_status: the
// status the API answers the write with. The vault knows no HTTP, so the
// server says; without it the event records 0.
func WithStatus(status int) WriteOption { return WriteOption{status: status} }

// success is the event a write of c's commits with its change.
func (c Caller) success(action, tenantID, integrationID, detail string, opts []WriteOption) audit.Event {
	ev := c.event(action, tenantID, integrationID, audit.OutcomeSuccess, detail)
	for _, o := range opts {
		if o.status != 0 {
			ev.HTTPStatus = o.status
		}
	}
	return ev
}

// SafeName is a caller-supplied name (a provider's, say) as an audit
// detail may carry it: names that are not plausible identifiers could be
// anything, a pasted token included, and become "(invalid)".
func SafeName(n string) string {
	if storage.ValidID(n) && len(n) <= 64 {
		return n
	}
	return "(invalid)"
}
