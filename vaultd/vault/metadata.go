package vault

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// Metadata is what the vault tells about an integration (the server
// answers it as api.Integration). It has no field that could hold a token.
type Metadata struct {
	ID                  string
	TenantID            string
	Provider            string
	Scopes              []string
	Status              string
	ExpiresAt           *time.Time
	CreatedAt           *time.Time
	UpdatedAt           *time.Time
	LastRefreshAt       *time.Time
	LastUsedAt          *time.Time
	RefreshCount        uint64
	ConsecutiveFailures uint32
	LastError           string
	// APIBaseURL is the integration's egress boundary: fixed when it was
	// stored (a template's per-connection host) or the provider's.
	APIBaseURL string
	// Grant is "client_credentials" for integrations vaultd obtains
	// itself, else "authorization_code".
	Grant string
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (s *Service) metadata(in storage.Integration) Metadata {
	used := in.LastUsedAt
	if u, ok := s.usage.get(in.TenantID, in.ID); ok && u.After(used) {
		used = u
	}
	scopes := in.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return Metadata{
		ID: in.ID, TenantID: in.TenantID, Provider: in.Provider, Scopes: scopes,
		Status: in.Status, ExpiresAt: tp(in.ExpiresAt), CreatedAt: tp(in.CreatedAt),
		UpdatedAt: tp(in.UpdatedAt), LastRefreshAt: tp(in.LastRefreshAt), LastUsedAt: tp(used),
		RefreshCount: in.RefreshCount, ConsecutiveFailures: in.ConsecutiveFailures,
		LastError: in.LastError, APIBaseURL: s.apiBaseString(in), Grant: integrationGrant(in),
	}
}

func integrationGrant(in storage.Integration) string {
	if in.Grant == "" {
		return GrantAuthorizationCode
	}
	return in.Grant
}

// apiBaseString is the integration's API base as metadata shows it.
func (s *Service) apiBaseString(in storage.Integration) string {
	if in.APIBaseURL != "" {
		return in.APIBaseURL
	}
	if p, ok := s.Provider(in.Provider); ok {
		if p.APIBase != nil {
			return p.APIBase.String()
		}
		return p.APIBaseURL
	}
	return ""
}

// usageTracker keeps last-use times in memory so that a proxied call does
// not cost a store write; flushUsage persists them periodically.
type usageTracker struct {
	mu    sync.Mutex
	dirty map[[2]string]time.Time
	seen  map[[2]string]time.Time
}

func newUsageTracker() *usageTracker {
	return &usageTracker{dirty: map[[2]string]time.Time{}, seen: map[[2]string]time.Time{}}
}

func (u *usageTracker) mark(tenant, id string, at time.Time) {
	k := [2]string{tenant, id}
	u.mu.Lock()
	if at.After(u.seen[k]) {
		u.seen[k] = at
		u.dirty[k] = at
	}
	u.mu.Unlock()
}

func (u *usageTracker) get(tenant, id string) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.seen[[2]string{tenant, id}]
	return t, ok
}

func (u *usageTracker) forget(tenant, id string) {
	k := [2]string{tenant, id}
	u.mu.Lock()
	delete(u.seen, k)
	delete(u.dirty, k)
	u.mu.Unlock()
}

func (u *usageTracker) take() map[[2]string]time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	d := u.dirty
	u.dirty = map[[2]string]time.Time{}
	return d
}

func (s *Service) flushLoop(interval time.Duration) {
	defer s.wg.Done()
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tk.C:
			ctx, cancel := context.WithTimeout(context.Background(), interval)
			s.flushUsage(ctx)
			cancel()
		}
	}
}

// requeue puts back a last-use time a flush could not write.
func (u *usageTracker) requeue(k [2]string, at time.Time) {
	u.mu.Lock()
	if _, tracked := u.seen[k]; tracked && at.After(u.dirty[k]) {
		u.dirty[k] = at
	}
	u.mu.Unlock()
}

// flushUsage writes last_used_at with CAS, under the integration's lock
// like every other record write: a refresh commits with CAS on the revision
// it read under that lock, so a flush slipping in between would make the
// refresh fail after the provider rotated the refresh token, losing it (the
// integration would then need reauthorization). An integration busy
// refreshing is left for the next flush.
func (s *Service) flushUsage(ctx context.Context) {
	for k, at := range s.usage.take() {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		unlock, err := s.locks.Lock(lctx, k[0]+"\x00"+k[1])
		cancel()
		if err != nil {
			s.usage.requeue(k, at)
			continue
		}
		s.flushOne(ctx, k, at)
		unlock()
	}
}

func (s *Service) flushOne(ctx context.Context, k [2]string, at time.Time) {
	for attempt := 0; attempt < 3; attempt++ {
		in, err := s.store.GetIntegration(ctx, k[0], k[1])
		if err != nil || !at.After(in.LastUsedAt) {
			return
		}
		in.LastUsedAt = at
		// No event (a nil AuditFunc): last_used_at is bookkeeping
		// batched from proxied calls, each already audited on its own;
		// this is the one write in vaultd that commits without an event.
		_, _, err = s.store.CompareAndSwapIntegration(ctx, k[0], in, nil)
		if err == nil || !errors.Is(err, storage.ErrConflict) {
			if err != nil {
				s.log.Warn("last_used_at flush failed", "tenant_id", k[0], "integration_id", k[1], "err", err)
			}
			return
		}
	}
}
