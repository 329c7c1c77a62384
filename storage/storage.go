// Package storage persists tenants, integrations, connect sessions and the
// audit trail. Every integration or session read or write takes a tenant
// id: the bbolt backend keeps one top-level bucket per tenant, so a lookup
// cannot cross tenants by construction. Only ListTenants and
// ListOffboarded (operator level), the audit trail (platform level,
// filtered by tenant in the audit package), FindConnectSession (a browser
// holding a one-time link or an OAuth state knows no tenant; it finds the
// session by the secret's SHA-256 digest), and the lifecycle's pending
// revocations and webhook deliveries (platform level: they outlive an
// offboarded tenant, lifecycle.go) span tenants.
package storage

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/vaultd/vaultd/internal/ids"
)

// Sentinel errors.
var (
	ErrNotFound       = errors.New("storage: not found")
	ErrTenantNotFound = errors.New("storage: tenant not found")
	ErrExists         = errors.New("storage: already exists")
	// ErrConflict: a compare-and-swap saw a different revision.
	ErrConflict  = errors.New("storage: revision conflict")
	ErrInvalidID = errors.New("storage: invalid id")
	// ErrLocked: another process holds the database file.
	ErrLocked = errors.New("storage: database is locked by another process")
	ErrClosed = errors.New("storage: closed")
	// ErrSchema: the file's schema is newer than this binary understands.
	ErrSchema = errors.New("storage: unsupported schema version")
	// ErrCorrupt: a stored record (or the file) cannot be decoded or is
	// inconsistent. Never retried: the operator must restore or repair.
	ErrCorrupt = errors.New("storage: corrupt data")
	// ErrReadOnly: a write on a store opened read-only.
	ErrReadOnly = errors.New("storage: store is read-only")
	// ErrInvalidRecord: the caller passed a record the store refuses (an
	// audit record out of sequence, an integration whose TenantID names
	// another tenant). A caller bug, not a data problem.
	ErrInvalidRecord = errors.New("storage: invalid record")
)

// ValidID reports whether id is usable as a tenant or integration id:
// 1-128 chars of [A-Za-z0-9._-], starting alphanumeric. The syntax lives
// in internal/ids, which packages that must not depend on storage use.
func ValidID(id string) bool { return ids.Valid(id) }

// Tenant status values.
const (
	TenantActive   = "active"
	TenantDisabled = "disabled"
)

// WrappedDEK is one version of a tenant's data key, wrapped by an HSM KEK.
type WrappedDEK struct {
	Version    uint32    `json:"version"`
	KEKVersion uint32    `json:"kek_version"`
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
	CreatedAt  time.Time `json:"created_at"`
	// TenantWrapped: Ciphertext is KEK(tenant key(DEK)), the DEK wrapped
	// first under the tenant's own HSM key and that under the KEK, so
	// destroying the tenant key shreds every copy (vaultd/envelope).
	TenantWrapped bool `json:"tenant_wrapped,omitempty"`
}

// Tenant is a tenant record. DEKs holds every DEK version still needed to
// open records; DEKVersion names the one new seals use.
type Tenant struct {
	ID         string       `json:"id"`
	CreatedAt  time.Time    `json:"created_at"`
	Status     string       `json:"status"`
	KEKVersion uint32       `json:"kek_version"`
	DEKVersion uint32       `json:"dek_version"`
	DEKs       []WrappedDEK `json:"deks"`
	Revision   uint64       `json:"revision"`
}

// CurrentDEK returns the wrapped DEK that new seals use.
func (t Tenant) CurrentDEK() (WrappedDEK, bool) { return t.DEK(t.DEKVersion) }

// DEK returns the wrapped DEK of version v.
func (t Tenant) DEK(v uint32) (WrappedDEK, bool) {
	for _, d := range t.DEKs {
		if d.Version == v {
			return d, true
		}
	}
	return WrappedDEK{}, false
}

// Integration status values (the API's "status", docs/api.md).
const (
	StatusActive                  = "active"
	StatusDegraded                = "degraded"
	StatusReauthorizationRequired = "reauthorization_required"
)

// Integration is one tenant's connection to one provider. AccessToken and
// RefreshToken hold envelope ciphertext (vaultd/envelope), never plaintext.
type Integration struct {
	ID            string    `json:"id"`
	TenantID      string    `json:"tenant_id"`
	Provider      string    `json:"provider"`
	Scopes        []string  `json:"scopes"`
	Status        string    `json:"status"`
	TokenType     string    `json:"token_type"`
	ExpiresAt     time.Time `json:"expires_at"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastRefreshAt time.Time `json:"last_refresh_at"`
	LastUsedAt    time.Time `json:"last_used_at"`
	// StoredAt is when a token was last stored by a caller (store_token,
	// a completed connect flow, a client-credentials store), not by a
	// refresh: the idle sweep counts from it as well as from the last use.
	StoredAt            time.Time `json:"stored_at,omitempty"`
	RefreshCount        uint64    `json:"refresh_count"`
	ConsecutiveFailures uint32    `json:"consecutive_failures"`
	LastError           string    `json:"last_error"`
	// NextRefreshAt is the earliest time a refresh may be retried after a
	// transient failure (backoff).
	NextRefreshAt time.Time `json:"next_refresh_at"`

	AccessToken  []byte `json:"access_token_ct"`
	RefreshToken []byte `json:"refresh_token_ct"`

	// APIBaseURL is this integration's API base, fixed when it is stored (a
	// catalog template's per-connection host); "" = the provider's api_base_url.
	APIBaseURL string `json:"api_base_url,omitempty"`
	// Params are the per-connection template parameters (subdomain, ...), validated by the service.
	Params map[string]string `json:"params,omitempty"`
	// Client is the sealed per-integration OAuth client (envelope ciphertext); nil = the provider's.
	Client []byte `json:"client_ct,omitempty"`
	// Grant is "client_credentials" for integrations vaultd obtains itself; "" = authorization code / stored token.
	Grant string `json:"grant,omitempty"`
	// ConnectSession names the connect session that stored it, if any.
	ConnectSession string `json:"connect_session,omitempty"`

	// Revision increments on every write; CompareAndSwapIntegration
	// checks it.
	Revision uint64 `json:"revision"`
}

// AuditHead is the tail of the audit chain.
type AuditHead struct {
	Seq  uint64 // 0 when the chain is empty
	Hash string // 64 hex zeros when the chain is empty
}

// AuditRecord is one stored audit event: its sequence number, its hash and
// the full event JSON (one line, including seq, prev_hash and hash).
type AuditRecord struct {
	Seq  uint64
	Hash string
	Data []byte
	// More are further events appended right after this one in the same
	// transaction, each at the next seq and chaining on its predecessor
	// (a refresh and the scope.drift it revealed commit together). Stores
	// return them, as stored, in the record they give back.
	More []AuditRecord
}

// GenesisHash is the prev_hash of the first audit event.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// AuditFunc builds the audit event a write commits with. It gets the
// current head of the chain and returns the record to append, whose Seq must
// be head.Seq+1 (each of More's the next). It may be called more than once
// (batched writes retry), so it must be pure. A write whose event fails to
// build or is refused commits nothing.
//
// A nil AuditFunc means "no event": the write commits alone and the returned
// AuditRecord is zero. It is for the one write that has no event of its own,
// the batched last_used_at flush (vaultd/vault, metadata.go), and for test
// fixtures; every write a caller or operator asked for passes one. A nil
// AuditFunc rather than a second un-audited method per write keeps the
// contract one method per write, so a backend implements (and the suite
// checks) each write's transaction once.
type AuditFunc func(head AuditHead) (AuditRecord, error)

// Store is the persistence contract every backend implements (storage/bolt,
// storage/inmem; storage/postgres next). All methods take a context first,
// return copies (never memory owned by a transaction), and are safe for
// concurrent use. storagetest.Run is the suite every backend must pass.
//
// Every write takes an AuditFunc and commits the state change and its audit
// event in one transaction, with one fsync: a record never exists without
// its event. Consumers declare the subset they use (vault.Store,
// audit.Store); optional capabilities are the extra interfaces Backuper,
// AuditPruner, RevocationStore and DeliveryStore, checked by type assertion.
type Store interface {
	// CreateTenant stores a new tenant with Revision 1; ErrExists if the
	// id is taken.
	CreateTenant(ctx context.Context, t Tenant, audit AuditFunc) (Tenant, AuditRecord, error)
	// GetTenant returns ErrTenantNotFound for an unknown id.
	GetTenant(ctx context.Context, id string) (Tenant, error)
	// ListTenants lists every tenant (operator level), sorted by id.
	ListTenants(ctx context.Context) ([]Tenant, error)
	// UpdateTenant replaces t if t.Revision matches the stored revision
	// (ErrConflict otherwise) and returns it with the new revision.
	UpdateTenant(ctx context.Context, t Tenant, audit AuditFunc) (Tenant, AuditRecord, error)

	// PutIntegration creates or replaces an integration unconditionally
	// (store_token), returning it with its new revision (the previous one
	// plus one, 1 on create). ErrTenantNotFound if the tenant does not
	// exist.
	PutIntegration(ctx context.Context, tenantID string, in Integration, audit AuditFunc) (Integration, AuditRecord, error)
	// GetIntegration returns ErrNotFound for an unknown id in that tenant
	// (and for an unknown tenant: both look the same to callers).
	GetIntegration(ctx context.Context, tenantID, id string) (Integration, error)
	// ListIntegrations lists a tenant's integrations, sorted by id.
	ListIntegrations(ctx context.Context, tenantID string) ([]Integration, error)
	// CompareAndSwapIntegration replaces the record if in.Revision equals
	// the stored revision; ErrConflict if not, ErrNotFound if gone.
	CompareAndSwapIntegration(ctx context.Context, tenantID string, in Integration, audit AuditFunc) (Integration, AuditRecord, error)
	// DeleteIntegration removes it; ErrNotFound if absent.
	DeleteIntegration(ctx context.Context, tenantID, id string, audit AuditFunc) (AuditRecord, error)

	// CreateConnectSession stores a new session with Revision 1 under its
	// tenant, and indexes its non-nil LinkHash and StateHash
	// platform-wide. ErrTenantNotFound if the tenant does not exist;
	// ErrExists if the id is taken in that tenant or a digest is already
	// indexed; ErrInvalidRecord if TenantID/ID/IntegrationID is not a
	// ValidID or a digest is not 32 bytes (CheckConnectSession).
	CreateConnectSession(ctx context.Context, s ConnectSession, audit AuditFunc) (ConnectSession, AuditRecord, error)
	// GetConnectSession returns ErrNotFound for an unknown id in that
	// tenant (and for an unknown tenant).
	GetConnectSession(ctx context.Context, tenantID, id string) (ConnectSession, error)
	// FindConnectSession returns the session whose LinkHash or StateHash
	// equals digest (the browser side knows no tenant); ErrNotFound if
	// none, ErrInvalidRecord if digest is not 32 bytes.
	FindConnectSession(ctx context.Context, digest []byte) (ConnectSession, error)
	// UpdateConnectSession replaces s if s.Revision matches the stored
	// revision (ErrConflict otherwise, ErrNotFound if gone), keeping the
	// digest index in step: digests the stored record had and s no longer
	// has are unindexed, new ones indexed (ErrExists if taken by another
	// session). Returns s with its new revision.
	UpdateConnectSession(ctx context.Context, s ConnectSession, audit AuditFunc) (ConnectSession, AuditRecord, error)
	// CompleteConnectSession does UpdateConnectSession(s) and
	// PutIntegration(in) in ONE transaction with one audit event (the
	// token.store of a finished connect flow): the session is never
	// completed without its integration, nor the reverse. in.TenantID
	// must be s.TenantID (or empty: it is filled in) and in.ID must be
	// s.IntegrationID, else ErrInvalidRecord. Returns both with their new
	// revisions.
	CompleteConnectSession(ctx context.Context, s ConnectSession, in Integration, audit AuditFunc) (ConnectSession, Integration, AuditRecord, error)
	// DeleteConnectSession removes a session and its index entries;
	// ErrNotFound if absent. audit may be nil (the expiry sweep removes
	// old sessions without an event of their own).
	DeleteConnectSession(ctx context.Context, tenantID, id string, audit AuditFunc) (AuditRecord, error)
	// ListConnectSessions lists a tenant's sessions, sorted by id
	// (ErrTenantNotFound never: an unknown tenant lists nothing).
	ListConnectSessions(ctx context.Context, tenantID string) ([]ConnectSession, error)

	// OffboardTenant deletes the tenant, all its integrations and connect
	// sessions (and their digest index entries) in one transaction with
	// its audit event, and records the id as offboarded: CreateTenant of
	// it is ErrExists forever, GetTenant ErrTenantNotFound.
	// ErrTenantNotFound for an unknown (or already offboarded) id.
	// Revocations and deliveries naming the tenant are kept: they outlive
	// it on purpose (a pending revocation, the tenant.offboarded
	// notification).
	OffboardTenant(ctx context.Context, id string, audit AuditFunc) (AuditRecord, error)
	// ListOffboarded lists offboarded tenant ids, sorted (for finishing a
	// crypto-shred an HSM outage interrupted).
	ListOffboarded(ctx context.Context) ([]string, error)

	// AppendAudit appends one event (and its More) atomically at the end
	// of the chain, with no state change. audit must not be nil.
	AppendAudit(ctx context.Context, audit AuditFunc) (AuditRecord, error)
	// ScanAudit calls fn for every record with Seq > afterSeq in order,
	// until fn returns false or an error. Pruned events (Seq <=
	// AuditAnchor().Seq) are not returned: a scan from 0 starts at the
	// first remaining event, AuditAnchor().Seq+1. A prune running during a
	// scan may make it skip ahead likewise; callers needing a contiguous
	// chain (a verifier) check seqs themselves.
	ScanAudit(ctx context.Context, afterSeq uint64, fn func(AuditRecord) (bool, error)) error
	// AuditHead returns the current tail of the chain. Pruning never
	// changes it.
	AuditHead(ctx context.Context) (AuditHead, error)
	// AuditAnchor returns the seq and hash of the last pruned event: the
	// first remaining event is Seq+1 and its prev_hash is Hash. It is
	// {0, GenesisHash} when nothing was ever pruned.
	AuditAnchor(ctx context.Context) (AuditHead, error)

	// Ping checks that the store can serve a read.
	Ping(ctx context.Context) error
	Close() error
}

// AuditPruner is the optional capability to delete the oldest audit events
// (retention). Both backends have it; a consumer asserts it.
type AuditPruner interface {
	// PruneAudit deletes the oldest remaining audit events in one
	// transaction: at most max of them, none with Seq > upToSeq, and never
	// the newest event (the head), so upToSeq is in effect capped at
	// head.Seq-1 and appends continue as before. In that same transaction
	// it sets the anchor (AuditAnchor) to the seq and hash of the last
	// event deleted, so the remaining chain stays verifiable from it. It
	// returns how many events it deleted: 0 when none is at or below
	// upToSeq. max < 1 is ErrInvalidRecord. Retention calls it repeatedly
	// with a small max (about 1,000), so each transaction is short and
	// other writers get in between; what was pruned is gone from the store
	// (the caller archives it first if it must be kept).
	PruneAudit(ctx context.Context, upToSeq uint64, max int) (int, error)
}

// Backuper is the optional capability to write an online snapshot.
type Backuper interface {
	// Backup writes a consistent snapshot of the whole database to w
	// while the store stays online, and returns how many bytes it wrote.
	Backup(ctx context.Context, w io.Writer) (int64, error)
}
