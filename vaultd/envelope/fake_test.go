package envelope

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
)

// fakeKeyring is a software hsm.Keyring: AES-256-GCM under a random KEK,
// with call counters, error injection and an optional gate that holds
// Unwrap until released.
type fakeKeyring struct {
	aead cipher.AEAD

	wraps, unwraps atomic.Int64

	mu        sync.Mutex
	fail      error         // returned by Wrap and Unwrap when set
	gate      chan struct{} // Unwrap blocks until closed, when set
	started   chan struct{} // receives once per Unwrap that reached the gate
	badLength bool          // Unwrap returns a 16-byte key
}

func newFakeKeyring(t testing.TB) *fakeKeyring {
	t.Helper()
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeKeyring{aead: aead}
}

// hold makes every later Unwrap block until gate is closed; started
// receives once per Unwrap that reached the gate (room for n).
func (f *fakeKeyring) hold(n int) (gate chan struct{}, started chan struct{}) {
	gate, started = make(chan struct{}), make(chan struct{}, n)
	f.mu.Lock()
	f.gate, f.started = gate, started
	f.mu.Unlock()
	return gate, started
}

func (f *fakeKeyring) setFail(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

func (f *fakeKeyring) Wrap(ctx context.Context, plaintext, aad []byte) (hsm.WrappedKey, error) {
	f.wraps.Add(1)
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return hsm.WrappedKey{}, fail
	}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return hsm.WrappedKey{}, err
	}
	return hsm.WrappedKey{KEKVersion: 1, Nonce: nonce, Ciphertext: f.aead.Seal(nil, nonce, plaintext, aad)}, nil
}

func (f *fakeKeyring) Unwrap(ctx context.Context, w hsm.WrappedKey, aad []byte) (secret.Bytes, error) {
	f.unwraps.Add(1)
	f.mu.Lock()
	fail, gate, started, bad := f.fail, f.gate, f.started, f.badLength
	f.mu.Unlock()
	if gate != nil {
		if started != nil {
			started <- struct{}{}
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return secret.Bytes{}, fmt.Errorf("%w: %w", hsm.ErrUnavailable, ctx.Err())
		}
	}
	if fail != nil {
		return secret.Bytes{}, fail
	}
	if w.KEKVersion != 1 || len(w.Nonce) != 12 {
		return secret.Bytes{}, hsm.ErrUnwrap
	}
	pt, err := f.aead.Open(nil, w.Nonce, w.Ciphertext, aad)
	if err != nil {
		return secret.Bytes{}, hsm.ErrUnwrap
	}
	if bad {
		pt = pt[:16]
	}
	return secret.NewBytes(pt), nil
}

func (f *fakeKeyring) CurrentVersion() uint32         { return 1 }
func (f *fakeKeyring) Ping(ctx context.Context) error { return nil }
func (f *fakeKeyring) Close() error                   { return nil }

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// newKeys builds a Keys on a fake keyring with a fake clock and no janitor.
func newKeys(t testing.TB, opts Options) (*Keys, *fakeKeyring, *clock) {
	t.Helper()
	kr := newFakeKeyring(t)
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.JanitorInterval == 0 {
		opts.JanitorInterval = -1
	}
	opts.RequireLock = true
	k, err := NewKeys(kr, opts)
	if err != nil {
		t.Fatalf("NewKeys: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k, kr, clk
}

// newTenant provisions a tenant record with DEK version 1.
func newTenant(t testing.TB, k *Keys, id string) storage.Tenant {
	t.Helper()
	w, err := k.NewDEK(t.Context(), id, 1)
	if err != nil {
		t.Fatalf("NewDEK(%s): %v", id, err)
	}
	return storage.Tenant{ID: id, Status: storage.TenantActive, KEKVersion: w.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{w}}
}
