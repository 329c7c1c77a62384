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
	"context"
	"errors"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Sentinel errors; the server maps them to the API's error codes
// (docs/api.md).
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

// BadRequestError is a refused request with a reason written for the
// caller ("invalid integration id"): it names what is wrong, never a value
// the caller sent, so the server may answer it as is. It matches
// ErrBadRequest.
type BadRequestError struct {
	Reason string
}

func (e *BadRequestError) Error() string { return ErrBadRequest.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrBadRequest) hold.
func (e *BadRequestError) Is(target error) bool { return target == ErrBadRequest }

func badRequest(reason string) error { return &BadRequestError{Reason: reason} }

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

	// The connect flow and catalog facts. Endpoint's URLs, AuthorizationURL
	// and APIBaseURL may hold a template's {param} placeholders, filled per
	// integration from its validated Params (APIBase is nil then).
	AuthorizationURL string // "" = no authorization-code connect flow
	Grant            string // GrantAuthorizationCode ("" too) or GrantClientCredentials
	PKCE             bool
	AuthorizeParams  map[string]string
	APIBaseURL       string
	Params           []catalog.Param
	APIHostFromToken *catalog.HostRule
	// Issuer is the expected RFC 9207 "iss" of authorization responses; ""
	// = the authorization endpoint's origin.
	Issuer string
	// RefreshAhead and RefreshTokenMaxIdle drive background refreshes
	// (refreshahead.go).
	RefreshAhead        bool
	RefreshTokenMaxIdle time.Duration
}

// grant is p's grant, GrantAuthorizationCode by default.
func (p *Provider) grant() string {
	if p.Grant == "" {
		return GrantAuthorizationCode
	}
	return p.Grant
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

// Auditor records audit events synchronously.
type Auditor interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
	// RecordWith commits the event inside the caller's transaction.
	RecordWith(ctx context.Context, ev audit.Event, commit func(build storage.AuditFunc) (storage.AuditRecord, error)) (audit.Event, error)
	// RecordAllWith commits several events, in order, inside the caller's
	// transaction.
	RecordAllWith(ctx context.Context, evs []audit.Event, commit func(build storage.AuditFunc) (storage.AuditRecord, error)) ([]audit.Event, error)
}

// Revoker revokes a token at a provider (RFC 7009); oauth.Revoke in
// production.
type Revoker func(ctx context.Context, ep oauth.Endpoint, token secret.String, hint string) error

// Refresher runs the refresh grant; oauth.Refresh in production.
type Refresher func(ctx context.Context, ep oauth.Endpoint, refreshToken secret.String) (oauth.Token, error)

// Granter runs the client-credentials grant; oauth.ClientCredentials in
// production.
type Granter func(ctx context.Context, ep oauth.Endpoint, scopes []string) (oauth.Token, error)

// Exchanger runs the authorization-code grant; oauth.Exchange in
// production.
type Exchanger func(ctx context.Context, ep oauth.Endpoint, code secret.String, redirectURI string, verifier secret.String) (oauth.Token, error)

// Metrics receives counters; all methods must be cheap and safe for
// concurrent use. A nil Metrics is allowed.
type Metrics interface {
	Refresh(provider, outcome string)
	ScopeDrift(provider string)
	LockWait(d time.Duration)
}

// Store is what the vault needs of a storage.Store: tenants and
// integrations, each write with its audit event (the chain itself is the
// audit package's, through Auditor).
type Store interface {
	CreateTenant(ctx context.Context, t storage.Tenant, audit storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error)
	GetTenant(ctx context.Context, id string) (storage.Tenant, error)
	ListTenants(ctx context.Context) ([]storage.Tenant, error)
	UpdateTenant(ctx context.Context, t storage.Tenant, audit storage.AuditFunc) (storage.Tenant, storage.AuditRecord, error)
	PutIntegration(ctx context.Context, tenantID string, in storage.Integration, audit storage.AuditFunc) (storage.Integration, storage.AuditRecord, error)
	GetIntegration(ctx context.Context, tenantID, id string) (storage.Integration, error)
	ListIntegrations(ctx context.Context, tenantID string) ([]storage.Integration, error)
	CompareAndSwapIntegration(ctx context.Context, tenantID string, in storage.Integration, audit storage.AuditFunc) (storage.Integration, storage.AuditRecord, error)
	DeleteIntegration(ctx context.Context, tenantID, id string, audit storage.AuditFunc) (storage.AuditRecord, error)

	// Connect sessions (connect.go).
	CreateConnectSession(ctx context.Context, cs storage.ConnectSession, audit storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error)
	GetConnectSession(ctx context.Context, tenantID, id string) (storage.ConnectSession, error)
	FindConnectSession(ctx context.Context, digest []byte) (storage.ConnectSession, error)
	UpdateConnectSession(ctx context.Context, cs storage.ConnectSession, audit storage.AuditFunc) (storage.ConnectSession, storage.AuditRecord, error)
	CompleteConnectSession(ctx context.Context, cs storage.ConnectSession, in storage.Integration, audit storage.AuditFunc) (storage.ConnectSession, storage.Integration, storage.AuditRecord, error)
	DeleteConnectSession(ctx context.Context, tenantID, id string, audit storage.AuditFunc) (storage.AuditRecord, error)
	ListConnectSessions(ctx context.Context, tenantID string) ([]storage.ConnectSession, error)

	// Offboarding (tenantlife.go).
	OffboardTenant(ctx context.Context, id string, audit storage.AuditFunc) (storage.AuditRecord, error)
	ListOffboarded(ctx context.Context) ([]string, error)
}

// Options configures a Service.
type Options struct {
	Store      Store
	Keys       *envelope.Keys
	KEKVersion func() uint32
	Audit      Auditor
	Locker     Locker
	Providers  Providers
	Logger     *slog.Logger
	Metrics    Metrics
	Refresh    Refresher // default oauth.Refresh
	Revoke     Revoker   // default oauth.Revoke
	// ClientCredentials and Exchange default to oauth's grants.
	ClientCredentials Granter
	Exchange          Exchanger
	// Connect enables the connect flow (nil = off); SetConnect swaps it.
	Connect *ConnectSettings
	Now     func() time.Time
	// LockTimeout bounds the wait for an integration's lock (default 30s).
	LockTimeout time.Duration
	// UsageFlushInterval is how often last_used_at is written (default 5s).
	UsageFlushInterval time.Duration

	// Keyring seals queued revocations under the KEK and holds the tenant
	// keys offboarding destroys (tenantlife.go, revocations.go).
	Keyring   hsm.Keyring
	Lifecycle Lifecycle
	// Sweeps reads [lifecycle]'s live sweep and score values (health.go; nil = defaults).
	Sweeps func() SweepSettings
}

// Service is safe for concurrent use.
type Service struct {
	store      Store
	keys       *envelope.Keys
	kekVersion func() uint32
	audit      Auditor
	locks      Locker
	providers  atomic.Pointer[Providers]
	log        *slog.Logger
	metrics    Metrics
	refresh    Refresher
	revoke     Revoker
	ccGrant    Granter
	exchange   Exchanger
	connect    atomic.Pointer[ConnectSettings]
	denials    denialLimiter
	tenants    tenantCache
	// flights are the refreshes in progress that callers share
	// (sharedRefresh).
	flightMu sync.Mutex
	flights  map[string]*refreshFlight
	// onFlightJoin, when set (tests), runs as a caller joins a flight.
	onFlightJoin func()
	now          func() time.Time
	lockTimeout  time.Duration

	usage *usageTracker
	done  chan struct{}
	wg    sync.WaitGroup
	// bg counts refreshes running detached from their callers; bgMu
	// orders starting one (bg.Add) against Close (bg.Wait): nothing starts
	// once closed is set.
	bg     sync.WaitGroup
	bgMu   sync.Mutex
	closed bool

	// life: tenant disable and offboarding, the revocation queue.
	life lifeState

	// sweeps: the lifecycle sweep's flags and refresh-ahead's buckets.
	sweeps sweepState
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
		revoke: o.Revoke, ccGrant: o.ClientCredentials, exchange: o.Exchange,
		now: o.Now, lockTimeout: o.LockTimeout,
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
	if s.ccGrant == nil {
		s.ccGrant = oauth.ClientCredentials
	}
	if s.exchange == nil {
		s.exchange = oauth.Exchange
	}
	s.connect.Store(o.Connect)
	s.initLife(o)
	s.sweeps.settings = o.Sweeps
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

type nopMetrics struct{}

func (nopMetrics) Refresh(string, string) {}
func (nopMetrics) ScopeDrift(string)      {}
func (nopMetrics) LockWait(time.Duration) {}
