// Package inmem is a storage.Store held in process memory: tenants,
// integrations, connect sessions (with their platform-wide digest index),
// offboarding tombstones, pending revocations, webhook deliveries with
// their cursor, and the audit chain behind one RWMutex. It passes the shared
// suite (storage/storagetest) next to storage/bolt, so it serves as the
// reference for the Store contract without a file, and as a fast store for
// tests of the layers above. Nothing survives Close or the process.
//
// Every write validates first and mutates last, under the write lock, so a
// refused write (a conflict, a refused audit event, a cancelled context)
// leaves no trace: the state change and its audit events are applied
// together or not at all. Values are deep-copied on the way in and out.
//
// Backup writes JSON lines (see Backup).
package inmem

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/vaultd/vaultd/storage"
)

// ctxCheckEvery is how many records a listing or scan handles between
// context checks.
const ctxCheckEvery = 64

// scanChunk is how many audit records ScanAudit copies under the read lock
// before calling back outside it, so a slow consumer never blocks writers.
const scanChunk = 256

type tenantState struct {
	tenant       storage.Tenant
	integrations map[string]storage.Integration
	sessions     map[string]storage.ConnectSession
}

// sessionRef names a connect session platform-wide: the value of the
// digest index.
type sessionRef struct{ tenantID, id string }

// Store is an in-memory storage.Store. Safe for concurrent use.
type Store struct {
	mu      sync.RWMutex
	closed  bool
	tenants map[string]*tenantState
	// digests indexes every session's LinkHash and StateHash (as string
	// keys) platform-wide, for FindConnectSession.
	digests map[string]sessionRef
	// audit holds the remaining (unpruned) events in seq order: audit[i]
	// has seq anchor.Seq+1+i.
	audit  []storage.AuditRecord
	head   storage.AuditHead
	anchor storage.AuditHead
	// offboarded holds the tombstones of offboarded tenants (lifecycle.go).
	offboarded map[string]struct{}
	// revocations and deliveries are platform level, keyed by id; cursor
	// is the webhook dispatcher's audit cursor.
	revocations map[string]storage.Revocation
	deliveries  map[string]storage.Delivery
	cursor      uint64
}

var (
	_ storage.Store               = (*Store)(nil)
	_ storage.AuditPruner         = (*Store)(nil)
	_ storage.Backuper            = (*Store)(nil)
	_ storage.RevocationStore     = (*Store)(nil)
	_ storage.DeliveryStore       = (*Store)(nil)
	_ storage.AuditAnchorImporter = (*Store)(nil)
)

// New returns an empty, open store.
func New() *Store {
	return &Store{
		tenants:     map[string]*tenantState{},
		digests:     map[string]sessionRef{},
		offboarded:  map[string]struct{}{},
		revocations: map[string]storage.Revocation{},
		deliveries:  map[string]storage.Delivery{},
		head:        storage.AuditHead{Seq: 0, Hash: storage.GenesisHash},
		anchor:      storage.AuditHead{Seq: 0, Hash: storage.GenesisHash},
	}
}

// Close marks the store closed and drops its contents. Later calls return
// nil; every other method then answers storage.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.tenants, s.digests, s.audit = nil, nil, nil
	s.offboarded, s.revocations, s.deliveries = nil, nil, nil
	return nil
}

// Ping reports whether the store is open.
func (s *Store) Ping(ctx context.Context) error {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return err
	}
	unlock()
	return nil
}

// rlock takes the read lock after checking ctx and the closed flag.
func (s *Store) rlock(ctx context.Context) (*Store, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, nil, storage.ErrClosed
	}
	return s, s.mu.RUnlock, nil
}

// lock takes the write lock; ctx is checked again once it is held, so a
// write whose caller gave up while it waited does not happen.
func (s *Store) lock(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, storage.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return s.mu.Unlock, nil
}

func invalidID(kind, id string) error {
	return fmt.Errorf("%w: %s id %q", storage.ErrInvalidID, kind, id)
}

// notFound is the same for a missing tenant and a missing id, so callers
// cannot probe which tenants exist or own an id.
func notFound(id string) error {
	return fmt.Errorf("%w: integration %q", storage.ErrNotFound, id)
}

func tenantNotFound(id string) error {
	return fmt.Errorf("%w: %q", storage.ErrTenantNotFound, id)
}

// CreateTenant stores t with Revision 1; storage.ErrExists if the id is taken.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CreateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	t = cloneTenant(t)
	t.Revision = 1
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	defer unlock()
	if _, ok := s.tenants[t.ID]; ok {
		return storage.Tenant{}, storage.AuditRecord{}, fmt.Errorf("%w: tenant %q", storage.ErrExists, t.ID)
	}
	if _, ok := s.offboarded[t.ID]; ok {
		return storage.Tenant{}, storage.AuditRecord{}, fmt.Errorf("%w: tenant %q was offboarded; its id is not reused", storage.ErrExists, t.ID)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	s.tenants[t.ID] = &tenantState{
		tenant:       t,
		integrations: map[string]storage.Integration{},
		sessions:     map[string]storage.ConnectSession{},
	}
	s.commitAudit(pending)
	return cloneTenant(t), rec, nil
}

// GetTenant returns storage.ErrTenantNotFound for an unknown id.
func (s *Store) GetTenant(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, invalidID("tenant", id)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.Tenant{}, err
	}
	defer unlock()
	ts, ok := s.tenants[id]
	if !ok {
		return storage.Tenant{}, tenantNotFound(id)
	}
	return cloneTenant(ts.tenant), nil
}

// ListTenants lists every tenant sorted by id.
func (s *Store) ListTenants(ctx context.Context) ([]storage.Tenant, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]storage.Tenant, 0, len(s.tenants))
	for _, id := range sortedKeys(s.tenants) {
		if len(out)%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, cloneTenant(s.tenants[id].tenant))
	}
	return out, nil
}

// UpdateTenant replaces the tenant if t.Revision equals the stored one.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateTenant(ctx context.Context, t storage.Tenant, build storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error) {
	if !storage.ValidID(t.ID) {
		return storage.Tenant{}, storage.AuditRecord{}, invalidID("tenant", t.ID)
	}
	t = cloneTenant(t)
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[t.ID]
	if !ok {
		return storage.Tenant{}, storage.AuditRecord{}, tenantNotFound(t.ID)
	}
	if cur := ts.tenant.Revision; cur != t.Revision {
		return storage.Tenant{}, storage.AuditRecord{}, fmt.Errorf("%w: tenant %q is at revision %d, update was based on %d",
			storage.ErrConflict, t.ID, cur, t.Revision)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Tenant{}, storage.AuditRecord{}, err
	}
	t.Revision++
	ts.tenant = t
	s.commitAudit(pending)
	return cloneTenant(t), rec, nil
}

// prepareIntegration validates an integration for tenantID and fills its
// TenantID.
func prepareIntegration(tenantID string, in storage.Integration) (storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return storage.Integration{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(in.ID) {
		return storage.Integration{}, invalidID("integration", in.ID)
	}
	if in.TenantID != "" && in.TenantID != tenantID {
		return storage.Integration{}, fmt.Errorf("%w: integration %q names tenant %q but is written to tenant %q",
			storage.ErrInvalidRecord, in.ID, in.TenantID, tenantID)
	}
	in = cloneIntegration(in)
	in.TenantID = tenantID
	return in, nil
}

// PutIntegration creates or replaces an integration unconditionally; the
// stored revision becomes the previous one plus one (1 on create).
// A nil build commits no event (storage.AuditFunc).
func (s *Store) PutIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	rec, err := prepareIntegration(tenantID, in)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[tenantID]
	if !ok {
		return storage.Integration{}, storage.AuditRecord{}, tenantNotFound(tenantID)
	}
	rec.Revision = 1
	if old, ok := ts.integrations[rec.ID]; ok {
		rec.Revision = old.Revision + 1
	}
	pending, arec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	ts.integrations[rec.ID] = rec
	s.commitAudit(pending)
	return cloneIntegration(rec), arec, nil
}

// GetIntegration returns storage.ErrNotFound for an unknown id or tenant.
func (s *Store) GetIntegration(ctx context.Context, tenantID, id string) (storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return storage.Integration{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.Integration{}, invalidID("integration", id)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.Integration{}, err
	}
	defer unlock()
	ts, ok := s.tenants[tenantID]
	if !ok {
		return storage.Integration{}, notFound(id)
	}
	in, ok := ts.integrations[id]
	if !ok {
		return storage.Integration{}, notFound(id)
	}
	return cloneIntegration(in), nil
}

// ListIntegrations lists a tenant's integrations sorted by id;
// storage.ErrTenantNotFound for an unknown tenant.
func (s *Store) ListIntegrations(ctx context.Context, tenantID string) ([]storage.Integration, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ts, ok := s.tenants[tenantID]
	if !ok {
		return nil, tenantNotFound(tenantID)
	}
	out := make([]storage.Integration, 0, len(ts.integrations))
	for _, id := range sortedKeys(ts.integrations) {
		if len(out)%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, cloneIntegration(ts.integrations[id]))
	}
	return out, nil
}

// CompareAndSwapIntegration replaces the record if in.Revision equals the
// stored revision: storage.ErrConflict if not, storage.ErrNotFound if the
// record (or tenant) does not exist.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CompareAndSwapIntegration(ctx context.Context, tenantID string, in storage.Integration, build storage.AuditFunc) (storage.Integration, storage.AuditRecord, error) {
	rec, err := prepareIntegration(tenantID, in)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[tenantID]
	if !ok {
		return storage.Integration{}, storage.AuditRecord{}, notFound(rec.ID)
	}
	old, ok := ts.integrations[rec.ID]
	if !ok {
		return storage.Integration{}, storage.AuditRecord{}, notFound(rec.ID)
	}
	if old.Revision != rec.Revision {
		return storage.Integration{}, storage.AuditRecord{}, fmt.Errorf("%w: integration %q is at revision %d, update was based on %d",
			storage.ErrConflict, rec.ID, old.Revision, rec.Revision)
	}
	pending, arec, err := s.prepareAudit(build)
	if err != nil {
		return storage.Integration{}, storage.AuditRecord{}, err
	}
	rec.Revision = old.Revision + 1
	ts.integrations[rec.ID] = rec
	s.commitAudit(pending)
	return cloneIntegration(rec), arec, nil
}

// DeleteIntegration removes the record; storage.ErrNotFound if absent (or
// the tenant is unknown).
// A nil build commits no event (storage.AuditFunc).
func (s *Store) DeleteIntegration(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("integration", id)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[tenantID]
	if !ok {
		return storage.AuditRecord{}, notFound(id)
	}
	if _, ok := ts.integrations[id]; !ok {
		return storage.AuditRecord{}, notFound(id)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	delete(ts.integrations, id)
	s.commitAudit(pending)
	return rec, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// cloneIntegration deep-copies the slices so a returned value shares no
// memory with the caller's input or the store.
func cloneIntegration(in storage.Integration) storage.Integration {
	in.Scopes = slices.Clone(in.Scopes)
	in.AccessToken = bytes.Clone(in.AccessToken)
	in.RefreshToken = bytes.Clone(in.RefreshToken)
	in.Params = maps.Clone(in.Params)
	in.Client = bytes.Clone(in.Client)
	return in
}

func cloneTenant(t storage.Tenant) storage.Tenant {
	t.DEKs = slices.Clone(t.DEKs)
	for i := range t.DEKs {
		t.DEKs[i].Nonce = bytes.Clone(t.DEKs[i].Nonce)
		t.DEKs[i].Ciphertext = bytes.Clone(t.DEKs[i].Ciphertext)
	}
	return t
}

// Backup writes a consistent snapshot, taken under the read lock (writers
// wait while it is copied), as JSON lines, one object per line, in this
// order:
//
//	{"kind":"vaultd-inmem-backup","v":1}
//	{"kind":"tenant","tenant":{...storage.Tenant...}}            per tenant, by id
//	{"kind":"integration","integration":{...storage.Integration...}} per record, by tenant then id
//	{"kind":"connect_session","connect_session":{...storage.ConnectSession...}} per session, by tenant then id
//	{"kind":"offboarded","tenant_id":"..."}                       per offboarded tenant, by id
//	{"kind":"revocation","revocation":{...storage.Revocation...}} per pending revocation, by id
//	{"kind":"delivery","delivery":{...storage.Delivery...}}       per webhook delivery, by id
//	{"kind":"webhook_cursor","seq":N}
//	{"kind":"audit_anchor","seq":N,"hash":"..."}
//	{"kind":"audit","seq":N,"hash":"...","data":{...the event...}} per remaining event, by seq
//	{"kind":"audit_head","seq":N,"hash":"..."}
//
// Byte fields are base64 and times RFC 3339 with nanoseconds, as
// encoding/json writes them. The snapshot is not a bbolt file; vaultctl's
// restore reads bbolt files only.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	enc := json.NewEncoder(bw) // Encode ends every value with "\n"
	type head struct {
		Kind string `json:"kind"`
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	lines := 0
	emit := func(v any) error {
		if lines++; lines%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return enc.Encode(v)
	}
	err = func() error {
		if err := emit(struct {
			Kind string `json:"kind"`
			V    int    `json:"v"`
		}{"vaultd-inmem-backup", 1}); err != nil {
			return err
		}
		ids := sortedKeys(s.tenants)
		for _, id := range ids {
			if err := emit(struct {
				Kind   string         `json:"kind"`
				Tenant storage.Tenant `json:"tenant"`
			}{"tenant", s.tenants[id].tenant}); err != nil {
				return err
			}
		}
		for _, id := range ids {
			ins := s.tenants[id].integrations
			for _, iid := range sortedKeys(ins) {
				if err := emit(struct {
					Kind        string              `json:"kind"`
					Integration storage.Integration `json:"integration"`
				}{"integration", ins[iid]}); err != nil {
					return err
				}
			}
		}
		// The digest index is not written: it is derived from the
		// sessions' LinkHash and StateHash.
		for _, id := range ids {
			ss := s.tenants[id].sessions
			for _, sid := range sortedKeys(ss) {
				if err := emit(struct {
					Kind    string                 `json:"kind"`
					Session storage.ConnectSession `json:"connect_session"`
				}{"connect_session", ss[sid]}); err != nil {
					return err
				}
			}
		}
		if err := s.backupLifecycle(emit); err != nil {
			return err
		}
		if err := emit(head{"audit_anchor", s.anchor.Seq, s.anchor.Hash}); err != nil {
			return err
		}
		for _, r := range s.audit {
			if err := emit(struct {
				Kind string          `json:"kind"`
				Seq  uint64          `json:"seq"`
				Hash string          `json:"hash"`
				Data json.RawMessage `json:"data"`
			}{"audit", r.Seq, r.Hash, r.Data}); err != nil {
				return err
			}
		}
		if err := emit(head{"audit_head", s.head.Seq, s.head.Hash}); err != nil {
			return err
		}
		return bw.Flush()
	}()
	if err != nil {
		return cw.n, fmt.Errorf("storage: backup: %w", err)
	}
	return cw.n, nil
}

// countWriter counts the bytes that reached w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
