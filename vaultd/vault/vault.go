// Package vault is vaultd's service core: tenants, storing tokens,
// integration metadata, disconnect, and handing out a usable access token
// with refresh under a per-integration lock. It knows nothing of HTTP; the
// server maps its sentinel errors to status codes.
//
// Refresh protocol (the part that must not race):
//  1. read the record; if the access token is good beyond the provider's
//     refresh margin, use it (no lock, no HSM call once the DEK is cached);
//  2. otherwise take the integration's lock, re-read the record and decide
//     again: another caller may have refreshed while we waited;
//  3. call the token endpoint once, seal the new tokens, and commit them with
//     compare-and-swap on the revision read under the lock;
//  4. release the lock only after the commit (and its audit event).
//
// Any failure of the lock, the store or the HSM refuses the call
// (ErrUnavailable): nothing bypasses a control.
package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Sentinel errors; the server maps them to CONTRACT §4 codes.
var (
	ErrNotFound                = errors.New("vault: not found")
	ErrTenantNotFound          = errors.New("vault: tenant not found")
	ErrTenantExists            = errors.New("vault: tenant already exists")
	ErrBadRequest              = errors.New("vault: bad request")
	ErrUnavailable             = errors.New("vault: integration unavailable")
	ErrReauthorizationRequired = errors.New("vault: reauthorization required")
	ErrConflict                = errors.New("vault: conflict")
	// ErrRefreshThrottled: ForceRefresh declined (the token was refreshed
	// too recently, or refreshes are backing off); the caller answers the
	// upstream's 401 as it came.
	ErrRefreshThrottled = errors.New("vault: forced refresh throttled")
)

// errTokenTooLarge: a provider answered a refresh with a token over
// MaxTokenBytes; treated as a transient failure.
var errTokenTooLarge = errors.New("vault: provider token over the size limit")

// MaxTokenBytes bounds a stored access or refresh token. Real tokens are
// at most a few KiB (JWTs included); anything larger is a mistake or an
// attempt to grow the database and every proxied call's redaction work.
const MaxTokenBytes = 64 << 10

// DefaultForcedRefreshInterval is the least time between two refreshes that
// upstream 401s force on one integration: providers rate-limit the token
// endpoint per client_id, which every tenant shares, so one tenant's
// rejected calls must not spend everyone's refresh budget.
const DefaultForcedRefreshInterval = time.Minute

// Field names bound into the AEAD additional data.
const (
	fieldAccess  = "access_token"
	fieldRefresh = "refresh_token"
)

// Provider is one configured OAuth provider, as the service uses it.
type Provider struct {
	Name            string
	Endpoint        oauth.Endpoint
	APIBase         *url.URL
	Scopes          []string // the inventory; grants beyond it are drift
	RefreshMargin   time.Duration
	DefaultLifetime time.Duration // when a token response omits expires_in
	// ForcedRefreshInterval is the least time since the last refresh before
	// an upstream 401 may force another (DefaultForcedRefreshInterval when
	// zero).
	ForcedRefreshInterval time.Duration
}

func (p *Provider) forcedRefreshInterval() time.Duration {
	if p.ForcedRefreshInterval > 0 {
		return p.ForcedRefreshInterval
	}
	return DefaultForcedRefreshInterval
}

// refreshBudget bounds a refresh once started: the provider call, then
// sealing and the commit (commitTimeout).
func (p *Provider) refreshBudget() time.Duration {
	t := p.Endpoint.Timeout
	if t <= 0 {
		t = oauth.DefaultTimeout
	}
	return t + commitTimeout
}

// Providers is an immutable set of providers, swapped whole on reload.
type Providers map[string]*Provider

// Caller identifies who asked, for audit.
type Caller struct {
	Principal  string
	OnBehalfOf string
	RequestID  string
}

// Auditor records audit events synchronously.
type Auditor interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
	// RecordWith commits the event inside the caller's transaction.
	RecordWith(ctx context.Context, ev audit.Event, commit func(build func(storage.AuditHead) (storage.AuditRecord, error)) (storage.AuditRecord, error)) (audit.Event, error)
	// RecordAllWith commits several events, in order, inside the caller's
	// transaction.
	RecordAllWith(ctx context.Context, evs []audit.Event, commit func(build func(storage.AuditHead) (storage.AuditRecord, error)) (storage.AuditRecord, error)) ([]audit.Event, error)
}

// Revoker revokes a token at a provider (RFC 7009); oauth.Revoke in
// production.
type Revoker func(ctx context.Context, ep oauth.Endpoint, token secret.String, hint string) error

// Refresher runs the refresh grant; oauth.Refresh in production.
type Refresher func(ctx context.Context, ep oauth.Endpoint, refreshToken secret.String) (oauth.Token, error)

// Metrics receives counters; all methods must be cheap and safe for
// concurrent use. A nil Metrics is allowed.
type Metrics interface {
	Refresh(provider, outcome string)
	ScopeDrift(provider string)
	LockWait(d time.Duration)
}

// Options configures a Service.
type Options struct {
	Store      storage.Store
	Keys       *envelope.Keys
	KEKVersion func() uint32
	Audit      Auditor
	Locker     Locker
	Providers  Providers
	Logger     *slog.Logger
	Metrics    Metrics
	Refresh    Refresher // default oauth.Refresh
	Revoke     Revoker   // default oauth.Revoke
	Now        func() time.Time
	// LockTimeout bounds the wait for an integration's lock (default 30s).
	LockTimeout time.Duration
	// UsageFlushInterval is how often last_used_at is written (default 5s).
	UsageFlushInterval time.Duration
}

// Service is safe for concurrent use.
type Service struct {
	store       storage.Store
	keys        *envelope.Keys
	kekVersion  func() uint32
	audit       Auditor
	locks       Locker
	providers   atomic.Pointer[Providers]
	log         *slog.Logger
	metrics     Metrics
	refresh     Refresher
	revoke      Revoker
	now         func() time.Time
	lockTimeout time.Duration

	usage *usageTracker
	done  chan struct{}
	wg    sync.WaitGroup
	// bg counts refreshes running detached from their callers; bgMu
	// orders starting one (bg.Add) against Close (bg.Wait): nothing starts
	// once closed is set.
	bg     sync.WaitGroup
	bgMu   sync.Mutex
	closed bool
}

// goBackground runs fn in a goroutine Close waits for; false (fn not run)
// once the service is closing.
func (s *Service) goBackground(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
	return true
}

// New builds a Service and starts its background usage flusher; Close
// stops it and flushes.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Keys == nil || o.Audit == nil {
		return nil, errors.New("vault: store, keys and audit are required")
	}
	s := &Service{
		store: o.Store, keys: o.Keys, kekVersion: o.KEKVersion, audit: o.Audit,
		locks: o.Locker, log: o.Logger, metrics: o.Metrics, refresh: o.Refresh,
		revoke: o.Revoke, now: o.Now, lockTimeout: o.LockTimeout,
		done: make(chan struct{}),
	}
	if s.locks == nil {
		s.locks = NewKeyedMutex()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = nopMetrics{}
	}
	if s.refresh == nil {
		s.refresh = func(ctx context.Context, ep oauth.Endpoint, rt secret.String) (oauth.Token, error) {
			return oauth.Refresh(ctx, ep, rt, nil)
		}
	}
	if s.revoke == nil {
		s.revoke = oauth.Revoke
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.kekVersion == nil {
		s.kekVersion = func() uint32 { return 1 }
	}
	if s.lockTimeout <= 0 {
		s.lockTimeout = 30 * time.Second
	}
	ps := o.Providers
	if ps == nil {
		ps = Providers{}
	}
	s.providers.Store(&ps)
	interval := o.UsageFlushInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	s.usage = newUsageTracker()
	s.wg.Add(1)
	go s.flushLoop(interval)
	return s, nil
}

// SetProviders swaps the provider set (SIGHUP reload).
func (s *Service) SetProviders(ps Providers) { s.providers.Store(&ps) }

// Provider returns the named provider.
func (s *Service) Provider(name string) (*Provider, bool) {
	p, ok := (*s.providers.Load())[name]
	return p, ok
}

// ProviderNames lists configured providers, sorted.
func (s *Service) ProviderNames() []string {
	ps := *s.providers.Load()
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Close stops the usage flusher and writes pending last_used_at values.
func (s *Service) Close() error {
	s.bgMu.Lock()
	if s.closed {
		s.bgMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.bgMu.Unlock()
	// Refreshes in flight commit whatever their callers did (bounded by
	// refreshBudget); then the usage flusher stops.
	s.bg.Wait()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.flushUsage(ctx)
	return nil
}

// ---- tenants ----

// CreateTenant provisions a tenant with a fresh DEK wrapped by the current
// KEK. ev (actor, request id, status) becomes its tenant.create event,
// committed in the same transaction as the tenant.
func (s *Service) CreateTenant(ctx context.Context, ev audit.Event, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, fmt.Errorf("%w: invalid tenant id", ErrBadRequest)
	}
	if _, err := s.store.GetTenant(ctx, id); err == nil {
		return storage.Tenant{}, ErrTenantExists
	} else if !errors.Is(err, storage.ErrTenantNotFound) {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	dek, err := s.keys.NewDEK(ctx, id, 1)
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: new DEK: %w", ErrUnavailable, err)
	}
	now := s.now().UTC()
	t := storage.Tenant{
		ID: id, CreatedAt: now, Status: storage.TenantActive,
		KEKVersion: dek.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{dek},
	}
	ev.TenantID, ev.Action, ev.Outcome = id, audit.ActionTenantCreate, audit.OutcomeSuccess
	ev.Detail = fmt.Sprintf("kek_version=%d dek_version=%d", t.KEKVersion, t.DEKVersion)
	t, err = s.tenantWrite(ctx, ev, func(build auditBuild) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.CreateTenantAudited(ctx, t, build)
	})
	if errors.Is(err, storage.ErrExists) {
		return storage.Tenant{}, ErrTenantExists
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

type auditBuild = func(storage.AuditHead) (storage.AuditRecord, error)

// tenantWrite commits a tenant change and its audit event ev together
// (storage's *Audited writes through audit.Log.RecordWith): a key change
// that cannot be audited does not happen.
func (s *Service) tenantWrite(ctx context.Context, ev audit.Event, write func(build auditBuild) (storage.Tenant, storage.AuditRecord, error)) (storage.Tenant, error) {
	var out storage.Tenant
	_, err := s.audit.RecordWith(ctx, ev, func(build auditBuild) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = write(build)
		return rec, err
	})
	return out, err
}

// GetTenant returns a tenant record.
func (s *Service) GetTenant(ctx context.Context, id string) (storage.Tenant, error) {
	if !storage.ValidID(id) {
		return storage.Tenant{}, ErrTenantNotFound
	}
	t, err := s.store.GetTenant(ctx, id)
	if errors.Is(err, storage.ErrTenantNotFound) {
		return storage.Tenant{}, ErrTenantNotFound
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// ListTenants lists tenants (operator).
func (s *Service) ListTenants(ctx context.Context) ([]storage.Tenant, error) {
	ts, err := s.store.ListTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return ts, nil
}

// RotateDEK gives a tenant a new current DEK (wrapped by the current KEK);
// older versions stay to open existing records, which are re-sealed under
// the new DEK on their next write.
func (s *Service) RotateDEK(ctx context.Context, ev audit.Event, id string) (storage.Tenant, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, err
	}
	next := t.DEKVersion + 1
	dek, err := s.keys.NewDEK(ctx, id, next)
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: new DEK: %w", ErrUnavailable, err)
	}
	t.DEKs = append(t.DEKs, dek)
	t.DEKVersion = next
	t.KEKVersion = dek.KEKVersion
	ev.TenantID, ev.Action, ev.Outcome = id, audit.ActionKeyRotate, audit.OutcomeSuccess
	ev.Detail = fmt.Sprintf("dek_version=%d kek_version=%d", t.DEKVersion, t.KEKVersion)
	t, err = s.tenantWrite(ctx, ev, func(build auditBuild) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenantAudited(ctx, t, build)
	})
	if errors.Is(err, storage.ErrConflict) {
		return storage.Tenant{}, ErrConflict
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// RewrapTenant re-wraps every DEK version of tenant id that is not under
// the current KEK (after a KEK rotation, before the old KEK is retired) and
// returns the tenant and how many DEKs changed. The DEKs themselves do not
// change, so no record needs re-sealing. Concurrent updates of the tenant
// answer ErrConflict (retry).
func (s *Service) RewrapTenant(ctx context.Context, ev audit.Event, id string) (storage.Tenant, int, error) {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		return t, 0, err
	}
	current := s.kekVersion()
	n := 0
	for i, w := range t.DEKs {
		nw, changed, err := s.keys.RewrapDEK(ctx, id, w, current)
		if err != nil {
			return storage.Tenant{}, 0, fmt.Errorf("%w: rewrap: %w", ErrUnavailable, err)
		}
		if changed {
			t.DEKs[i] = nw
			n++
		}
	}
	if w, ok := t.CurrentDEK(); ok {
		t.KEKVersion = w.KEKVersion
	}
	ev.TenantID, ev.Action, ev.Outcome = id, audit.ActionKeyRotate, audit.OutcomeSuccess
	ev.Detail = fmt.Sprintf("rewrap deks=%d kek_version=%d", n, t.KEKVersion)
	if n == 0 {
		// Nothing to change; the check itself is still on record.
		if _, err := s.audit.Record(ctx, ev); err != nil {
			return storage.Tenant{}, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return t, 0, nil
	}
	t, err = s.tenantWrite(ctx, ev, func(build auditBuild) (storage.Tenant, storage.AuditRecord, error) {
		return s.store.UpdateTenantAudited(ctx, t, build)
	})
	if errors.Is(err, storage.ErrConflict) {
		return storage.Tenant{}, 0, ErrConflict
	}
	if err != nil {
		return storage.Tenant{}, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Same keys, new wrappings: drop the cached copies keyed to the old ones.
	s.keys.Evict(id)
	return t, n, nil
}

// tenant loads the tenant for an integration operation. A missing tenant
// answers ErrNotFound, exactly like a missing integration: callers must not
// learn which tenants exist.
func (s *Service) tenant(ctx context.Context, id string) (storage.Tenant, error) {
	t, err := s.store.GetTenant(ctx, id)
	if errors.Is(err, storage.ErrTenantNotFound) || errors.Is(err, storage.ErrNotFound) {
		return storage.Tenant{}, ErrNotFound
	}
	if err != nil {
		return storage.Tenant{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return t, nil
}

// ---- integrations ----

// StoreToken encrypts and persists tok for (tenant, integration). It
// replaces an existing integration (re-authorisation) and resets its state.
// The record and its token.store audit event (ev, completed here) commit in
// one transaction: a stored token always has its audit event, and the call
// costs one fsync.
func (s *Service) StoreToken(ctx context.Context, ev audit.Event, tenantID, id, providerName string, tok oauth.Token) (Metadata, error) {
	if !storage.ValidID(id) {
		return Metadata{}, fmt.Errorf("%w: invalid integration id", ErrBadRequest)
	}
	p, ok := s.Provider(providerName)
	if !ok {
		return Metadata{}, fmt.Errorf("%w: unknown provider", ErrBadRequest)
	}
	if tok.AccessToken.IsZero() {
		return Metadata{}, fmt.Errorf("%w: access_token is required", ErrBadRequest)
	}
	if tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes {
		return Metadata{}, fmt.Errorf("%w: access_token and refresh_token are limited to %d bytes each", ErrBadRequest, MaxTokenBytes)
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Metadata{}, err
	}
	now := s.now().UTC()
	in := storage.Integration{
		ID: id, TenantID: tenantID, Provider: p.Name,
		Scopes: normScopes(tok.Scope), Status: storage.StatusActive,
		TokenType: tokenType(tok.TokenType),
		ExpiresAt: expiry(now, tok.ExpiresIn, p.DefaultLifetime),
		CreatedAt: now, UpdatedAt: now,
	}
	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return Metadata{}, err
	}
	defer unlock()
	if old, err := s.store.GetIntegration(ctx, tenantID, id); err == nil {
		in.CreatedAt = old.CreatedAt
	} else if !errors.Is(err, storage.ErrNotFound) {
		return Metadata{}, s.storeErr(err)
	}
	if err := s.sealTokens(ctx, t, &in, tok.AccessToken, tok.RefreshToken); err != nil {
		return Metadata{}, err
	}
	var out storage.Integration
	ev.TenantID, ev.IntegrationID, ev.Action, ev.Outcome = tenantID, id, audit.ActionTokenStore, audit.OutcomeSuccess
	_, err = s.audit.RecordWith(ctx, ev, func(build func(storage.AuditHead) (storage.AuditRecord, error)) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = s.store.PutIntegrationAudited(ctx, tenantID, in, build)
		return rec, err
	})
	if err != nil {
		return Metadata{}, s.storeErr(err)
	}
	s.usage.forget(tenantID, id)
	return s.metadata(out), nil
}

// GetIntegration returns metadata (never a token).
func (s *Service) GetIntegration(ctx context.Context, tenantID, id string) (Metadata, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Metadata{}, err
	}
	return s.metadata(in), nil
}

// ListIntegrations returns the tenant's integrations' metadata.
func (s *Service) ListIntegrations(ctx context.Context, tenantID string) ([]Metadata, error) {
	if _, err := s.tenant(ctx, tenantID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return []Metadata{}, nil
		}
		return nil, err
	}
	ins, err := s.store.ListIntegrations(ctx, tenantID)
	if err != nil {
		return nil, s.storeErr(err)
	}
	out := make([]Metadata, 0, len(ins))
	for _, in := range ins {
		out = append(out, s.metadata(in))
	}
	return out, nil
}

// Disconnect revokes the integration's tokens at the provider (RFC 7009:
// refresh token first, since revoking it usually kills the access token
// too), deletes the record and forgets cached state. Revocation failure
// does not keep the record: the caller asked to disconnect, and a stored
// token is worse than an unrevoked one we no longer hold; the result says
// whether the provider confirmed.
//
// Once the lock is held the rest runs detached from ctx (bounded by the
// provider timeouts and commitTimeout): a token sent to the revocation
// endpoint must end with its token.revoke event, the record deleted and
// the integration.delete event, whatever the caller does meanwhile.
func (s *Service) Disconnect(ctx context.Context, ev audit.Event, tenantID, id string) (revoked bool, err error) {
	c := Caller{Principal: ev.Actor, OnBehalfOf: ev.OnBehalfOf, RequestID: ev.RequestID}
	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return false, err
	}
	defer unlock()
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return false, err
	}
	p, hasProvider := s.Provider(in.Provider)
	budget := commitTimeout
	if hasProvider {
		budget += 2 * (p.refreshBudget() - commitTimeout) // two revocation calls
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return false, err
	}
	revoked = false
	if hasProvider && p.Endpoint.RevocationURL != "" {
		revoked = true
		for _, f := range []struct {
			field, hint string
			ct          []byte
		}{{fieldRefresh, "refresh_token", in.RefreshToken}, {fieldAccess, "access_token", in.AccessToken}} {
			if len(f.ct) == 0 {
				continue
			}
			tok, err := s.keys.OpenField(ctx, t, id, f.field, f.ct)
			if err != nil {
				return false, fmt.Errorf("%w: open %s: %w", ErrUnavailable, f.field, err)
			}
			rerr := s.revoke(ctx, p.Endpoint, secret.NewString(string(tok.Reveal())), f.hint)
			tok.Wipe()
			outcome, detail := audit.OutcomeSuccess, f.hint
			if rerr != nil {
				revoked = false
				outcome, detail = audit.OutcomeFailure, f.hint+": "+safeReason(rerr)
				s.log.WarnContext(ctx, "revocation failed", "tenant_id", tenantID, "integration_id", id, "hint", f.hint, "err", safeReason(rerr))
			}
			if _, aerr := s.audit.Record(ctx, audit.Event{
				TenantID: tenantID, IntegrationID: id, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
				Action: audit.ActionTokenRevoke, Outcome: outcome, RequestID: c.RequestID,
				TargetHost: hostOf(p.Endpoint.RevocationURL), Detail: detail,
			}); aerr != nil {
				return false, fmt.Errorf("%w: audit: %w", ErrUnavailable, aerr)
			}
		}
	}
	// The tokens may be revoked already: delete and audit in one
	// transaction (a record never disappears without its
	// integration.delete event), with time of its own for the commit.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer ccancel()
	ev.TenantID, ev.IntegrationID, ev.Action, ev.Outcome = tenantID, id, audit.ActionIntegrationDelete, audit.OutcomeSuccess
	ev.Detail = fmt.Sprintf("revoked_at_provider=%t", revoked)
	if _, err := s.audit.RecordWith(cctx, ev, func(build auditBuild) (storage.AuditRecord, error) {
		return s.store.DeleteIntegrationAudited(cctx, tenantID, id, build)
	}); err != nil {
		return false, s.storeErr(err)
	}
	s.usage.forget(tenantID, id)
	return revoked, nil
}

// Lease is a usable access token for one outbound call. Wipe it after use.
type Lease struct {
	Token       secret.String
	TokenType   string
	Provider    *Provider
	Integration storage.Integration
	// Revision of the record the token came from.
	Revision uint64
}

// AccessToken returns a usable access token for (tenant, integration),
// refreshing it first if it expires within the provider's refresh margin.
func (s *Service) AccessToken(ctx context.Context, c Caller, tenantID, id string) (Lease, error) {
	return s.accessToken(ctx, c, tenantID, id, nil)
}

// ForceRefresh is called after the upstream rejected rejected's token (a
// 401) that the vault considered valid. It refreshes at most once per
// access token and once per provider ForcedRefreshInterval: when the
// stored token is no longer the rejected one, it returns a lease for the
// newer token without a refresh; when the integration was refreshed within
// the interval, or refreshes are backing off after a failure, it returns
// ErrRefreshThrottled and the caller passes the 401 on.
func (s *Service) ForceRefresh(ctx context.Context, c Caller, tenantID, id string, rejected Lease) (Lease, error) {
	if rejected.Token.IsZero() {
		return Lease{}, fmt.Errorf("%w: no rejected token given", ErrRefreshThrottled)
	}
	return s.accessToken(ctx, c, tenantID, id, &rejected.Token)
}

// accessToken serves AccessToken (rejected nil) and ForceRefresh.
func (s *Service) accessToken(ctx context.Context, c Caller, tenantID, id string, rejected *secret.String) (Lease, error) {
	in, err := s.get(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	p, ok := s.Provider(in.Provider)
	if !ok {
		// The provider was removed from the config: the integration cannot
		// be used or refreshed until it is configured again.
		return Lease{}, fmt.Errorf("%w: provider not configured", ErrUnavailable)
	}
	if in.Status == storage.StatusReauthorizationRequired {
		return Lease{}, ErrReauthorizationRequired
	}
	now := s.now()
	if rejected == nil && !s.needsRefresh(in, p, now) {
		return s.lease(ctx, tenantID, in, p)
	}
	seenToken := in.AccessToken

	unlock, err := s.lock(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	// Re-read under the lock: a caller before us may have refreshed.
	in, err = s.get(ctx, tenantID, id)
	if err != nil {
		return Lease{}, err
	}
	if in.Status == storage.StatusReauthorizationRequired {
		return Lease{}, ErrReauthorizationRequired
	}
	now = s.now()
	if rejected != nil {
		cur, err := s.lease(ctx, tenantID, in, p)
		if err != nil {
			return Lease{}, err
		}
		if !cur.Token.Equal(*rejected) {
			// Replaced (refreshed or re-stored) since the call that got
			// the 401: try the newer token, no refresh. Comparing the token
			// itself, not the revision, since last_used_at flushes also
			// bump the revision.
			return cur, nil
		}
		if last := in.LastRefreshAt; !last.IsZero() && now.Sub(last) < p.forcedRefreshInterval() {
			s.metrics.Refresh(p.Name, "forced_throttled")
			return Lease{}, fmt.Errorf("%w: refreshed %s ago", ErrRefreshThrottled, now.Sub(last).Round(time.Second))
		}
		if in.Status == storage.StatusDegraded && now.Before(in.NextRefreshAt) {
			s.metrics.Refresh(p.Name, "forced_throttled")
			return Lease{}, fmt.Errorf("%w: refresh backing off after failure", ErrRefreshThrottled)
		}
	} else {
		// A token replaced while we queued (refreshed or re-stored) and
		// still valid is used as is, even inside the refresh margin: when
		// the margin exceeds the provider's token lifetime every fresh
		// token is "due", and each waiter refreshing again would turn one
		// refresh into a storm.
		replaced := !bytes.Equal(in.AccessToken, seenToken) && in.Status == storage.StatusActive &&
			!in.ExpiresAt.IsZero() && now.Before(in.ExpiresAt)
		if replaced || !s.needsRefresh(in, p, now) {
			// Someone refreshed while we waited. Release before opening
			// the token (a tenant read and a decryption, as on the
			// lock-free fast path): in a storm every waiter passes through
			// here one by one, so the critical section is only the re-read.
			unlock()
			locked = false
			return s.lease(ctx, tenantID, in, p)
		}
		if in.Status == storage.StatusDegraded && now.Before(in.NextRefreshAt) {
			// Backing off after a transient failure: keep using the old
			// token while it is valid; refuse once it has expired.
			if now.Before(in.ExpiresAt) {
				return s.lease(ctx, tenantID, in, p)
			}
			return Lease{}, fmt.Errorf("%w: refresh backing off after failure", ErrUnavailable)
		}
	}
	locked = false // the refresh owns the lock now
	return s.refreshDetached(ctx, c, tenantID, in, p, unlock)
}

// refreshDetached runs the refresh with the integration's lock held (unlock
// releases it when the refresh has committed) on a context detached from
// the caller's and bounded by the provider's refreshBudget. The caller may
// stop waiting, but a refresh once started always runs to its commit: a
// provider that rotated the refresh token while the caller hung up must
// not leave the vault holding the dead one.
func (s *Service) refreshDetached(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, unlock func()) (Lease, error) {
	type result struct {
		l   Lease
		err error
	}
	done := make(chan result, 1) // buffered: the refresh never waits for an absent caller
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.refreshBudget())
	started := s.goBackground(func() {
		defer cancel()
		defer unlock()
		l, err := s.refreshLocked(rctx, c, tenantID, in, p)
		done <- result{l, err}
	})
	if !started {
		cancel()
		unlock()
		return Lease{}, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	select {
	case r := <-done:
		return r.l, r.err
	case <-ctx.Done():
		return Lease{}, fmt.Errorf("vault: caller stopped waiting for the refresh, which goes on: %w", ctx.Err())
	}
}

func (s *Service) needsRefresh(in storage.Integration, p *Provider, now time.Time) bool {
	if in.ExpiresAt.IsZero() {
		return false // no expiry known: the token is used until the upstream says 401
	}
	return !now.Add(p.RefreshMargin).Before(in.ExpiresAt)
}

// refreshLocked runs with the integration's lock held.
func (s *Service) refreshLocked(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider) (Lease, error) {
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Lease{}, err
	}
	now := s.now()
	stillValid := !in.ExpiresAt.IsZero() && now.Before(in.ExpiresAt)
	if len(in.RefreshToken) == 0 {
		if stillValid {
			return s.lease(ctx, tenantID, in, p)
		}
		return Lease{}, s.markReauth(ctx, c, tenantID, in, p, "no refresh token")
	}
	rt, err := s.keys.OpenField(ctx, t, in.ID, fieldRefresh, in.RefreshToken)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: open refresh token: %w", ErrUnavailable, err)
	}
	oldRefresh := secret.NewString(string(rt.Reveal()))
	rt.Wipe()
	// The DEK the new tokens will be sealed with is held from before the
	// provider call: after it, sealing needs no HSM.
	sealer, err := s.keys.HoldCurrentDEK(ctx, t)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: data key: %w", ErrUnavailable, err)
	}
	defer sealer.Release()

	tok, rerr := s.refresh(ctx, p.Endpoint, oldRefresh)
	if rerr == nil && (tok.AccessToken.Len() > MaxTokenBytes || tok.RefreshToken.Len() > MaxTokenBytes) {
		rerr = errTokenTooLarge
	}
	// From here on the provider's answer must be recorded whatever the
	// caller does (see commitTimeout).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if rerr != nil {
		if oauth.IsInvalidGrant(rerr) {
			s.metrics.Refresh(p.Name, "invalid_grant")
			return Lease{}, s.markReauth(cctx, c, tenantID, in, p, safeReason(rerr))
		}
		s.metrics.Refresh(p.Name, "transient")
		return s.markDegraded(cctx, c, tenantID, in, p, rerr, stillValid)
	}
	s.metrics.Refresh(p.Name, "success")

	newRefresh := tok.RefreshToken
	if newRefresh.IsZero() {
		newRefresh = oldRefresh // RFC 6749 §6: the provider may keep the old one
	}
	granted := normScopes(tok.Scope)
	drift := oauth.ScopeDrift(granted, in.Scopes, p.Scopes)
	upd := in
	if len(granted) > 0 {
		upd.Scopes = granted
	}
	now = s.now().UTC()
	upd.ExpiresAt = expiry(now, tok.ExpiresIn, p.DefaultLifetime)
	upd.TokenType = tokenType(tok.TokenType)
	upd.Status = storage.StatusActive
	upd.ConsecutiveFailures = 0
	upd.LastError = ""
	upd.NextRefreshAt = time.Time{}
	upd.LastRefreshAt = now
	upd.UpdatedAt = now
	upd.RefreshCount++
	if err := sealTokensWith(&upd, tok.AccessToken, newRefresh, func(field string, pt []byte) ([]byte, error) {
		return sealer.Seal(in.ID, field, pt)
	}); err != nil {
		return Lease{}, err
	}
	detail := ""
	if len(drift) > 0 {
		detail = "scope drift"
	}
	evs := []audit.Event{{
		TenantID: tenantID, IntegrationID: in.ID, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
		Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeSuccess, RequestID: c.RequestID,
		TargetHost: hostOf(p.Endpoint.TokenURL), Detail: detail,
	}}
	if len(drift) > 0 {
		evs = append(evs, audit.Event{
			TenantID: tenantID, IntegrationID: in.ID, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
			Action: audit.ActionScopeDrift, Outcome: audit.OutcomeSuccess, RequestID: c.RequestID,
			TargetHost: hostOf(p.Endpoint.TokenURL), Detail: "unexpected scopes: " + joinScopes(drift),
		})
	}
	// The new tokens, their token.refresh event and any scope.drift event
	// commit together. On failure the record keeps the old refresh token;
	// if the provider rotated it, the next refresh tells (invalid_grant ->
	// reauthorization_required): fail closed, never a silent bypass.
	out, err := s.casAudited(cctx, tenantID, upd, evs...)
	if err != nil {
		return Lease{}, err
	}
	if len(drift) > 0 {
		s.metrics.ScopeDrift(p.Name)
		s.log.WarnContext(ctx, "scope drift on refresh", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "extra_scopes", drift)
	}
	return Lease{Token: tok.AccessToken, TokenType: out.TokenType, Provider: p, Integration: out, Revision: out.Revision}, nil
}

func (s *Service) markReauth(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, reason string) error {
	upd := in
	upd.Status = storage.StatusReauthorizationRequired
	upd.ConsecutiveFailures++
	upd.LastError = reason
	upd.UpdatedAt = s.now().UTC()
	if _, err := s.casAudited(ctx, tenantID, upd, audit.Event{
		TenantID: tenantID, IntegrationID: in.ID, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
		Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeFailure, RequestID: c.RequestID,
		TargetHost: hostOf(p.Endpoint.TokenURL), Detail: "reauthorization_required: " + reason,
	}); err != nil {
		return err
	}
	s.log.WarnContext(ctx, "integration needs reauthorization", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "reason", reason)
	return ErrReauthorizationRequired
}

// backoff after n consecutive transient failures: 2s, 4s, ... capped at 5m.
func backoff(n uint32) time.Duration {
	d := 2 * time.Second
	for i := uint32(1); i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func (s *Service) markDegraded(ctx context.Context, c Caller, tenantID string, in storage.Integration, p *Provider, cause error, stillValid bool) (Lease, error) {
	reason := safeReason(cause)
	upd := in
	upd.Status = storage.StatusDegraded
	upd.ConsecutiveFailures++
	upd.LastError = reason
	now := s.now().UTC()
	upd.UpdatedAt = now
	upd.NextRefreshAt = now.Add(backoff(upd.ConsecutiveFailures))
	out, err := s.casAudited(ctx, tenantID, upd, audit.Event{
		TenantID: tenantID, IntegrationID: in.ID, Actor: c.Principal, OnBehalfOf: c.OnBehalfOf,
		Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeFailure, RequestID: c.RequestID,
		TargetHost: hostOf(p.Endpoint.TokenURL), Detail: "degraded: " + reason,
	})
	if err != nil {
		return Lease{}, err
	}
	s.log.WarnContext(ctx, "token refresh failed", "tenant_id", tenantID, "integration_id", in.ID, "provider", p.Name, "reason", reason, "consecutive_failures", upd.ConsecutiveFailures)
	if stillValid {
		return s.lease(ctx, tenantID, out, p)
	}
	return Lease{}, fmt.Errorf("%w: refresh failed: %s", ErrUnavailable, reason)
}

func (s *Service) lease(ctx context.Context, tenantID string, in storage.Integration, p *Provider) (Lease, error) {
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		return Lease{}, err
	}
	b, err := s.keys.OpenField(ctx, t, in.ID, fieldAccess, in.AccessToken)
	if err != nil {
		return Lease{}, fmt.Errorf("%w: open access token: %w", ErrUnavailable, err)
	}
	tok := secret.NewString(string(b.Reveal()))
	b.Wipe()
	return Lease{Token: tok, TokenType: in.TokenType, Provider: p, Integration: in, Revision: in.Revision}, nil
}

// MarkUsed records a successful use for last_used_at (flushed in the
// background so the hot path does not write to the store).
func (s *Service) MarkUsed(tenantID, id string) { s.usage.mark(tenantID, id, s.now().UTC()) }

func (s *Service) sealTokens(ctx context.Context, t storage.Tenant, in *storage.Integration, access, refresh secret.String) error {
	return sealTokensWith(in, access, refresh, func(field string, pt []byte) ([]byte, error) {
		return s.keys.SealField(ctx, t, in.ID, field, pt)
	})
}

// sealTokensWith seals the access and (if any) refresh token into in.
func sealTokensWith(in *storage.Integration, access, refresh secret.String, seal func(field string, pt []byte) ([]byte, error)) error {
	ct, err := seal(fieldAccess, []byte(access.Reveal()))
	if err != nil {
		return fmt.Errorf("%w: seal: %w", ErrUnavailable, err)
	}
	in.AccessToken = ct
	in.RefreshToken = nil
	if !refresh.IsZero() {
		ct, err := seal(fieldRefresh, []byte(refresh.Reveal()))
		if err != nil {
			return fmt.Errorf("%w: seal: %w", ErrUnavailable, err)
		}
		in.RefreshToken = ct
	}
	return nil
}

// casAudited swaps upd in and commits evs with it, in one transaction: an
// integration's state never changes without its events.
func (s *Service) casAudited(ctx context.Context, tenantID string, upd storage.Integration, evs ...audit.Event) (storage.Integration, error) {
	var out storage.Integration
	_, err := s.audit.RecordAllWith(ctx, evs, func(build auditBuild) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		out, rec, err = s.store.CompareAndSwapIntegrationAudited(ctx, tenantID, upd, build)
		return rec, err
	})
	if err != nil {
		return storage.Integration{}, s.storeErr(err)
	}
	return out, nil
}

// commitTimeout bounds the work after a provider answered a refresh. It runs
// detached from the caller: a caller that hangs up once the provider has
// rotated the refresh token must not stop the new one being stored.
const commitTimeout = 30 * time.Second

func (s *Service) get(ctx context.Context, tenantID, id string) (storage.Integration, error) {
	if !storage.ValidID(id) || !storage.ValidID(tenantID) {
		return storage.Integration{}, ErrNotFound
	}
	in, err := s.store.GetIntegration(ctx, tenantID, id)
	if err != nil {
		return storage.Integration{}, s.storeErr(err)
	}
	return in, nil
}

func (s *Service) storeErr(err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrTenantNotFound):
		return ErrNotFound
	case errors.Is(err, storage.ErrConflict):
		// Under the integration lock a conflict means something outside
		// this process wrote: refuse rather than guess.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

func (s *Service) lock(ctx context.Context, tenantID, id string) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, s.lockTimeout)
	defer cancel()
	start := time.Now()
	unlock, err := s.locks.Lock(lctx, tenantID+"\x00"+id)
	s.metrics.LockWait(time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return unlock, nil
}

// ---- helpers ----

func expiry(now time.Time, expiresIn int64, def time.Duration) time.Time {
	if expiresIn > 0 {
		return now.Add(time.Duration(expiresIn) * time.Second)
	}
	if def > 0 {
		return now.Add(def)
	}
	return time.Time{}
}

func tokenType(tt string) string {
	if tt == "" {
		return "Bearer"
	}
	return tt
}

func normScopes(sc []string) []string {
	out := make([]string, 0, len(sc))
	for _, s := range sc {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func joinScopes(sc []string) string {
	out := ""
	for i, s := range sc {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// safeReason is a short, secret-free description of a provider failure for
// last_error, logs and audit: the OAuth error code or HTTP status, never the
// provider's free text (which may echo what we sent).
func safeReason(err error) string {
	var oe *oauth.Error
	switch {
	case errors.As(err, &oe) && oe.Code != "":
		return oe.Code
	case errors.As(err, &oe):
		return fmt.Sprintf("http_%d", oe.HTTPStatus)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, oauth.ErrRedirect):
		return "redirect_refused"
	case errors.Is(err, oauth.ErrResponseTooLarge):
		return "response_too_large"
	case errors.Is(err, errTokenTooLarge):
		return "token_too_large"
	case oauth.IsTransient(err):
		return "unreachable"
	default:
		return "refresh_failed"
	}
}

type nopMetrics struct{}

func (nopMetrics) Refresh(string, string) {}
func (nopMetrics) ScopeDrift(string)      {}
func (nopMetrics) LockWait(time.Duration) {}
