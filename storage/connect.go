package storage

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"time"
)

// Connect session status values.
const (
	ConnectPending   = "pending"
	ConnectCompleted = "completed"
	ConnectFailed    = "failed"
	ConnectExpired   = "expired" // stored by the expiry sweep, or computed by the service from ExpiresAt
)

// ConnectSession is one pending or finished connect flow. Secrets never appear in it:
// the link secret, the state and the browser-binding cookie are kept only as SHA-256
// digests, the PKCE verifier and a per-integration OAuth client are sealed (envelope ciphertext).
type ConnectSession struct {
	ID            string            `json:"id"`
	TenantID      string            `json:"tenant_id"`
	IntegrationID string            `json:"integration_id"`
	Provider      string            `json:"provider"`
	Scopes        []string          `json:"scopes"`
	ReturnTo      string            `json:"return_to"`
	Params        map[string]string `json:"params,omitempty"`
	Actor         string            `json:"actor"`
	OnBehalfOf    string            `json:"on_behalf_of,omitempty"`
	Status        string            `json:"status"`
	Error         string            `json:"error,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	LinkHash      []byte            `json:"link_hash,omitempty"`  // SHA-256 of the link secret; nil once the link was used
	StateHash     []byte            `json:"state_hash,omitempty"` // SHA-256 of the OAuth state; set when the link is opened, kept (indexed) after use so a replay names its session
	// StateUsed: the provider's callback came back; the state is spent.
	StateUsed   bool   `json:"state_used,omitempty"`
	BrowserHash []byte `json:"browser_hash,omitempty"` // SHA-256 of the browser-binding cookie
	Verifier    []byte `json:"verifier_ct,omitempty"`  // sealed PKCE code_verifier
	Client      []byte `json:"client_ct,omitempty"`    // sealed per-integration OAuth client
	Revision    uint64 `json:"revision"`
}

// Digests returns the session's non-empty LinkHash and StateHash, in that
// order: the digests a store indexes platform-wide (FindConnectSession).
// BrowserHash is not indexed: it is only compared once the session is found.
func (s ConnectSession) Digests() [][]byte {
	var out [][]byte
	for _, d := range [][]byte{s.LinkHash, s.StateHash} {
		if len(d) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// CheckConnectSession is what every backend checks of a session before it
// stores it, so all refuse the same records: TenantID, ID and
// IntegrationID are ValidIDs, each digest is empty or 32 bytes (SHA-256),
// and LinkHash and StateHash differ (one index entry names one use). A
// refusal wraps ErrInvalidRecord, and also ErrInvalidID for a bad id.
// Digests are never echoed in the error.
func CheckConnectSession(s ConnectSession) error {
	for _, f := range []struct{ kind, id string }{
		{"tenant", s.TenantID}, {"connect session", s.ID}, {"integration", s.IntegrationID},
	} {
		if !ValidID(f.id) {
			return fmt.Errorf("%w: %w: %s id %q", ErrInvalidRecord, ErrInvalidID, f.kind, f.id)
		}
	}
	for _, d := range []struct {
		name string
		b    []byte
	}{{"link", s.LinkHash}, {"state", s.StateHash}, {"browser", s.BrowserHash}} {
		if len(d.b) != 0 && len(d.b) != sha256.Size {
			return fmt.Errorf("%w: connect session %q: %s digest is %d bytes, want %d",
				ErrInvalidRecord, s.ID, d.name, len(d.b), sha256.Size)
		}
	}
	if len(s.LinkHash) != 0 && bytes.Equal(s.LinkHash, s.StateHash) {
		return fmt.Errorf("%w: connect session %q: link and state digests are equal", ErrInvalidRecord, s.ID)
	}
	return nil
}

// CheckConnectDigest is what FindConnectSession checks of its argument: a
// SHA-256 digest, 32 bytes. A refusal wraps ErrInvalidRecord (a caller
// that hashed nothing, not a lookup that found nothing).
func CheckConnectDigest(digest []byte) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("%w: connect session digest is %d bytes, want %d", ErrInvalidRecord, len(digest), sha256.Size)
	}
	return nil
}

// CheckCompletedIntegration is what CompleteConnectSession checks of the
// integration it stores with session s: it belongs to s's tenant (an
// empty TenantID is filled in) and is the integration s names. It returns
// in with TenantID set; a refusal wraps ErrInvalidRecord.
func CheckCompletedIntegration(s ConnectSession, in Integration) (Integration, error) {
	if in.TenantID != "" && in.TenantID != s.TenantID {
		return Integration{}, fmt.Errorf("%w: integration %q names tenant %q but completes connect session %q of tenant %q",
			ErrInvalidRecord, in.ID, in.TenantID, s.ID, s.TenantID)
	}
	if in.ID != s.IntegrationID {
		return Integration{}, fmt.Errorf("%w: connect session %q stores integration %q, not %q",
			ErrInvalidRecord, s.ID, s.IntegrationID, in.ID)
	}
	in.TenantID = s.TenantID
	return in, nil
}
