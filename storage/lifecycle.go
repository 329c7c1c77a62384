package storage

import (
	"context"
	"fmt"
	"time"
)

// Revocation is a pending RFC 7009 revocation that failed at least once
// (at disconnect, offboarding or a sweep). It is platform level, not under
// its tenant: it must outlive the tenant's offboarding and crypto-shred, so
// the token is sealed with the HSM KEK directly, never the tenant's DEK.
type Revocation struct {
	ID            string    `json:"id"` // random, ValidID
	TenantID      string    `json:"tenant_id"`
	IntegrationID string    `json:"integration_id"`
	Provider      string    `json:"provider"`
	Hint          string    `json:"hint"`   // "refresh_token" | "access_token"
	Sealed        []byte    `json:"sealed"` // hsm.Keyring-wrapped JSON (token, client, URL); never plaintext
	KEKVersion    uint32    `json:"kek_version"`
	Attempts      uint32    `json:"attempts"`
	CreatedAt     time.Time `json:"created_at"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error,omitempty"`
	Revision      uint64    `json:"revision"`
}

// Revocation hints (RFC 7009 token_type_hint).
const (
	HintRefreshToken = "refresh_token"
	HintAccessToken  = "access_token"
)

// RevocationStore is the optional capability to keep pending revocations.
// Both backends have it; a consumer asserts it. Writes follow the Store's
// rules: the record and its audit event commit together, a nil AuditFunc
// commits no event, values are copies.
type RevocationStore interface {
	// PutRevocation creates r with Revision 1; ErrExists if the id is
	// taken, ErrInvalidRecord if CheckRevocation refuses it.
	PutRevocation(ctx context.Context, r Revocation, audit AuditFunc) (Revocation, AuditRecord, error)
	// ListRevocations lists every pending revocation (platform level),
	// sorted by ID.
	ListRevocations(ctx context.Context) ([]Revocation, error)
	// UpdateRevocation replaces r if r.Revision matches the stored one
	// (ErrConflict otherwise, ErrNotFound if gone) and returns it with the
	// new revision. audit may be nil.
	UpdateRevocation(ctx context.Context, r Revocation, audit AuditFunc) (Revocation, AuditRecord, error)
	// DeleteRevocation removes it; ErrNotFound if absent. audit may be nil.
	DeleteRevocation(ctx context.Context, id string, audit AuditFunc) (AuditRecord, error)
}

// CheckRevocation is what every backend checks of a revocation before it
// stores it: ID, TenantID and IntegrationID are ValidIDs, Provider is set
// and Hint is empty or an RFC 7009 hint. A refusal wraps
// ErrInvalidRecord (and ErrInvalidID for a bad id). Sealed is never echoed.
func CheckRevocation(r Revocation) error {
	for _, f := range []struct{ kind, id string }{
		{"revocation", r.ID}, {"tenant", r.TenantID}, {"integration", r.IntegrationID},
	} {
		if !ValidID(f.id) {
			return fmt.Errorf("%w: %w: %s id %q", ErrInvalidRecord, ErrInvalidID, f.kind, f.id)
		}
	}
	if r.Provider == "" {
		return fmt.Errorf("%w: revocation %q names no provider", ErrInvalidRecord, r.ID)
	}
	switch r.Hint {
	case "", HintRefreshToken, HintAccessToken:
	default:
		return fmt.Errorf("%w: revocation %q: hint %q is not %q or %q", ErrInvalidRecord, r.ID, r.Hint, HintRefreshToken, HintAccessToken)
	}
	return nil
}

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed" // dead-lettered after the last attempt
)

// Delivery is one webhook notification to one configured endpoint: queued
// with the audit cursor that produced it, retried until delivered or
// dead-lettered. Platform level (a key.rotated one names no tenant).
type Delivery struct {
	ID            string    `json:"id"`      // the webhook-id ("msg_" + random), stable across retries
	Webhook       string    `json:"webhook"` // the [[webhooks]] entry's key (config.Webhook.Key)
	Type          string    `json:"type"`
	TenantID      string    `json:"tenant_id,omitempty"`
	Seq           uint64    `json:"seq"`  // the audit event it came from
	Body          []byte    `json:"body"` // the JSON body (no secret ever)
	Status        string    `json:"status"`
	Attempts      uint32    `json:"attempts"`
	CreatedAt     time.Time `json:"created_at"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastError     string    `json:"last_error,omitempty"`
	Revision      uint64    `json:"revision"`
}

// DeliveryStore is the optional capability to queue webhook deliveries
// and keep the dispatcher's audit cursor. Both backends have it; a
// consumer asserts it. Values are copies.
type DeliveryStore interface {
	// EnqueueDeliveries stores ds (each new, with Revision 1: ErrExists on
	// a taken id, or one repeated in ds) and sets the webhook cursor to
	// cursor, in one transaction: all or nothing. A cursor below the
	// stored one is ErrInvalidRecord (it only moves forward); an equal
	// one is allowed. ds may be empty (the cursor moves alone).
	EnqueueDeliveries(ctx context.Context, cursor uint64, ds []Delivery) error
	// WebhookCursor returns the stored cursor, 0 when never set.
	WebhookCursor(ctx context.Context) (uint64, error)
	// GetDelivery returns ErrNotFound for an unknown id.
	GetDelivery(ctx context.Context, id string) (Delivery, error)
	// ListDeliveries lists deliveries with that status ("" = any), at most
	// limit of them (<= 0: all), ordered by NextAttemptAt then ID.
	ListDeliveries(ctx context.Context, status string, limit int) ([]Delivery, error)
	// UpdateDelivery replaces d if d.Revision matches the stored one
	// (ErrConflict otherwise, ErrNotFound if gone) and returns it with the
	// new revision. audit may be nil (the dead-lettering passes one).
	UpdateDelivery(ctx context.Context, d Delivery, audit AuditFunc) (Delivery, AuditRecord, error)
	// PruneDeliveries deletes delivered or failed deliveries whose
	// UpdatedAt is before `before`, at most max of them (oldest first is
	// not promised), in one transaction, and returns how many. max < 1 is
	// ErrInvalidRecord. Pending ones are never pruned.
	PruneDeliveries(ctx context.Context, before time.Time, max int) (int, error)
}

// ValidDeliveryStatus reports whether s is one of the Delivery statuses.
func ValidDeliveryStatus(s string) bool {
	return s == DeliveryPending || s == DeliveryDelivered || s == DeliveryFailed
}

// CheckDelivery is what every backend checks of a delivery before it
// stores it: ID and Webhook are ValidIDs ("msg_" + base32 is), TenantID
// is empty or a ValidID, Type is set and Status is a Delivery status. A
// refusal wraps ErrInvalidRecord (and ErrInvalidID for a bad id). Body is
// never echoed.
func CheckDelivery(d Delivery) error {
	if !ValidID(d.ID) {
		return fmt.Errorf("%w: %w: delivery id %q", ErrInvalidRecord, ErrInvalidID, d.ID)
	}
	if !ValidID(d.Webhook) {
		return fmt.Errorf("%w: %w: delivery %q: webhook key %q", ErrInvalidRecord, ErrInvalidID, d.ID, d.Webhook)
	}
	if d.TenantID != "" && !ValidID(d.TenantID) {
		return fmt.Errorf("%w: %w: delivery %q: tenant id %q", ErrInvalidRecord, ErrInvalidID, d.ID, d.TenantID)
	}
	if d.Type == "" {
		return fmt.Errorf("%w: delivery %q has no type", ErrInvalidRecord, d.ID)
	}
	if !ValidDeliveryStatus(d.Status) {
		return fmt.Errorf("%w: delivery %q: status %q", ErrInvalidRecord, d.ID, d.Status)
	}
	return nil
}

// CheckDeliveryStatusFilter is what ListDeliveries checks of its status
// argument: "" or a Delivery status; a refusal wraps ErrInvalidRecord.
func CheckDeliveryStatusFilter(status string) error {
	if status != "" && !ValidDeliveryStatus(status) {
		return fmt.Errorf("%w: delivery status %q", ErrInvalidRecord, status)
	}
	return nil
}

// CompareDeliveries orders by NextAttemptAt, then ID: ListDeliveries'
// order (for slices.SortFunc), shared so both backends agree.
func CompareDeliveries(a, b Delivery) int {
	if c := a.NextAttemptAt.Compare(b.NextAttemptAt); c != 0 {
		return c
	}
	switch {
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}
