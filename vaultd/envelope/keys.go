package envelope

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/lockedmem"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
)

// More sentinel errors (DEK management).
var (
	// ErrNoDEK: the tenant record has no DEK of the needed version.
	ErrNoDEK = errors.New("envelope: tenant has no such DEK version")
	// ErrClosed: the Keys was closed.
	ErrClosed = errors.New("envelope: keys closed")
	// ErrMemoryLock: locked memory was required but the kernel refused
	// mlock (raise LimitMEMLOCK or grant CAP_IPC_LOCK).
	ErrMemoryLock = lockedmem.ErrLock
)

const dekAADLabel = "vaultd/dek/v1"

// Defaults for Options.
const (
	DefaultTTL        = 10 * time.Minute
	DefaultMaxEntries = 1024
)

// Options tune the DEK cache. The zero value is usable.
type Options struct {
	// TTL bounds how long a plaintext DEK stays cached after its unwrap
	// (absolute, not sliding: a hot key is re-unwrapped every TTL, so an
	// HSM-side revocation takes effect within TTL). Default 10m.
	TTL time.Duration
	// MaxEntries bounds the cache; beyond it the least recently used DEK
	// is evicted. Each entry costs one locked page. Default 1024.
	MaxEntries int
	// RequireLock makes NewKeys and every cache fill fail with
	// ErrMemoryLock when the kernel refuses mlock. When false, DEKs fall
	// back to unlocked (still guarded, undumpable, zeroed) memory and
	// Stats reports Locked=false and counts UnlockedAllocs.
	RequireLock bool
	// Logger receives cache warnings (never key material). Default: discard.
	Logger *slog.Logger
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
	// JanitorInterval is how often expired entries are swept; 0 means
	// TTL/2 clamped to [1s, 1m]; negative disables the janitor (expiry is
	// still enforced on access).
	JanitorInterval time.Duration
}

// Stats is a snapshot of cache counters (safe to export as metrics).
type Stats struct {
	Hits      uint64 // lookups served from cache
	Misses    uint64 // lookups that waited for an unwrap
	Unwraps   uint64 // Keyring.Unwrap calls
	Evictions uint64 // entries dropped (TTL, LRU, Evict, stale)
	Entries   int    // DEKs cached now
	// Locked is true while every DEK buffer allocated so far was mlocked.
	Locked bool
	// UnlockedAllocs counts DEK buffers that fell back to unlocked memory.
	UnlockedAllocs uint64
}

type cacheKey struct {
	tenant  string
	version uint32
}

// flightKey also names the exact wrapped bytes, so callers holding
// different tenant records for one (tenant, version) never share a result.
type flightKey struct {
	cacheKey
	wrapped string
}

type entry struct {
	key     cacheKey
	wrapped string // identity of the wrapped DEK this plaintext came from
	buf     *lockedmem.Buffer
	expires time.Time
	elem    *list.Element
	refs    int  // users currently reading buf
	dead    bool // out of the cache; freed when refs reaches 0
}

// flight is one Unwrap in progress; fields other than done are guarded by
// Keys.mu until done is closed.
type flight struct {
	done     chan struct{}
	waiters  int  // callers sharing this unwrap besides the leader
	finished bool // result set (under Keys.mu, before done closes)
	evicted  bool // Evict ran meanwhile: do not cache the result
	e        *entry
	err      error
}

// Keys creates tenant DEKs and seals/opens fields with them, caching
// plaintext DEKs in locked memory. Safe for concurrent use.
type Keys struct {
	kr          hsm.Keyring
	tk          hsm.TenantKeyring // kr's tenant keys, or nil (tenant.go)
	ttl         time.Duration
	max         int
	requireLock bool
	log         *slog.Logger
	now         func() time.Time

	// Test hooks: alloc replaces lockedmem.Alloc; beforeFree sees an
	// evicted buffer after zeroing, just before it is unmapped.
	alloc      func(size int, p lockedmem.Policy) (*lockedmem.Buffer, error)
	beforeFree func(data []byte)

	mu      sync.Mutex
	entries map[cacheKey]*entry
	lru     *list.List // front = most recently used
	flights map[flightKey]*flight
	closed  bool
	stats   Stats

	stop     chan struct{}
	janitor  sync.WaitGroup
	stopOnce sync.Once
}

// NewKeys returns a Keys using kr. It checks once that memory can be locked,
// so RequireLock fails at startup rather than on the first request.
func NewKeys(kr hsm.Keyring, opts Options) (*Keys, error) {
	return newKeysAlloc(kr, opts, lockedmem.Alloc)
}

func newKeysAlloc(kr hsm.Keyring, opts Options, alloc func(int, lockedmem.Policy) (*lockedmem.Buffer, error)) (*Keys, error) {
	if kr == nil {
		return nil, errors.New("envelope: nil keyring")
	}
	k := &Keys{
		kr: kr, ttl: opts.TTL, max: opts.MaxEntries, requireLock: opts.RequireLock,
		log: opts.Logger, now: opts.Now, alloc: alloc,
		entries: make(map[cacheKey]*entry),
		lru:     list.New(),
		flights: make(map[flightKey]*flight),
		stop:    make(chan struct{}),
	}
	if tk, ok := kr.(hsm.TenantKeyring); ok {
		k.tk = tk
	}
	if k.ttl <= 0 {
		k.ttl = DefaultTTL
	}
	if k.max <= 0 {
		k.max = DefaultMaxEntries
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.now == nil {
		k.now = time.Now
	}
	k.stats.Locked = true
	if err := k.probe(); err != nil {
		return nil, err
	}
	if iv := janitorInterval(opts.JanitorInterval, k.ttl); iv > 0 {
		k.janitor.Add(1)
		go k.runJanitor(iv)
	}
	return k, nil
}

func janitorInterval(iv, ttl time.Duration) time.Duration {
	if iv != 0 {
		return iv
	}
	return min(max(ttl/2, time.Second), time.Minute)
}

func (k *Keys) probe() error {
	b, err := k.allocBuf()
	if err != nil {
		return err
	}
	_ = b.Free()
	return nil
}

// allocBuf allocates a DEK buffer, recording a fallback to unlocked memory.
func (k *Keys) allocBuf() (*lockedmem.Buffer, error) {
	p := lockedmem.BestEffort
	if k.requireLock {
		p = lockedmem.Required
	}
	b, err := k.alloc(KeySize, p)
	if err != nil {
		return nil, fmt.Errorf("envelope: DEK buffer: %w", err)
	}
	if !b.Locked() {
		k.mu.Lock()
		k.stats.Locked = false
		k.stats.UnlockedAllocs++
		n := k.stats.UnlockedAllocs
		k.mu.Unlock()
		lvl := slog.LevelDebug
		if n == 1 {
			lvl = slog.LevelWarn
		}
		k.log.Log(context.Background(), lvl, "envelope: mlock failed, DEKs held in unlocked memory (raise LimitMEMLOCK or set harden.mlock=required to refuse)", "unlocked_allocs", n)
	}
	return b, nil
}

// dekAAD binds a wrapped DEK to its tenant and version, so the wrapped
// bytes copied into another tenant's record (or relabelled) fail to unwrap.
func dekAAD(tenantID string, version uint32) []byte {
	b := make([]byte, 0, len(dekAADLabel)+1+4+len(tenantID)+4)
	b = append(b, dekAADLabel...)
	b = append(b, 0)
	b = appendString(b, tenantID)
	return binary.BigEndian.AppendUint32(b, version)
}

// NewDEK generates a fresh 256-bit DEK for tenantID and returns it wrapped by
// the keyring's current KEK; when the keyring has tenant keys
// (hsm.TenantKeyring) it first creates the tenant's key if needed and wraps
// the DEK under it, and the KEK wraps that (TenantWrapped, tenant.go). The
// plaintext is generated in locked memory and wiped before returning; it
// is not cached (the tenant record is not stored yet).
func (k *Keys) NewDEK(ctx context.Context, tenantID string, version uint32) (storage.WrappedDEK, error) {
	if !storage.ValidID(tenantID) {
		return storage.WrappedDEK{}, fmt.Errorf("%w: tenant id", ErrAAD)
	}
	if version == 0 {
		return storage.WrappedDEK{}, fmt.Errorf("envelope: DEK version must be > 0")
	}
	if err := k.checkOpen(); err != nil {
		return storage.WrappedDEK{}, err
	}
	buf, err := k.allocBuf()
	if err != nil {
		return storage.WrappedDEK{}, err
	}
	defer func() { _ = buf.Free() }()
	if _, err := rand.Read(buf.Bytes()); err != nil {
		return storage.WrappedDEK{}, fmt.Errorf("envelope: random DEK: %w", err)
	}
	w, err := k.wrapDEK(ctx, tenantID, version, buf.Bytes())
	if err != nil {
		return storage.WrappedDEK{}, err
	}
	w.CreatedAt = k.now().UTC()
	return w, nil
}

// RewrapDEK re-wraps one of tenantID's DEKs under the keyring's current
// KEK (after a KEK rotation, so that the old KEK can be retired): the same
// key, the same version and AAD binding, a new wrapping. Only the KEK
// layer changes: a tenant-wrapped DEK's inner blob (ciphertext under the
// tenant key) is re-wrapped as it is, without the tenant key. A plaintext
// DEK passes through locked memory only and is wiped before returning. A
// DEK already under the current KEK is returned unchanged, with changed
// false.
func (k *Keys) RewrapDEK(ctx context.Context, tenantID string, w storage.WrappedDEK, current uint32) (out storage.WrappedDEK, changed bool, err error) {
	if w.KEKVersion == current {
		return w, false, nil
	}
	if err := k.checkOpen(); err != nil {
		return w, false, err
	}
	pt, err := k.unwrapOuter(ctx, tenantID, w)
	if err != nil {
		return w, false, err
	}
	defer pt.Wipe()
	inner := pt.Reveal() // the tenant-wrapped blob: ciphertext, not a key
	if !w.TenantWrapped {
		buf, err := k.allocBuf()
		if err != nil {
			return w, false, err
		}
		defer func() { _ = buf.Free() }()
		copy(buf.Bytes(), pt.Reveal())
		pt.Wipe()
		inner = buf.Bytes()
	}
	nw, err := k.kr.Wrap(ctx, inner, outerAAD(tenantID, w))
	if err != nil {
		return w, false, fmt.Errorf("envelope: rewrap DEK for tenant %q version %d: %w", tenantID, w.Version, err)
	}
	out = w
	out.KEKVersion, out.Nonce, out.Ciphertext = nw.KEKVersion, nw.Nonce, nw.Ciphertext
	return out, true, nil
}

// SealField seals plaintext for (tenant, integration, field) under the
// tenant's current DEK.
func (k *Keys) SealField(ctx context.Context, t storage.Tenant, integrationID, field string, plaintext []byte) ([]byte, error) {
	w, ok := t.CurrentDEK()
	if !ok {
		return nil, fmt.Errorf("%w: tenant %q current version %d", ErrNoDEK, t.ID, t.DEKVersion)
	}
	e, err := k.acquire(ctx, t.ID, w)
	if err != nil {
		return nil, err
	}
	defer k.release(e)
	return Seal(e.buf.Bytes(), w.Version, AAD{Tenant: t.ID, Integration: integrationID, Field: field}, plaintext)
}

// Sealer holds a tenant's current DEK (one cache reference) so that values
// can be sealed later without the HSM. The refresh path takes one before it
// asks the provider for new tokens: once the provider has rotated them,
// sealing must not depend on an unwrap that could fail. Release it once.
type Sealer struct {
	k       *Keys
	e       *entry
	tenant  string
	version uint32
}

// HoldCurrentDEK returns a Sealer for t's current DEK.
func (k *Keys) HoldCurrentDEK(ctx context.Context, t storage.Tenant) (*Sealer, error) {
	w, ok := t.CurrentDEK()
	if !ok {
		return nil, fmt.Errorf("%w: tenant %q current version %d", ErrNoDEK, t.ID, t.DEKVersion)
	}
	e, err := k.acquire(ctx, t.ID, w)
	if err != nil {
		return nil, err
	}
	return &Sealer{k: k, e: e, tenant: t.ID, version: w.Version}, nil
}

// Seal is SealField with the held DEK.
func (s *Sealer) Seal(integrationID, field string, plaintext []byte) ([]byte, error) {
	if s.e == nil {
		return nil, ErrClosed
	}
	return Seal(s.e.buf.Bytes(), s.version, AAD{Tenant: s.tenant, Integration: integrationID, Field: field}, plaintext)
}

// Release drops the reference; later Seals fail.
func (s *Sealer) Release() {
	if s.e != nil {
		s.k.release(s.e)
		s.e = nil
	}
}

// OpenField opens a value sealed by SealField, with the DEK version named
// in its header. The caller wipes the result.
func (k *Keys) OpenField(ctx context.Context, t storage.Tenant, integrationID, field string, sealed []byte) (secret.Bytes, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return secret.Bytes{}, err
	}
	w, ok := t.DEK(h.DEKVersion)
	if !ok {
		return secret.Bytes{}, fmt.Errorf("%w: tenant %q version %d", ErrNoDEK, t.ID, h.DEKVersion)
	}
	e, err := k.acquire(ctx, t.ID, w)
	if err != nil {
		return secret.Bytes{}, err
	}
	defer k.release(e)
	pt, err := Open(e.buf.Bytes(), AAD{Tenant: t.ID, Integration: integrationID, Field: field}, sealed)
	if err != nil {
		return secret.Bytes{}, err
	}
	return secret.NewBytes(pt), nil
}

func (k *Keys) checkOpen() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	return nil
}

// Close stops the janitor and zeroes every cached DEK; later calls fail with
// ErrClosed. It does not close the Keyring (the caller owns it).
func (k *Keys) Close() error {
	k.mu.Lock()
	k.closed = true
	toFree := k.evictAllLocked()
	k.mu.Unlock()
	k.free(toFree)
	k.stopOnce.Do(func() { close(k.stop) })
	k.janitor.Wait()
	return nil
}
