package envelope

import (
	"errors"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/storage"
)

// After a KEK rotation, RewrapDEK moves a DEK under the new KEK without
// changing the key: records sealed before still open, binding to tenant
// and version is kept, and a DEK already current is left alone.
func TestRewrapDEK(t *testing.T) {
	ctx := t.Context()
	kr := hsmtest.NewFake()
	k, err := NewKeys(kr, Options{RequireLock: true, JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	w1, err := k.NewDEK(ctx, "acme", 1)
	if err != nil {
		t.Fatal(err)
	}
	tn := storage.Tenant{ID: "acme", KEKVersion: w1.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{w1}}
	sealed := sealOpen(t, k, tn, "crm", "refresh_token", "r-1")

	if same, changed, err := k.RewrapDEK(ctx, "acme", w1, kr.CurrentVersion()); err != nil || changed || same.KEKVersion != 1 {
		t.Fatalf("rewrap under the same KEK: %+v changed=%v %v", same, changed, err)
	}
	if v := kr.Rotate(); v != 2 {
		t.Fatalf("rotate: %d", v)
	}
	w2, changed, err := k.RewrapDEK(ctx, "acme", w1, 2)
	if err != nil || !changed {
		t.Fatalf("rewrap: changed=%v %v", changed, err)
	}
	if w2.KEKVersion != 2 || w2.Version != 1 || !w2.CreatedAt.Equal(w1.CreatedAt) {
		t.Fatalf("rewrapped DEK %+v", w2)
	}
	// Same key: the old record opens with the rewrapped DEK, from the HSM
	// (cache evicted) rather than the cached copy.
	k.Evict("acme")
	tn.DEKs[0], tn.KEKVersion = w2, 2
	pt, err := k.OpenField(ctx, tn, "crm", "refresh_token", sealed)
	if err != nil || string(pt.Reveal()) != "r-1" {
		t.Fatalf("open after rewrap: %v", err)
	}
	pt.Wipe()
	// Still bound: the rewrapped blob does not unwrap as another tenant's
	// or another version's DEK.
	if _, _, err := k.RewrapDEK(ctx, "globex", w2, 3); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("rewrap as another tenant: %v, want ErrUnwrap", err)
	}
	w2v := w2
	w2v.Version = 7
	if _, _, err := k.RewrapDEK(ctx, "acme", w2v, 3); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("rewrap as another version: %v, want ErrUnwrap", err)
	}
	// HSM trouble: an error, and the input comes back unchanged.
	kr.Fail.Store(true)
	got, changed, err := k.RewrapDEK(ctx, "acme", w1, 2)
	if !errors.Is(err, hsm.ErrUnavailable) || changed || got.KEKVersion != w1.KEKVersion {
		t.Fatalf("rewrap with the HSM down: %+v changed=%v %v", got, changed, err)
	}
}
