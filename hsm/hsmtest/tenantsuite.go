package hsmtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/hsm"
)

// tenantKeyringSuite checks hsm.TenantKeyring. Tenant ids are random: a
// factory that reopens one token keeps the keys of earlier runs.
func tenantKeyringSuite(t *testing.T, open func(t *testing.T) hsm.Keyring) {
	k := open(t)
	tk := k.(hsm.TenantKeyring)
	ctx := context.Background()
	acme, other, never := randTenant("acme"), randTenant("other"), randTenant("never")

	has := func(id string, want bool) {
		t.Helper()
		if got, err := tk.HasTenantKey(ctx, id); err != nil || got != want {
			t.Fatalf("HasTenantKey(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	has(acme, false)
	var kekInfos int
	if in, ok := k.(hsm.KEKInspector); ok {
		infos, err := in.KEKInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kekInfos = len(infos)
	}
	for range 2 { // idempotent
		if err := tk.CreateTenantKey(ctx, acme); err != nil {
			t.Fatalf("CreateTenantKey: %v", err)
		}
	}
	if err := tk.CreateTenantKey(ctx, other); err != nil {
		t.Fatal(err)
	}
	has(acme, true)
	has(never, false)

	// A tenant key is not a KEK: the KEK set and current version are as before.
	if in, ok := k.(hsm.KEKInspector); ok {
		if infos, err := in.KEKInfo(ctx); err != nil || len(infos) != kekInfos {
			t.Fatalf("KEKInfo after creating tenant keys: %d versions, %v; want %d", len(infos), err, kekInfos)
		}
	}
	if r, ok := k.(hsm.Reloader); ok {
		v := k.CurrentVersion()
		if err := r.Reload(ctx); err != nil || k.CurrentVersion() != v {
			t.Fatalf("Reload with tenant keys present: %v, current %d, want %d", err, k.CurrentVersion(), v)
		}
	}

	dek := randBytes(32)
	blob, err := tk.WrapForTenant(ctx, acme, dek)
	if err != nil {
		t.Fatalf("WrapForTenant: %v", err)
	}
	scheme, iv, ct, aad, err := hsm.ParseTenantWrappedScheme(acme, blob)
	if err != nil {
		t.Fatalf("blob does not parse: %v", err)
	}
	if want := scheme.CiphertextLen(len(dek), len(aad)); len(ct) != want || len(iv) != scheme.IVSize() {
		t.Fatalf("%s blob: iv %d bytes, ciphertext %d; want %d, %d", scheme, len(iv), len(ct), scheme.IVSize(), want)
	}
	if want := hsm.TenantWrappedLen(acme, scheme, len(dek)); len(blob) != want {
		t.Fatalf("%s blob is %d bytes, TenantWrappedLen says %d", scheme, len(blob), want)
	}
	if bytes.Contains(blob, dek) {
		t.Fatal("blob contains the plaintext")
	}
	again, err := tk.WrapForTenant(ctx, acme, dek)
	if err != nil || (scheme.IVSize() > 0 && bytes.Equal(again, blob)) {
		t.Fatalf("second WrapForTenant: %v, or the nonce repeated", err)
	}
	got, err := tk.UnwrapForTenant(ctx, acme, blob)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("UnwrapForTenant: %v (equal %v)", err, bytes.Equal(got, dek))
	}
	clear(got) // caller-owned: wiping it changes nothing inside
	if got, err := tk.UnwrapForTenant(ctx, acme, blob); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("UnwrapForTenant after the caller wiped a result: %v", err)
	}
	if empty, err := tk.WrapForTenant(ctx, acme, nil); err != nil {
		t.Fatalf("WrapForTenant(empty): %v", err)
	} else if got, err := tk.UnwrapForTenant(ctx, acme, empty); err != nil || len(got) != 0 {
		t.Fatalf("empty round trip: %d bytes, %v", len(got), err)
	}

	// Bound to its tenant: another tenant's key does not open it.
	if _, err := tk.UnwrapForTenant(ctx, other, blob); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("blob of %s under %s: err = %v, want ErrUnwrap", acme, other, err)
	}
	if _, err := tk.UnwrapForTenant(ctx, never, blob); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Errorf("blob under a tenant without a key: err = %v, want ErrTenantKeyNotFound", err)
	}
	if _, err := tk.WrapForTenant(ctx, never, dek); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Errorf("WrapForTenant without a key: err = %v, want ErrTenantKeyNotFound", err)
	}
	// Tampering anywhere (version byte, nonce, ciphertext, tag) or cutting fails.
	var bad [][]byte
	for i := range blob {
		c := bytes.Clone(blob)
		c[i] ^= 0x01
		bad = append(bad, c)
	}
	bad = append(bad, nil, blob[:1], blob[:hsm.TenantWrapOverhead-1], blob[:len(blob)-1], append(bytes.Clone(blob), 0))
	for i, c := range bad {
		if got, err := tk.UnwrapForTenant(ctx, acme, c); !errors.Is(err, hsm.ErrUnwrap) || len(got) != 0 {
			t.Errorf("tampered blob %d: %d bytes, err = %v; want ErrUnwrap", i, len(got), err)
		}
	}
	// Not a tenant id: never a key.
	for _, id := range []string{"", "../x", "a b"} {
		if err := tk.CreateTenantKey(ctx, id); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
			t.Errorf("CreateTenantKey(%q): err = %v, want ErrTenantKeyNotFound", id, err)
		}
	}

	// Destroy: crypto-shred. Nothing wrapped before opens again, even
	// after the tenant key is created anew.
	if err := tk.DestroyTenantKey(ctx, acme); err != nil {
		t.Fatalf("DestroyTenantKey: %v", err)
	}
	has(acme, false)
	has(other, true)
	if _, err := tk.UnwrapForTenant(ctx, acme, blob); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Errorf("UnwrapForTenant after destroy: err = %v, want ErrTenantKeyNotFound", err)
	}
	if _, err := tk.WrapForTenant(ctx, acme, dek); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Errorf("WrapForTenant after destroy: err = %v, want ErrTenantKeyNotFound", err)
	}
	for _, id := range []string{acme, never} { // absent = nil
		if err := tk.DestroyTenantKey(ctx, id); err != nil {
			t.Errorf("DestroyTenantKey(%s) of an absent key: %v", id, err)
		}
	}
	if err := tk.CreateTenantKey(ctx, acme); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.UnwrapForTenant(ctx, acme, blob); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("old blob under a re-created key: err = %v, want ErrUnwrap", err)
	}
	if got, err := tk.UnwrapForTenant(ctx, other, mustWrap(t, tk, other, dek)); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("another tenant after a destroy: %v", err)
	}

	t.Run("Concurrent", func(t *testing.T) {
		ids := []string{randTenant("c0"), randTenant("c1"), randTenant("c2")}
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		blobs := make([][][]byte, len(ids))
		var mu sync.Mutex
		for g := range 60 {
			id := ids[g%len(ids)]
			wg.Go(func() {
				if err := tk.CreateTenantKey(ctx, id); err != nil {
					errs <- fmt.Errorf("goroutine %d: create: %w", g, err)
					return
				}
				b, err := tk.WrapForTenant(ctx, id, dek)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: wrap: %w", g, err)
					return
				}
				if got, err := tk.UnwrapForTenant(ctx, id, b); err != nil || !bytes.Equal(got, dek) {
					errs <- fmt.Errorf("goroutine %d: unwrap: %v", g, err)
					return
				}
				mu.Lock()
				blobs[g%len(ids)] = append(blobs[g%len(ids)], b)
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Racing creates made one key per tenant: every blob opens now,
		// and one destroy shreds them all.
		for i, id := range ids {
			for _, b := range blobs[i] {
				if _, err := tk.UnwrapForTenant(ctx, id, b); err != nil {
					t.Errorf("%s: blob from the race: %v", id, err)
				}
			}
			if err := tk.DestroyTenantKey(ctx, id); err != nil {
				t.Fatal(err)
			}
			for _, b := range blobs[i] {
				if _, err := tk.UnwrapForTenant(ctx, id, b); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
					t.Errorf("%s: blob after destroy: %v", id, err)
				}
			}
		}
	})

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for name, err := range map[string]error{
		"CreateTenantKey":  tk.CreateTenantKey(cancelled, other),
		"DestroyTenantKey": tk.DestroyTenantKey(cancelled, other),
		"WrapForTenant":    second(tk.WrapForTenant(cancelled, other, dek)),
		"UnwrapForTenant":  second(tk.UnwrapForTenant(cancelled, other, blob)),
		"HasTenantKey":     second(tk.HasTenantKey(cancelled, other)),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s(cancelled): err = %v, want context.Canceled", name, err)
		}
	}
	has(other, true) // a cancelled destroy destroyed nothing
	if err := tk.DestroyTenantKey(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := tk.DestroyTenantKey(ctx, acme); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"CreateTenantKey":  tk.CreateTenantKey(ctx, other),
		"DestroyTenantKey": tk.DestroyTenantKey(ctx, other),
		"WrapForTenant":    second(tk.WrapForTenant(ctx, other, dek)),
		"UnwrapForTenant":  second(tk.UnwrapForTenant(ctx, other, blob)),
		"HasTenantKey":     second(tk.HasTenantKey(ctx, other)),
	} {
		if !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

func mustWrap(t *testing.T, tk hsm.TenantKeyring, tenantID string, pt []byte) []byte {
	t.Helper()
	b, err := tk.WrapForTenant(context.Background(), tenantID, pt)
	if err != nil {
		t.Fatalf("WrapForTenant(%s): %v", tenantID, err)
	}
	return b
}

func second[T any](_ T, err error) error { return err }

func randTenant(prefix string) string { return prefix + "-" + hex.EncodeToString(randBytes(6)) }
