//go:build cgo

package pkcs11_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/envelope"
)

// schemesOnSoftHSM are the schemes SoftHSMv2 runs through C_Encrypt:
// it offers RFC 5649 (0x210A) only as C_WrapKey, which vaultd does not
// use (negotiate.go), so AES-KWP is refused there (TestSchemeKWPRefused).
var schemesOnSoftHSM = []hsm.Scheme{hsm.SchemeAESGCM, hsm.SchemeAESCBCHMAC}

// initTokenScheme is initToken with a forced scheme (InitKEK also makes
// the MAC key for CBC-HMAC).
func initTokenScheme(t *testing.T, s hsm.Scheme) (hsmpkcs11.Config, func() *hsmpkcs11.PKCS11) {
	t.Helper()
	tok := initToken(t)
	cfg := config(tok)
	cfg.ForceScheme = s
	if _, _, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil); err != nil {
		t.Fatalf("InitKEK(%s): %v", s, err)
	}
	return cfg, func() *hsmpkcs11.PKCS11 { return openKeyring(t, cfg) }
}

func TestSchemeSuite(t *testing.T) {
	for _, s := range schemesOnSoftHSM {
		t.Run(s.String(), func(t *testing.T) {
			_, open := initTokenScheme(t, s)
			if got := open().Scheme(); got != s {
				t.Fatalf("Scheme() = %s, want %s", got, s)
			}
			hsmtest.RunKeyringSuite(t, func(t *testing.T) hsm.Keyring { return open() })
		})
	}
}

// SoftHSMv2 has every mechanism: it negotiates the strongest.
func TestSchemeNegotiatedOnSoftHSM(t *testing.T) {
	k := openKeyring(t, config(initToken(t)))
	if k.Scheme() != hsm.SchemeAESGCM {
		t.Fatalf("Scheme() = %s, want AES-GCM", k.Scheme())
	}
}

func TestSchemeKWPRefused(t *testing.T) {
	cfg := config(initToken(t))
	cfg.ForceScheme = hsm.SchemeAESKWP
	_, err := hsmpkcs11.Open(t.Context(), cfg, nil)
	if !errors.Is(err, hsm.ErrMechanism) || !strings.Contains(err.Error(), "CKM_AES_KEY_WRAP_KWP") {
		t.Fatalf("Open with AES-KWP forced on SoftHSMv2: %v, want ErrMechanism naming CKM_AES_KEY_WRAP_KWP", err)
	}
}

// Records written under one scheme open after a restart, under the same
// scheme and under the other (a database moved between tokens).
func TestSchemeRecordsSurviveRestart(t *testing.T) {
	for _, s := range schemesOnSoftHSM {
		t.Run(s.String(), func(t *testing.T) {
			cfg, open := initTokenScheme(t, s)
			ctx := t.Context()
			k := open()
			dek := bytes.Repeat([]byte{0x5a}, 32)
			aad := []byte("tenant=acme\x00dek=1")
			w, err := k.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			if got, _, _ := hsm.ParseWrappedKey(w); got != s {
				t.Fatalf("wrapped key records %s, want %s", got, s)
			}
			if err := k.CreateTenantKey(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			blob, err := k.WrapForTenant(ctx, "acme", dek)
			if err != nil {
				t.Fatal(err)
			}
			if got, _, _, _, _ := hsm.ParseTenantWrappedScheme("acme", blob); got != s {
				t.Fatalf("tenant blob records %s, want %s", got, s)
			}
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			// The token moves on to CBC-HMAC: 'vaultctl init' adds the MAC key.
			if _, err := hsmpkcs11.InitMACKey(ctx, cfg, nil); err != nil {
				t.Fatal(err)
			}
			for _, other := range schemesOnSoftHSM {
				c := cfg
				c.ForceScheme = other
				k2 := openKeyring(t, c)
				got, err := k2.Unwrap(ctx, w, aad)
				if err != nil || !bytes.Equal(got.Reveal(), dek) {
					t.Fatalf("reopened with %s: Unwrap: %v", other, err)
				}
				pt, err := k2.UnwrapForTenant(ctx, "acme", blob)
				if err != nil || !bytes.Equal(pt, dek) {
					t.Fatalf("reopened with %s: UnwrapForTenant: %v", other, err)
				}
				if err := k2.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// The envelope over each scheme: a tenant's DEK (tenant key, then KEK)
// seals a field that opens after a restart on the same token.
func TestSchemeEnvelopeSurvivesRestart(t *testing.T) {
	for _, s := range schemesOnSoftHSM {
		t.Run(s.String(), func(t *testing.T) {
			_, open := initTokenScheme(t, s)
			ctx := t.Context()
			keys := func() *envelope.Keys {
				k, err := envelope.NewKeys(open(), envelope.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = k.Close() })
				return k
			}
			k1 := keys()
			dek, err := k1.NewDEK(ctx, "acme", 1)
			if err != nil {
				t.Fatalf("NewDEK: %v", err)
			}
			if !dek.TenantWrapped {
				t.Fatal("DEK is not tenant-wrapped")
			}
			if got, _, _ := hsm.ParseWrappedKey(hsm.WrappedKey{Nonce: dek.Nonce, Ciphertext: dek.Ciphertext}); got != s {
				t.Fatalf("DEK records %s, want %s", got, s)
			}
			tenant := storage.Tenant{ID: "acme", DEKVersion: 1, DEKs: []storage.WrappedDEK{dek}}
			sealed, err := k1.SealField(ctx, tenant, "gh", "refresh_token", []byte("r1-secret"))
			if err != nil {
				t.Fatalf("SealField: %v", err)
			}
			_ = k1.Close()
			got, err := keys().OpenField(ctx, tenant, "gh", "refresh_token", sealed)
			if err != nil || string(got.Reveal()) != "r1-secret" {
				t.Fatalf("OpenField after restart: %v", err)
			}
		})
	}
}

// CBC-HMAC needs the MAC key: without it Open says to run 'vaultctl
// init'; InitMACKey makes it, once, with the key policy.
func TestSchemeCBCHMACNeedsMACKey(t *testing.T) {
	cfg := config(initToken(t)) // negotiated GCM: no MAC key made
	cfg.ForceScheme = hsm.SchemeAESCBCHMAC
	if _, err := hsmpkcs11.Open(t.Context(), cfg, nil); !errors.Is(err, hsm.ErrKEKNotFound) || !strings.Contains(err.Error(), "vaultd-kek-mac") {
		t.Fatalf("Open without the MAC key: %v, want ErrKEKNotFound naming it", err)
	}
	for i, want := range []bool{true, false} {
		created, err := hsmpkcs11.InitMACKey(t.Context(), cfg, nil)
		if err != nil || created != want {
			t.Fatalf("InitMACKey #%d = %v, %v; want %v", i, created, err, want)
		}
	}
	k := openKeyring(t, cfg)
	w, err := k.Wrap(t.Context(), []byte("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A MAC over other bytes fails before any decryption.
	w.Ciphertext[len(w.Ciphertext)-1] ^= 1
	if _, err := k.Unwrap(t.Context(), w, nil); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("wrong MAC: %v, want ErrUnwrap", err)
	}
}

// The health probe is a real round trip with the negotiated scheme.
func TestSchemePingRoundTrip(t *testing.T) {
	for _, s := range schemesOnSoftHSM {
		_, open := initTokenScheme(t, s)
		k := open()
		if err := k.Ping(t.Context()); err != nil {
			t.Fatalf("%s: Ping: %v", s, err)
		}
		_ = k.Close()
		if err := k.Ping(t.Context()); !errors.Is(err, hsm.ErrClosed) {
			t.Fatalf("%s: Ping after Close: %v", s, err)
		}
	}
}

// A token that still answers but can no longer wrap is not healthy: with
// the MAC key destroyed under a running CBC-HMAC keyring, Ping (the health
// probe behind /readyz) fails although the KEK is still readable.
func TestSchemePingFailsWhenWrapFails(t *testing.T) {
	tok := initToken(t)
	cfg := config(tok)
	cfg.ForceScheme = hsm.SchemeAESCBCHMAC
	if _, _, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil); err != nil {
		t.Fatal(err)
	}
	k := openKeyring(t, cfg)
	if err := k.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		hs := findAll(t, mod, s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel+"-mac")})
		if len(hs) != 1 {
			t.Fatalf("%d MAC keys, want 1", len(hs))
		}
		// The MAC key's protection: sensitive, never extractable, sign/verify only.
		attrs, err := mod.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		if kt := attrs[0].Value; len(kt) == 0 || kt[0] != byte(pkcs11.CKK_GENERIC_SECRET) {
			t.Errorf("MAC key type %v, want CKK_GENERIC_SECRET", kt)
		}
		for i, want := range []byte{1, 0, 0, 1, 1} { // sensitive, extractable, encrypt, sign, verify
			if a := attrs[i+1]; len(a.Value) != 1 || a.Value[0] != want {
				t.Errorf("MAC key attribute 0x%x = %v, want %d", a.Type, a.Value, want)
			}
		}
		if err := mod.DestroyObject(s, hs[0]); err != nil {
			t.Fatal(err)
		}
	})
	if err := k.Ping(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Ping with the MAC key gone: %v, want ErrUnavailable", err)
	}
}

// BenchmarkScheme is the cost of one wrap and one unwrap of a 32-byte DEK
// under the KEK with each scheme SoftHSMv2 runs.
// Tokens are made before any keyring opens: a module initialised while one
// is open would not see them (internal/softhsmtest).
func BenchmarkScheme(b *testing.B) {
	cfgs := make([]hsmpkcs11.Config, len(schemesOnSoftHSM))
	for i, s := range schemesOnSoftHSM {
		cfgs[i] = config(initToken(b))
		cfgs[i].ForceScheme = s
		if _, _, err := hsmpkcs11.InitKEK(b.Context(), cfgs[i], nil); err != nil {
			b.Fatal(err)
		}
	}
	for i, s := range schemesOnSoftHSM {
		k := openKeyring(b, cfgs[i])
		dek := bytes.Repeat([]byte{1}, 32)
		aad := []byte("tenant=acme\x00dek=1")
		w, err := k.Wrap(b.Context(), dek, aad)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.String()+"/wrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Wrap(b.Context(), dek, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.String()+"/unwrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Unwrap(b.Context(), w, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
