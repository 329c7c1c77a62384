package hsmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/hsm"
)

// RunKeyringSuite checks the behaviour every hsm.Keyring must have, then the
// behaviour of each optional interface (hsm.KEKRotator, hsm.Reloader,
// hsm.KEKInspector) the keyrings implement. newKeyring returns a fresh, open
// keyring; the suite closes it (Close must therefore be idempotent if the
// factory also registers a Close). Subtests run sequentially: a real HSM
// module may need every keyring closed between them. The optional parts add
// KEK versions; a factory that reopens one token sees them.
func RunKeyringSuite(t *testing.T, newKeyring func(t *testing.T) hsm.Keyring) {
	t.Helper()
	open := func(t *testing.T) hsm.Keyring {
		t.Helper()
		k := newKeyring(t)
		t.Cleanup(func() {
			if err := k.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return k
	}

	t.Run("RoundTrip", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		if k.CurrentVersion() == 0 {
			t.Fatal("CurrentVersion is 0; versions start at 1")
		}
		for _, n := range []int{1, 16, 32, 33, 64, 1024} {
			pt := randBytes(n)
			aad := []byte(fmt.Sprintf("tenant-%d\x00v1", n))
			w, err := k.Wrap(ctx, pt, aad)
			if err != nil {
				t.Fatalf("Wrap(%d bytes): %v", n, err)
			}
			if w.KEKVersion != k.CurrentVersion() {
				t.Errorf("KEKVersion = %d, want current %d", w.KEKVersion, k.CurrentVersion())
			}
			scheme, iv, err := hsm.ParseWrappedKey(w)
			if err != nil {
				t.Fatalf("wrapped key does not name a scheme: %v", err)
			}
			if len(iv) != scheme.IVSize() {
				t.Errorf("%s iv is %d bytes, want %d", scheme, len(iv), scheme.IVSize())
			}
			if want := scheme.CiphertextLen(n, len(aad)); len(w.Ciphertext) != want {
				t.Errorf("%s ciphertext is %d bytes for %d, want %d", scheme, len(w.Ciphertext), n, want)
			}
			if n >= 16 && bytes.Contains(w.Ciphertext, pt) {
				t.Error("ciphertext contains the plaintext")
			}
			got, err := k.Unwrap(ctx, w, aad)
			if err != nil {
				t.Fatalf("Unwrap(%d bytes): %v", n, err)
			}
			if !bytes.Equal(got.Reveal(), pt) {
				t.Fatalf("Unwrap(%d bytes) returned other bytes", n)
			}
			// Wiping the result must not affect a later unwrap.
			got.Wipe()
			again, err := k.Unwrap(ctx, w, aad)
			if err != nil || !bytes.Equal(again.Reveal(), pt) {
				t.Fatalf("second Unwrap after Wipe: %v", err)
			}
		}
	})

	t.Run("FreshNonces", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		pt := randBytes(32)
		seen := map[string]bool{}
		for i := range 20 {
			w, err := k.Wrap(ctx, pt, nil)
			if err != nil {
				t.Fatalf("Wrap #%d: %v", i, err)
			}
			if s, _, _ := hsm.ParseWrappedKey(w); s.IVSize() == 0 {
				t.Skipf("%s has no iv: it is deterministic by design", s)
			}
			if seen[string(w.Nonce)] {
				t.Fatalf("nonce repeated after %d wraps", i)
			}
			seen[string(w.Nonce)] = true
		}
	})

	t.Run("InputNotRetained", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		pt := randBytes(32)
		want := bytes.Clone(pt)
		aad := []byte("aad")
		w, err := k.Wrap(ctx, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		clear(pt) // the caller wipes its DEK after wrapping
		got, err := k.Unwrap(ctx, w, aad)
		if err != nil || !bytes.Equal(got.Reveal(), want) {
			t.Fatalf("Unwrap after caller wiped its input: %v", err)
		}
	})

	t.Run("AADBinding", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		pt := randBytes(32)
		aad := []byte("tenant=acme\x00dek=1")
		w, err := k.Wrap(ctx, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range [][]byte{nil, []byte("tenant=acme\x00dek=2"), []byte("tenant=evil\x00dek=1"), aad[:len(aad)-1], append(bytes.Clone(aad), 0)} {
			if _, err := k.Unwrap(ctx, w, other); !errors.Is(err, hsm.ErrUnwrap) {
				t.Errorf("Unwrap with aad %q: err = %v, want ErrUnwrap", other, err)
			}
		}
		// nil aad round-trips with nil aad.
		w2, err := k.Wrap(ctx, pt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := k.Unwrap(ctx, w2, nil); err != nil || !bytes.Equal(got.Reveal(), pt) {
			t.Fatalf("nil aad round trip: %v", err)
		}
		if _, err := k.Unwrap(ctx, w2, aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("blob wrapped without aad unwrapped with aad: err = %v", err)
		}
	})

	t.Run("Tamper", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		aad := []byte("aad")
		w, err := k.Wrap(ctx, randBytes(32), aad)
		if err != nil {
			t.Fatal(err)
		}
		var cases []hsm.WrappedKey
		for i := range w.Ciphertext { // every byte, including the tag
			c := clone(w)
			c.Ciphertext[i] ^= 0x01
			cases = append(cases, c)
		}
		for i := range w.Nonce {
			c := clone(w)
			c.Nonce[i] ^= 0x80
			cases = append(cases, c)
		}
		c := clone(w)
		c.Ciphertext = c.Ciphertext[:len(c.Ciphertext)-1]
		cases = append(cases, c)
		c = clone(w)
		c.Ciphertext = c.Ciphertext[:15] // shorter than a tag
		cases = append(cases, c)
		c = clone(w)
		c.Ciphertext = nil
		cases = append(cases, c)
		c = clone(w)
		c.Nonce = c.Nonce[:len(c.Nonce)*2/3]
		cases = append(cases, c)
		c = clone(w)
		c.Nonce = nil
		cases = append(cases, c)
		c = clone(w)
		c.Ciphertext = append(c.Ciphertext, 0)
		cases = append(cases, c)
		for i, c := range cases {
			got, err := k.Unwrap(ctx, c, aad)
			if !errors.Is(err, hsm.ErrUnwrap) {
				t.Errorf("case %d: err = %v, want ErrUnwrap", i, err)
			}
			if got.Len() != 0 {
				t.Errorf("case %d: returned %d bytes with the error", i, got.Len())
			}
		}
		// The keyring still works after a burst of failures.
		if _, err := k.Unwrap(ctx, w, aad); err != nil {
			t.Fatalf("Unwrap of the intact blob after tampering: %v", err)
		}
	})

	t.Run("WrongKEKVersion", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		w, err := k.Wrap(ctx, randBytes(32), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []uint32{0, w.KEKVersion + 1, w.KEKVersion + 1000, ^uint32(0)} {
			c := clone(w)
			c.KEKVersion = v
			if _, err := k.Unwrap(ctx, c, nil); !errors.Is(err, hsm.ErrUnwrap) {
				t.Errorf("KEK version %d: err = %v, want ErrUnwrap", v, err)
			}
		}
	})

	t.Run("OtherKeyring", func(t *testing.T) {
		// A blob from one keyring must not open under another keyring's KEK
		// of the same version (another tenant's HSM, a restored backup).
		a := open(t)
		w, err := a.Wrap(context.Background(), randBytes(32), nil)
		if err != nil {
			t.Fatal(err)
		}
		// Open b only after a is closed: a real module may need that.
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		b := open(t)
		_, err = b.Unwrap(context.Background(), w, nil)
		switch {
		case err == nil:
			// Same KEK (the factory reopens one token): only legal if
			// b wraps under the same version too.
			if b.CurrentVersion() < w.KEKVersion {
				t.Fatal("unwrapped a blob of a KEK version it does not have")
			}
		case !errors.Is(err, hsm.ErrUnwrap):
			t.Fatalf("err = %v, want nil (same KEK) or ErrUnwrap", err)
		}
	})

	t.Run("ContextDone", func(t *testing.T) {
		k := open(t)
		w, err := k.Wrap(context.Background(), randBytes(32), nil)
		if err != nil {
			t.Fatal(err)
		}
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(1, 0))
		defer cancel2()
		for _, tc := range []struct {
			ctx  context.Context
			want error
		}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
			if _, err := k.Wrap(tc.ctx, randBytes(32), nil); !errors.Is(err, tc.want) {
				t.Errorf("Wrap: err = %v, want %v", err, tc.want)
			}
			if got, err := k.Unwrap(tc.ctx, w, nil); !errors.Is(err, tc.want) || got.Len() != 0 {
				t.Errorf("Unwrap: err = %v, want %v", err, tc.want)
			}
			if err := k.Ping(tc.ctx); !errors.Is(err, tc.want) {
				t.Errorf("Ping: err = %v, want %v", err, tc.want)
			}
		}
		// A done context does not poison the keyring.
		if err := k.Ping(context.Background()); err != nil {
			t.Fatalf("Ping after cancelled calls: %v", err)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		k := open(t)
		for i := range 3 {
			if err := k.Ping(context.Background()); err != nil {
				t.Fatalf("Ping #%d: %v", i, err)
			}
		}
	})

	t.Run("Closed", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		w, err := k.Wrap(ctx, randBytes(32), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := k.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := k.Wrap(ctx, randBytes(32), nil); !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("Wrap after Close: err = %v, want ErrClosed", err)
		}
		if _, err := k.Unwrap(ctx, w, nil); !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("Unwrap after Close: err = %v, want ErrClosed", err)
		}
		if err := k.Ping(ctx); !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("Ping after Close: err = %v, want ErrClosed", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		k := open(t)
		ctx := context.Background()
		const goroutines, rounds = 100, 3
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Go(func() {
				aad := []byte(fmt.Sprintf("tenant-%d", g))
				for r := range rounds {
					pt := randBytes(32)
					w, err := k.Wrap(ctx, pt, aad)
					if err != nil {
						errs <- fmt.Errorf("goroutine %d round %d: Wrap: %w", g, r, err)
						return
					}
					got, err := k.Unwrap(ctx, w, aad)
					if err != nil {
						errs <- fmt.Errorf("goroutine %d round %d: Unwrap: %w", g, r, err)
						return
					}
					if !bytes.Equal(got.Reveal(), pt) {
						errs <- fmt.Errorf("goroutine %d round %d: wrong plaintext", g, r)
						return
					}
					if _, err := k.Unwrap(ctx, w, []byte("other")); !errors.Is(err, hsm.ErrUnwrap) {
						errs <- fmt.Errorf("goroutine %d round %d: wrong aad: %v", g, r, err)
						return
					}
					if r == 0 {
						if err := k.Ping(ctx); err != nil {
							errs <- fmt.Errorf("goroutine %d: Ping: %w", g, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	runOptionalSuites(t, newKeyring, open)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func clone(w hsm.WrappedKey) hsm.WrappedKey {
	return hsm.WrappedKey{KEKVersion: w.KEKVersion, Nonce: bytes.Clone(w.Nonce), Ciphertext: bytes.Clone(w.Ciphertext)}
}
