package envelope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/lockedmem"
	"github.com/vaultd/vaultd/storage"
)

func sealOpen(t *testing.T, k *Keys, tn storage.Tenant, integ, field, value string) []byte {
	t.Helper()
	ctx := t.Context()
	ct, err := k.SealField(ctx, tn, integ, field, []byte(value))
	if err != nil {
		t.Fatalf("SealField: %v", err)
	}
	pt, err := k.OpenField(ctx, tn, integ, field, ct)
	if err != nil {
		t.Fatalf("OpenField: %v", err)
	}
	defer pt.Wipe()
	if string(pt.Reveal()) != value {
		t.Fatal("OpenField returned other plaintext")
	}
	return ct
}

func TestNewDEK(t *testing.T) {
	k, kr, clk := newKeys(t, Options{})
	w, err := k.NewDEK(t.Context(), "acme", 3)
	if err != nil {
		t.Fatal(err)
	}
	if w.Version != 3 || w.KEKVersion != 1 || len(w.Nonce) != 12 || len(w.Ciphertext) != KeySize+16 || !w.CreatedAt.Equal(clk.Now()) {
		t.Fatalf("wrapped DEK %+v", w)
	}
	if kr.wraps.Load() != 1 {
		t.Fatalf("wraps = %d", kr.wraps.Load())
	}
	w2, _ := k.NewDEK(t.Context(), "acme", 3)
	if bytes.Equal(w.Ciphertext, w2.Ciphertext) {
		t.Fatal("two DEKs wrapped to the same bytes")
	}
	for _, bad := range []struct {
		id string
		v  uint32
	}{{"", 1}, {"../x", 1}, {"acme", 0}} {
		if _, err := k.NewDEK(t.Context(), bad.id, bad.v); err == nil {
			t.Errorf("NewDEK(%q, %d) succeeded", bad.id, bad.v)
		}
	}
}

func TestSealFieldBindings(t *testing.T) {
	k, _, _ := newKeys(t, Options{})
	a, b := newTenant(t, k, "tenant-a"), newTenant(t, k, "tenant-b")
	ctx := t.Context()
	ct := sealOpen(t, k, a, "crm", "refresh_token", "rt-secret")

	// Tenant B's record, same integration and field names, DEK version 1 too.
	if _, err := k.OpenField(ctx, b, "crm", "refresh_token", ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("A's record opened as B: err = %v, want ErrDecrypt", err)
	}
	// B's DEK with A's name: still fails (wrong key).
	forged := b
	forged.ID = "tenant-a"
	if _, err := k.OpenField(ctx, forged, "crm", "refresh_token", ct); err == nil {
		t.Error("A's record opened with B's DEK")
	}
	if _, err := k.OpenField(ctx, a, "crm-2", "refresh_token", ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("moved integration: err = %v", err)
	}
	if _, err := k.OpenField(ctx, a, "crm", "access_token", ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("moved field: err = %v", err)
	}
	for i := range ct {
		c := bytes.Clone(ct)
		c[i] ^= 0x80
		if _, err := k.OpenField(ctx, a, "crm", "refresh_token", c); err == nil {
			t.Fatalf("flipped byte %d opened", i)
		}
	}
	unknown := bytes.Clone(ct)
	unknown[3] = 2
	if _, err := k.OpenField(ctx, a, "crm", "refresh_token", unknown); !errors.Is(err, ErrFormat) {
		t.Errorf("format 2: err = %v", err)
	}
	if _, err := k.OpenField(ctx, a, "crm", "refresh_token", []byte("plaintext?")); !errors.Is(err, ErrFormat) {
		t.Errorf("garbage: err = %v", err)
	}
}

func TestDEKRotation(t *testing.T) {
	k, _, _ := newKeys(t, Options{})
	ctx := t.Context()
	tn := newTenant(t, k, "acme")
	old := sealOpen(t, k, tn, "crm", "access_token", "v1-token")
	w2, err := k.NewDEK(ctx, "acme", 2)
	if err != nil {
		t.Fatal(err)
	}
	tn.DEKs = append(tn.DEKs, w2)
	tn.DEKVersion = 2
	ct := sealOpen(t, k, tn, "crm", "access_token", "v2-token")
	if h, _ := ParseHeader(ct); h.DEKVersion != 2 {
		t.Fatalf("new seal uses DEK version %d", h.DEKVersion)
	}
	pt, err := k.OpenField(ctx, tn, "crm", "access_token", old)
	if err != nil || string(pt.Reveal()) != "v1-token" {
		t.Fatalf("old record after rotation: %v", err)
	}
	// Version 1 dropped from the record: old ciphertext can no longer be opened.
	tn.DEKs = tn.DEKs[1:]
	if _, err := k.OpenField(ctx, tn, "crm", "access_token", old); !errors.Is(err, ErrNoDEK) {
		t.Fatalf("dropped version: err = %v, want ErrNoDEK", err)
	}
	if _, err := k.SealField(ctx, storage.Tenant{ID: "x", DEKVersion: 1}, "crm", "access_token", []byte("v")); !errors.Is(err, ErrNoDEK) {
		t.Fatalf("tenant without DEK: err = %v", err)
	}
}

func TestWrappedDEKBoundToTenantAndVersion(t *testing.T) {
	k, _, _ := newKeys(t, Options{})
	ctx := t.Context()
	a := newTenant(t, k, "tenant-a")
	moved := storage.Tenant{ID: "tenant-b", DEKVersion: 1, DEKs: a.DEKs}
	if _, err := k.SealField(ctx, moved, "crm", "access_token", []byte("v")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("A's wrapped DEK used for B: err = %v, want hsm.ErrUnwrap", err)
	}
	relabelled := a
	relabelled.DEKs = []storage.WrappedDEK{a.DEKs[0]}
	relabelled.DEKs[0].Version = 2
	relabelled.DEKVersion = 2
	if _, err := k.SealField(ctx, relabelled, "crm", "access_token", []byte("v")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("relabelled DEK version: err = %v, want hsm.ErrUnwrap", err)
	}
	if n := k.Stats().Entries; n != 0 {
		t.Fatalf("failed unwraps cached %d entries", n)
	}
}

func TestKeyringFailureFailsClosed(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	ctx := t.Context()
	tn := newTenant(t, k, "acme")
	kr.setFail(fmt.Errorf("%w: session lost", hsm.ErrUnavailable))
	if _, err := k.SealField(ctx, tn, "crm", "access_token", []byte("v")); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("SealField: err = %v, want hsm.ErrUnavailable", err)
	}
	if _, err := k.NewDEK(ctx, "acme", 2); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("NewDEK: err = %v, want hsm.ErrUnavailable", err)
	}
	if s := k.Stats(); s.Entries != 0 {
		t.Fatalf("entries after failure: %d", s.Entries)
	}
	kr.setFail(nil)
	sealOpen(t, k, tn, "crm", "access_token", "after-recovery")

	kr.mu.Lock()
	kr.badLength = true
	kr.mu.Unlock()
	other := newTenant(t, k, "other")
	if _, err := k.SealField(ctx, other, "crm", "access_token", []byte("v")); !errors.Is(err, ErrKeySize) {
		t.Fatalf("short unwrapped DEK: err = %v, want ErrKeySize", err)
	}
}

func TestCacheHitMakesNoKeyringCall(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	ctx := t.Context()
	tn := newTenant(t, k, "acme")
	ct := sealOpen(t, k, tn, "crm", "access_token", "tok") // warms the cache
	if n := kr.unwraps.Load(); n != 1 {
		t.Fatalf("unwraps after warm-up = %d", n)
	}
	for range 10 {
		if _, err := k.OpenField(ctx, tn, "crm", "access_token", ct); err != nil {
			t.Fatal(err)
		}
		if _, err := k.SealField(ctx, tn, "crm", "access_token", []byte("tok")); err != nil {
			t.Fatal(err)
		}
	}
	if n := kr.unwraps.Load(); n != 1 {
		t.Fatalf("warm operations called Unwrap: total %d", n)
	}
	s := k.Stats()
	if s.Hits != 21 || s.Misses != 1 || s.Unwraps != 1 || s.Entries != 1 || !s.Locked || s.UnlockedAllocs != 0 {
		t.Fatalf("stats %+v", s)
	}

	k.Evict("acme")
	if k.Stats().Entries != 0 {
		t.Fatal("Evict left entries")
	}
	if _, err := k.OpenField(ctx, tn, "crm", "access_token", ct); err != nil {
		t.Fatal(err)
	}
	if n := kr.unwraps.Load(); n != 2 {
		t.Fatalf("after Evict unwraps = %d, want 2", n)
	}
	k.EvictAll()
	if _, err := k.OpenField(ctx, tn, "crm", "access_token", ct); err != nil {
		t.Fatal(err)
	}
	if n := kr.unwraps.Load(); n != 3 {
		t.Fatalf("after EvictAll unwraps = %d, want 3", n)
	}
}

func TestEvictOnlyThatTenant(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	a, b := newTenant(t, k, "a"), newTenant(t, k, "b")
	sealOpen(t, k, a, "i", "f", "x")
	sealOpen(t, k, b, "i", "f", "x")
	k.Evict("a")
	before := kr.unwraps.Load()
	sealOpen(t, k, b, "i", "f", "x")
	if kr.unwraps.Load() != before {
		t.Fatal("Evict(a) dropped b")
	}
	sealOpen(t, k, a, "i", "f", "x")
	if kr.unwraps.Load() != before+1 {
		t.Fatal("Evict(a) kept a")
	}
}

func TestTTLExpiry(t *testing.T) {
	k, kr, clk := newKeys(t, Options{TTL: time.Minute})
	tn := newTenant(t, k, "acme")
	sealOpen(t, k, tn, "i", "f", "x")
	clk.Add(59 * time.Second)
	sealOpen(t, k, tn, "i", "f", "x")
	if n := kr.unwraps.Load(); n != 1 {
		t.Fatalf("before TTL: unwraps = %d", n)
	}
	clk.Add(time.Second) // exactly TTL after the unwrap: expired
	sealOpen(t, k, tn, "i", "f", "x")
	if n := kr.unwraps.Load(); n != 2 {
		t.Fatalf("after TTL: unwraps = %d, want 2", n)
	}
	// TTL is absolute from the unwrap, not extended by use.
	for range 3 {
		clk.Add(30 * time.Second)
		sealOpen(t, k, tn, "i", "f", "x")
	}
	if n := kr.unwraps.Load(); n != 3 {
		t.Fatalf("hot key: unwraps = %d, want 3", n)
	}
}

func TestJanitorSweep(t *testing.T) {
	k, _, clk := newKeys(t, Options{TTL: time.Minute})
	var freed int
	k.beforeFree = func([]byte) { freed++ }
	a, b := newTenant(t, k, "a"), newTenant(t, k, "b")
	sealOpen(t, k, a, "i", "f", "x")
	clk.Add(40 * time.Second)
	sealOpen(t, k, b, "i", "f", "x")
	clk.Add(30 * time.Second) // a expired, b not
	k.sweep()
	if s := k.Stats(); s.Entries != 1 || freed != 1 {
		t.Fatalf("after sweep: entries %d freed %d", s.Entries, freed)
	}
	clk.Add(time.Minute)
	k.sweep()
	if s := k.Stats(); s.Entries != 0 || freed != 2 {
		t.Fatalf("after second sweep: entries %d freed %d", s.Entries, freed)
	}
}

// TestJanitorRuns lets the real janitor goroutine sweep, in a synctest
// bubble: its ticker and the TTL run on the bubble's fake clock.
func TestJanitorRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, err := NewKeys(newFakeKeyring(t), Options{TTL: time.Minute, JanitorInterval: time.Second, RequireLock: true})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		sealOpen(t, k, newTenant(t, k, "acme"), "i", "f", "x")
		time.Sleep(time.Minute - time.Second) // fake time: not yet expired
		synctest.Wait()
		if k.Stats().Entries != 1 {
			t.Fatal("the janitor swept an entry before its TTL")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if k.Stats().Entries != 0 {
			t.Fatal("janitor did not sweep the expired entry")
		}
	})
}

func TestLRU(t *testing.T) {
	k, kr, _ := newKeys(t, Options{MaxEntries: 2})
	a, b, c := newTenant(t, k, "a"), newTenant(t, k, "b"), newTenant(t, k, "c")
	sealOpen(t, k, a, "i", "f", "x")
	sealOpen(t, k, b, "i", "f", "x")
	sealOpen(t, k, a, "i", "f", "x") // a most recent
	sealOpen(t, k, c, "i", "f", "x") // evicts b
	if s := k.Stats(); s.Entries != 2 || s.Evictions != 1 {
		t.Fatalf("stats %+v", s)
	}
	n := kr.unwraps.Load()
	sealOpen(t, k, a, "i", "f", "x")
	sealOpen(t, k, c, "i", "f", "x")
	if kr.unwraps.Load() != n {
		t.Fatal("a or c was evicted instead of b")
	}
	sealOpen(t, k, b, "i", "f", "x")
	if kr.unwraps.Load() != n+1 {
		t.Fatal("b was not evicted")
	}
}

// TestStaleWrappedDEK: a tenant deleted and re-created under the same id
// gets a new DEK version 1; the cache must not serve the old one.
func TestStaleWrappedDEK(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	first := newTenant(t, k, "acme")
	sealOpen(t, k, first, "i", "f", "x")
	second := newTenant(t, k, "acme")
	ct := sealOpen(t, k, second, "i", "f", "y")
	if n := kr.unwraps.Load(); n != 2 {
		t.Fatalf("unwraps = %d, want 2 (new wrapped bytes must miss)", n)
	}
	if _, err := k.OpenField(t.Context(), first, "i", "f", ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("value sealed under the new DEK opened with the old: %v", err)
	}
	if k.Stats().Entries != 1 {
		t.Fatalf("entries = %d, want 1", k.Stats().Entries)
	}
}

func TestEvictedBufferZeroed(t *testing.T) {
	k, _, _ := newKeys(t, Options{})
	var mu sync.Mutex
	var seen [][]byte
	k.beforeFree = func(b []byte) {
		mu.Lock()
		seen = append(seen, bytes.Clone(b))
		mu.Unlock()
	}
	tn := newTenant(t, k, "acme")
	sealOpen(t, k, tn, "i", "f", "x")
	// Peek at the cached key to be sure it was non-zero before eviction.
	k.mu.Lock()
	var live []byte
	for _, e := range k.entries {
		live = bytes.Clone(e.buf.Bytes())
	}
	k.mu.Unlock()
	if len(live) != KeySize || bytes.Equal(live, make([]byte, KeySize)) {
		t.Fatal("cached DEK missing or zero")
	}
	k.Evict("acme")
	if len(seen) != 1 || !bytes.Equal(seen[0], make([]byte, KeySize)) {
		t.Fatalf("evicted buffer not zeroed before free (%d frees)", len(seen))
	}

	// In use during eviction: zeroed when the user releases it.
	ctx := t.Context()
	w, _ := tn.CurrentDEK()
	e, err := k.acquire(ctx, tn.ID, w)
	if err != nil {
		t.Fatal(err)
	}
	k.Evict("acme")
	if len(seen) != 1 {
		t.Fatal("buffer in use was freed")
	}
	if bytes.Equal(e.buf.Bytes(), make([]byte, KeySize)) {
		t.Fatal("buffer in use was zeroed under its user")
	}
	k.release(e)
	if len(seen) != 2 || !bytes.Equal(seen[1], make([]byte, KeySize)) {
		t.Fatal("released buffer not zeroed")
	}

	// Close zeroes everything and refuses further use.
	sealOpen(t, k, tn, "i", "f", "x")
	sealOpen(t, k, newTenant(t, k, "other"), "i", "f", "x")
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 4 {
		t.Fatalf("Close freed %d buffers, want 2", len(seen)-2)
	}
	for _, b := range seen {
		if !bytes.Equal(b, make([]byte, KeySize)) {
			t.Fatal("buffer not zeroed")
		}
	}
	if _, err := k.SealField(ctx, tn, "i", "f", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := k.NewDEK(ctx, "acme", 2); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewDEK after Close: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSingleflight(t *testing.T) { synctest.Test(t, testSingleflight) }

func testSingleflight(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	tn := newTenant(t, k, "acme")
	ct := sealOpen(t, k, tn, "i", "f", "secret")
	k.EvictAll()
	base := kr.unwraps.Load()

	gate, started := kr.hold(64)
	m0 := k.Stats().Misses

	const n = 32
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			pt, err := k.OpenField(t.Context(), tn, "i", "f", ct)
			if err == nil && string(pt.Reveal()) != "secret" {
				err = errors.New("wrong plaintext")
			}
			errs <- err
		})
	}
	<-started       // the leader is inside Unwrap
	synctest.Wait() // every other goroutine is queued behind it
	if m := k.Stats().Misses - m0; m != n {
		t.Errorf("%d misses queued, want %d", m, n)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := kr.unwraps.Load() - base; got != 1 {
		t.Fatalf("%d concurrent misses made %d Unwrap calls, want 1", n, got)
	}
}

func TestWaiterContextCancelled(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	tn := newTenant(t, k, "acme")
	gate, started := kr.hold(4)
	leader := make(chan error, 1)
	go func() {
		_, err := k.SealField(t.Context(), tn, "i", "f", []byte("x"))
		leader <- err
	}()
	<-started
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := k.SealField(ctx, tn, "i", "f", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: err = %v", err)
	}
	close(gate)
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
}

// TestLeaderCancelledWaiterRetries: the unwrapping caller's context ends;
// a waiter whose context is alive retries rather than inheriting the error.
func TestLeaderCancelledWaiterRetries(t *testing.T) {
	synctest.Test(t, testLeaderCancelledWaiterRetries)
}

func testLeaderCancelledWaiterRetries(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	tn := newTenant(t, k, "acme")
	gate, started := kr.hold(4)
	lctx, lcancel := context.WithCancel(t.Context())
	leader := make(chan error, 1)
	go func() {
		_, err := k.SealField(lctx, tn, "i", "f", []byte("x"))
		leader <- err
	}()
	<-started
	waiter := make(chan error, 1)
	go func() {
		_, err := k.SealField(t.Context(), tn, "i", "f", []byte("x"))
		waiter <- err
	}()
	synctest.Wait() // the waiter is queued behind the leader
	lcancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	<-started // the waiter's own unwrap
	close(gate)
	if err := <-waiter; err != nil {
		t.Fatalf("waiter inherited the leader's cancellation: %v", err)
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	k, kr, _ := newKeys(t, Options{MaxEntries: 3})
	tenants := make([]storage.Tenant, 5)
	for i := range tenants {
		tenants[i] = newTenant(t, k, fmt.Sprintf("t%d", i))
	}
	const workers, iters = 100, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			for i := range iters {
				tn := tenants[(w+i)%len(tenants)]
				if i%7 == 0 && w%10 == 0 {
					k.Evict(tn.ID)
				}
				val := fmt.Sprintf("w%d-i%d", w, i)
				field := fmt.Sprintf("f%d", i%2)
				ct, err := k.SealField(ctx, tn, "integ", field, []byte(val))
				if err != nil {
					errs <- err
					return
				}
				pt, err := k.OpenField(ctx, tn, "integ", field, ct)
				if err != nil {
					errs <- err
					return
				}
				if string(pt.Reveal()) != val {
					errs <- errors.New("wrong plaintext")
					return
				}
				pt.Wipe()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := k.Stats()
	if s.Entries > 3 || s.Hits+s.Misses != workers*iters*2 || s.Unwraps != uint64(kr.unwraps.Load()) {
		t.Fatalf("stats %+v (keyring unwraps %d)", s, kr.unwraps.Load())
	}
}

func TestLockFallback(t *testing.T) {
	// As if the kernel refused mlock (root never is refused, so simulate).
	refuse := func(size int, p lockedmem.Policy) (*lockedmem.Buffer, error) {
		if p == lockedmem.Required {
			return nil, fmt.Errorf("%w: mlock: %w", lockedmem.ErrLock, syscall.ENOMEM)
		}
		return lockedmem.Alloc(size, lockedmem.Off)
	}
	if _, err := newKeysAlloc(newFakeKeyring(t), Options{RequireLock: true}, refuse); !errors.Is(err, ErrMemoryLock) || !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("RequireLock with failing mlock: err = %v, want ErrMemoryLock", err)
	}
	k, err := newKeysAlloc(newFakeKeyring(t), Options{RequireLock: false, JanitorInterval: -1}, refuse)
	if err != nil {
		t.Fatalf("best effort: %v", err)
	}
	defer k.Close()
	sealOpen(t, k, newTenant(t, k, "acme"), "i", "f", "x")
	// probe + NewDEK + cache fill
	if s := k.Stats(); s.Locked || s.UnlockedAllocs != 3 || s.Entries != 1 {
		t.Fatalf("stats %+v, want Locked=false, UnlockedAllocs=3", s)
	}
}

func benchKeys(b *testing.B) (*Keys, storage.Tenant, *fakeKeyring) {
	k, kr, _ := newKeys(b, Options{})
	tn := newTenant(b, k, "acme")
	if _, err := k.SealField(context.Background(), tn, "crm", "access_token", []byte("warm")); err != nil {
		b.Fatal(err)
	}
	return k, tn, kr
}

func BenchmarkSealField(b *testing.B) {
	k, tn, kr := benchKeys(b)
	ctx := context.Background()
	tok := []byte("ya29.a0AfH6SMBexampleAccessTokenOfATypicalLength-0123456789abcdef")
	before := kr.unwraps.Load()
	for b.Loop() {
		if _, err := k.SealField(ctx, tn, "crm", "access_token", tok); err != nil {
			b.Fatal(err)
		}
	}
	if kr.unwraps.Load() != before {
		b.Fatal("warm SealField called Unwrap")
	}
}

func BenchmarkOpenField(b *testing.B) {
	k, tn, kr := benchKeys(b)
	ctx := context.Background()
	ct, err := k.SealField(ctx, tn, "crm", "access_token", []byte("ya29.a0AfH6SMBexampleAccessTokenOfATypicalLength-0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	before := kr.unwraps.Load()
	for b.Loop() {
		pt, err := k.OpenField(ctx, tn, "crm", "access_token", ct)
		if err != nil {
			b.Fatal(err)
		}
		pt.Wipe()
	}
	if kr.unwraps.Load() != before {
		b.Fatal("warm OpenField called Unwrap")
	}
}

// TestEvictDuringUnwrap: an Evict that races an in-flight unwrap must not be
// undone by the unwrap's result landing in the cache afterwards.
func TestEvictDuringUnwrap(t *testing.T) {
	k, kr, _ := newKeys(t, Options{})
	var freed int
	var mu sync.Mutex
	k.beforeFree = func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Equal(b, make([]byte, KeySize)) {
			t.Error("freed buffer not zeroed")
		}
		freed++
	}
	tn := newTenant(t, k, "acme")
	gate, started := kr.hold(4)
	done := make(chan error, 1)
	go func() {
		_, err := k.SealField(t.Context(), tn, "i", "f", []byte("x"))
		done <- err
	}()
	<-started
	k.Evict("acme")
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("in-flight seal: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if s := k.Stats(); s.Entries != 0 || freed != 1 {
		t.Fatalf("entries %d, freed %d: evicted tenant's DEK resurrected or leaked", s.Entries, freed)
	}
}
