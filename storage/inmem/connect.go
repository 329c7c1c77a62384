package inmem

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/vaultd/vaultd/storage"
)

// sessionNotFound is the same for a missing tenant and a missing id, so
// callers cannot probe which tenants exist or own an id.
func sessionNotFound(id string) error {
	return fmt.Errorf("%w: connect session %q", storage.ErrNotFound, id)
}

// cloneSession deep-copies the slices and the map so a returned value
// shares no memory with the caller's input or the store.
func cloneSession(cs storage.ConnectSession) storage.ConnectSession {
	cs.Scopes = slices.Clone(cs.Scopes)
	cs.Params = maps.Clone(cs.Params)
	cs.LinkHash = bytes.Clone(cs.LinkHash)
	cs.StateHash = bytes.Clone(cs.StateHash)
	cs.BrowserHash = bytes.Clone(cs.BrowserHash)
	cs.Verifier = bytes.Clone(cs.Verifier)
	cs.Client = bytes.Clone(cs.Client)
	return cs
}

// sessionOf returns the stored session; ok false if it or its tenant is
// missing. The caller holds a lock.
func (s *Store) sessionOf(tenantID, id string) (storage.ConnectSession, *tenantState, bool) {
	ts, ok := s.tenants[tenantID]
	if !ok {
		return storage.ConnectSession{}, nil, false
	}
	cs, ok := ts.sessions[id]
	return cs, ts, ok
}

// checkDigestsFree refuses a digest of next that is indexed for a session
// other than next itself. The caller holds the write lock.
func (s *Store) checkDigestsFree(next storage.ConnectSession) error {
	self := sessionRef{next.TenantID, next.ID}
	for _, d := range next.Digests() {
		if ref, ok := s.digests[string(d)]; ok && ref != self {
			return fmt.Errorf("%w: a digest of connect session %q is already indexed", storage.ErrExists, next.ID)
		}
	}
	return nil
}

// reindex moves the digest index from old's digests to next's (either may
// be the zero session). The caller holds the write lock and has run
// checkDigestsFree(next).
func (s *Store) reindex(old, next storage.ConnectSession) {
	self := sessionRef{old.TenantID, old.ID}
	for _, d := range old.Digests() {
		if s.digests[string(d)] == self {
			delete(s.digests, string(d))
		}
	}
	self = sessionRef{next.TenantID, next.ID}
	for _, d := range next.Digests() {
		s.digests[string(d)] = self
	}
}

// CreateConnectSession stores cs with Revision 1 and indexes its digests.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CreateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	cs = cloneSession(cs)
	cs.Revision = 1
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	defer unlock()
	ts, ok := s.tenants[cs.TenantID]
	if !ok {
		return storage.ConnectSession{}, storage.AuditRecord{}, tenantNotFound(cs.TenantID)
	}
	if _, ok := ts.sessions[cs.ID]; ok {
		return storage.ConnectSession{}, storage.AuditRecord{}, fmt.Errorf("%w: connect session %q", storage.ErrExists, cs.ID)
	}
	if err := s.checkDigestsFree(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	ts.sessions[cs.ID] = cs
	s.reindex(storage.ConnectSession{}, cs)
	s.commitAudit(pending)
	return cloneSession(cs), rec, nil
}

// GetConnectSession returns storage.ErrNotFound for an unknown id or tenant.
func (s *Store) GetConnectSession(ctx context.Context, tenantID, id string) (storage.ConnectSession, error) {
	if !storage.ValidID(tenantID) {
		return storage.ConnectSession{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.ConnectSession{}, invalidID("connect session", id)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.ConnectSession{}, err
	}
	defer unlock()
	cs, _, ok := s.sessionOf(tenantID, id)
	if !ok {
		return storage.ConnectSession{}, sessionNotFound(id)
	}
	return cloneSession(cs), nil
}

// FindConnectSession returns the session whose LinkHash or StateHash is
// digest, whatever its tenant; storage.ErrNotFound if none.
func (s *Store) FindConnectSession(ctx context.Context, digest []byte) (storage.ConnectSession, error) {
	if err := storage.CheckConnectDigest(digest); err != nil {
		return storage.ConnectSession{}, err
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.ConnectSession{}, err
	}
	defer unlock()
	ref, ok := s.digests[string(digest)]
	if !ok {
		return storage.ConnectSession{}, fmt.Errorf("%w: connect session", storage.ErrNotFound)
	}
	cs, _, ok := s.sessionOf(ref.tenantID, ref.id)
	if !ok || (!bytes.Equal(cs.LinkHash, digest) && !bytes.Equal(cs.StateHash, digest)) {
		// The index and the sessions change under one lock; a mismatch
		// is a bug in this package, reported rather than papered over.
		return storage.ConnectSession{}, fmt.Errorf("%w: digest index names connect session %q of tenant %q, which does not carry it",
			storage.ErrCorrupt, ref.id, ref.tenantID)
	}
	return cloneSession(cs), nil
}

// prepareSessionUpdate checks next against the stored session (revision,
// digests) and returns the record to store. The caller holds the write
// lock.
func (s *Store) prepareSessionUpdate(next storage.ConnectSession) (old, rec storage.ConnectSession, ts *tenantState, err error) {
	old, ts, ok := s.sessionOf(next.TenantID, next.ID)
	if !ok {
		return old, rec, nil, sessionNotFound(next.ID)
	}
	if old.Revision != next.Revision {
		return old, rec, nil, fmt.Errorf("%w: connect session %q is at revision %d, update was based on %d",
			storage.ErrConflict, next.ID, old.Revision, next.Revision)
	}
	if err := s.checkDigestsFree(next); err != nil {
		return old, rec, nil, err
	}
	rec = next
	rec.Revision = old.Revision + 1
	return old, rec, ts, nil
}

// UpdateConnectSession replaces the session if cs.Revision equals the
// stored one, moving the digest index with it.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) UpdateConnectSession(ctx context.Context, cs storage.ConnectSession, build storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error) {
	if err := storage.CheckConnectSession(cs); err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	cs = cloneSession(cs)
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	defer unlock()
	old, next, ts, err := s.prepareSessionUpdate(cs)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.ConnectSession{}, storage.AuditRecord{}, err
	}
	ts.sessions[next.ID] = next
	s.reindex(old, next)
	s.commitAudit(pending)
	return cloneSession(next), rec, nil
}

// CompleteConnectSession is UpdateConnectSession(cs) and
// PutIntegration(in) under one lock with one audit event.
// A nil build commits no event (storage.AuditFunc).
func (s *Store) CompleteConnectSession(ctx context.Context, cs storage.ConnectSession, in storage.Integration, build storage.AuditFunc) (storage.ConnectSession, storage.Integration, storage.AuditRecord, error) {
	fail := func(err error) (storage.ConnectSession, storage.Integration, storage.AuditRecord, error) {
		return storage.ConnectSession{}, storage.Integration{}, storage.AuditRecord{}, err
	}
	if err := storage.CheckConnectSession(cs); err != nil {
		return fail(err)
	}
	in, err := storage.CheckCompletedIntegration(cs, in)
	if err != nil {
		return fail(err)
	}
	in, err = prepareIntegration(cs.TenantID, in)
	if err != nil {
		return fail(err)
	}
	cs = cloneSession(cs)
	unlock, err := s.lock(ctx)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	old, next, ts, err := s.prepareSessionUpdate(cs)
	if err != nil {
		return fail(err)
	}
	in.Revision = 1
	if prev, ok := ts.integrations[in.ID]; ok {
		in.Revision = prev.Revision + 1
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return fail(err)
	}
	ts.sessions[next.ID] = next
	s.reindex(old, next)
	ts.integrations[in.ID] = in
	s.commitAudit(pending)
	return cloneSession(next), cloneIntegration(in), rec, nil
}

// DeleteConnectSession removes the session and its index entries;
// storage.ErrNotFound if absent (or the tenant is unknown).
// A nil build commits no event (storage.AuditFunc).
func (s *Store) DeleteConnectSession(ctx context.Context, tenantID, id string, build storage.AuditFunc) (storage.AuditRecord, error) {
	if !storage.ValidID(tenantID) {
		return storage.AuditRecord{}, invalidID("tenant", tenantID)
	}
	if !storage.ValidID(id) {
		return storage.AuditRecord{}, invalidID("connect session", id)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	defer unlock()
	old, ts, ok := s.sessionOf(tenantID, id)
	if !ok {
		return storage.AuditRecord{}, sessionNotFound(id)
	}
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	delete(ts.sessions, id)
	s.reindex(old, storage.ConnectSession{})
	s.commitAudit(pending)
	return rec, nil
}

// ListConnectSessions lists a tenant's sessions sorted by id; an unknown
// tenant lists nothing.
func (s *Store) ListConnectSessions(ctx context.Context, tenantID string) ([]storage.ConnectSession, error) {
	if !storage.ValidID(tenantID) {
		return nil, invalidID("tenant", tenantID)
	}
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := []storage.ConnectSession{}
	ts, ok := s.tenants[tenantID]
	if !ok {
		return out, nil
	}
	for _, id := range sortedKeys(ts.sessions) {
		if len(out)%ctxCheckEvery == ctxCheckEvery-1 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, cloneSession(ts.sessions[id]))
	}
	return out, nil
}
