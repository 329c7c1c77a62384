//go:build cgo

package pkcs11_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/envelope"
)

func tenantKeyHandles(t *testing.T, mod *pkcs11.Ctx, s pkcs11.SessionHandle, tenantID string) []pkcs11.ObjectHandle {
	t.Helper()
	return findAll(t, mod, s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel+"-tenant-"+tenantID)})
}

// The tenant key as the token holds it: a private, sensitive, never
// extractable AES-256 token object with its label, whose value cannot be
// read.
func TestTenantKeyAttributes(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	if err := k.CreateTenantKey(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		hs := tenantKeyHandles(t, mod, s, "acme")
		if len(hs) != 1 {
			t.Fatalf("%d objects labelled %s-tenant-acme, want 1", len(hs), kekLabel)
		}
		attrs, err := mod.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, nil), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint]bool{
			pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false,
			pkcs11.CKA_ALWAYS_SENSITIVE: true, pkcs11.CKA_NEVER_EXTRACTABLE: true,
			pkcs11.CKA_ENCRYPT: true, pkcs11.CKA_DECRYPT: true, pkcs11.CKA_WRAP: false,
		}
		for _, a := range attrs {
			switch a.Type {
			case pkcs11.CKA_VALUE_LEN:
				if len(a.Value) == 0 || a.Value[0] != 32 {
					t.Errorf("CKA_VALUE_LEN = %x, want 32", a.Value)
				}
			case pkcs11.CKA_ID:
				if string(a.Value) != "acme" {
					t.Errorf("CKA_ID = %q, want the tenant id", a.Value)
				}
			default:
				if got := len(a.Value) == 1 && a.Value[0] != 0; got != want[a.Type] {
					t.Errorf("attribute 0x%x = %v, want %v", a.Type, got, want[a.Type])
				}
			}
		}
		if _, err := mod.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
			t.Error("CKA_VALUE of the tenant key is readable")
		}
	})
}

// A key destroyed by another process (here: another keyring on the token)
// is never used from the first keyring's handle cache, and a key created
// anew there is found.
func TestTenantKeyDestroyedElsewhere(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	a := openKeyring(t, config(tok))
	b := openKeyring(t, config(tok))
	if err := a.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	dek := bytes.Repeat([]byte{0x42}, 32)
	blob, err := a.WrapForTenant(ctx, "acme", dek)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.UnwrapForTenant(ctx, "acme", blob); err != nil || !bytes.Equal(got, dek) { // caches the handle
		t.Fatalf("unwrap: %v", err)
	}
	if err := b.DestroyTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UnwrapForTenant(ctx, "acme", blob); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Fatalf("unwrap through a stale cached handle: err = %v, want ErrTenantKeyNotFound", err)
	}
	if _, err := a.WrapForTenant(ctx, "acme", dek); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Fatalf("wrap after the key was destroyed elsewhere: err = %v, want ErrTenantKeyNotFound", err)
	}
	if err := b.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UnwrapForTenant(ctx, "acme", blob); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("old blob under the re-created key: err = %v, want ErrUnwrap", err)
	}
	nb, err := a.WrapForTenant(ctx, "acme", dek)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.UnwrapForTenant(ctx, "acme", nb); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("blob of one keyring under the other: %v", err)
	}
}

// Tenant keys are token objects: they outlive the keyring, and KEK
// handling ignores them.
func TestTenantKeyPersists(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	k := openKeyring(t, config(tok))
	if err := k.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	dek := bytes.Repeat([]byte{0x17}, 32)
	blob, err := k.WrapForTenant(ctx, "acme", dek)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k2 := openKeyring(t, config(tok))
	if k2.CurrentVersion() != 1 {
		t.Fatalf("current KEK version %d with a tenant key on the token, want 1", k2.CurrentVersion())
	}
	if got, err := k2.UnwrapForTenant(ctx, "acme", blob); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("unwrap after reopening: %v", err)
	}
}

// Two objects with the tenant key's label (two processes raced to create
// it): blobs of either open, and one destroy removes both.
func TestTenantKeyDuplicate(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	a := openKeyring(t, config(tok))
	b := openKeyring(t, config(tok))
	if err := a.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	dek := bytes.Repeat([]byte{0x99}, 32)
	first, err := a.WrapForTenant(ctx, "acme", dek)
	if err != nil {
		t.Fatal(err)
	}
	// Plant a second key with the same label, as a racing process would.
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel+"-tenant-acme"),
		}
		if _, err := mod.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
			t.Fatal(err)
		}
	})
	for range 4 { // whichever object wraps, b opens it
		blob, err := a.WrapForTenant(ctx, "acme", dek)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := b.UnwrapForTenant(ctx, "acme", blob); err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("blob under one of two keys: %v", err)
		}
	}
	if got, err := b.UnwrapForTenant(ctx, "acme", first); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("blob from before the duplicate: %v", err)
	}
	if err := a.DestroyTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if hs := tenantKeyHandles(t, mod, s, "acme"); len(hs) != 0 {
			t.Fatalf("%d tenant key objects left after destroy", len(hs))
		}
	})
	if _, err := b.UnwrapForTenant(ctx, "acme", first); !errors.Is(err, hsm.ErrTenantKeyNotFound) {
		t.Fatalf("after destroy: err = %v, want ErrTenantKeyNotFound", err)
	}
}

// An object with the tenant key's label that breaks the key policy is
// refused, not used.
func TestTenantKeyPolicy(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	k := openKeyring(t, config(tok))
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel+"-tenant-weak"),
		}
		if _, err := mod.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := k.WrapForTenant(ctx, "weak", []byte("0123456789abcdef0123456789abcdef")); !errors.Is(err, hsm.ErrKEKInvalid) {
		t.Fatalf("wrap under an extractable tenant key: err = %v, want ErrKEKInvalid", err)
	}
	if err := k.CreateTenantKey(ctx, "weak"); !errors.Is(err, hsm.ErrKEKInvalid) {
		t.Fatalf("create beside an extractable tenant key: err = %v, want ErrKEKInvalid", err)
	}
	if ok, err := k.HasTenantKey(ctx, "weak"); err != nil || !ok {
		t.Fatalf("HasTenantKey(weak) = %v, %v; want true", ok, err)
	}
	// Shredding does not depend on the key being sound.
	if err := k.DestroyTenantKey(ctx, "weak"); err != nil {
		t.Fatalf("destroy of an extractable tenant key: %v", err)
	}
	if ok, err := k.HasTenantKey(ctx, "weak"); err != nil || ok {
		t.Fatalf("HasTenantKey(weak) after destroy = %v, %v; want false", ok, err)
	}
}

// Crypto-shredding end to end on the real backend: a field sealed under a
// tenant-wrapped DEK opens, and after envelope's Shred neither the record
// nor a backup copy of it opens, through a keyring reopened on the same
// token (same KEK).
func TestEnvelopeShredOnSoftHSM(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	k := openKeyring(t, config(tok))
	keys, err := envelope.NewKeys(k, envelope.Options{JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = keys.Close() }()
	w, err := keys.NewDEK(ctx, "acme", 1)
	if err != nil || !w.TenantWrapped {
		t.Fatalf("NewDEK: %+v, %v", w, err)
	}
	tn := storage.Tenant{ID: "acme", KEKVersion: w.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{w}}
	sealed, err := keys.SealField(ctx, tn, "crm", "refresh_token", []byte("rt"))
	if err != nil {
		t.Fatal(err)
	}
	saved, err := json.Marshal(tn)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.OpenField(ctx, tn, "crm", "refresh_token", sealed); !errors.Is(err, envelope.ErrShredded) {
		t.Fatalf("after Shred: %v, want ErrShredded", err)
	}
	_ = keys.Close()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k2 := openKeyring(t, config(tok))
	keys2, err := envelope.NewKeys(k2, envelope.Options{JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = keys2.Close() }()
	var restored storage.Tenant
	if err := json.Unmarshal(saved, &restored); err != nil {
		t.Fatal(err)
	}
	if _, err := keys2.OpenField(ctx, restored, "crm", "refresh_token", sealed); !errors.Is(err, envelope.ErrShredded) {
		t.Fatalf("backup copy after Shred, reopened token: %v, want ErrShredded", err)
	}
}
