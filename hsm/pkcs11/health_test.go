//go:build cgo

package pkcs11_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
)

// Losing the HSM sessions (token reset, network HSM blip) makes calls fail
// with ErrUnavailable, never ErrUnwrap: a good blob must not look tampered.
func TestSessionLossIsUnavailable(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	ctx := t.Context()
	w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		si, err := mod.GetSessionInfo(s)
		if err != nil {
			t.Fatal(err)
		}
		// Closes every session of this application, crypto11's logged-in
		// one included, which also logs the application out.
		if err := mod.CloseAllSessions(si.SlotID); err != nil {
			t.Fatal(err)
		}
	})
	for i := range 3 { // first on stale pooled sessions, then on fresh ones
		if _, err := k.Unwrap(ctx, w, nil); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("Unwrap #%d after session loss: %v, want ErrUnavailable only", i, err)
		}
		if _, err := k.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Wrap #%d after session loss: %v, want ErrUnavailable", i, err)
		}
		if err := k.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Ping #%d after session loss: %v, want ErrUnavailable", i, err)
		}
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}

// An HSM restart or failover invalidates object handles while the KEK
// objects still exist under their label. Ping reports the stale handle as
// unavailable, and once a KEK with the label is there again it finds it by
// label (policy checks included) instead of needing a restart.
func TestPingRefindsStaleKEKHandle(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	logger, logs := newLogger()
	k, err := hsmpkcs11.Open(ctx, config(tok), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	old, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("healthy Ping: %v", err)
	}
	// Take the KEK object away behind the keyring's back.
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if err := mod.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, kekLabel)}); err != nil {
			t.Fatal(err)
		}
		hs, _, err := mod.FindObjects(s, 10)
		_ = mod.FindObjectsFinal(s)
		if err != nil || len(hs) != 1 {
			t.Fatalf("find KEK: %v, %d objects", err, len(hs))
		}
		if err := mod.DestroyObject(s, hs[0]); err != nil {
			t.Fatal(err)
		}
	})
	if err := k.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Ping without the KEK object: %v, want ErrUnavailable", err)
	}
	if _, err := k.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Wrap without the KEK object: %v, want ErrUnavailable", err)
	}
	// A KEK with the label is back (here a new one: SoftHSM cannot restore
	// the old non-extractable key, which is the point of it).
	if _, created, err := hsmpkcs11.InitKEK(ctx, config(tok), nil); err != nil || !created {
		t.Fatalf("InitKEK: created %v, %v", created, err)
	}
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("Ping after the KEK came back: %v", err)
	}
	if !strings.Contains(logs.String(), "KEK handle was stale") {
		t.Fatalf("no log line for the re-found KEK:\n%s", logs)
	}
	w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatalf("Wrap after recovery: %v", err)
	}
	if _, err := k.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("Unwrap after recovery: %v", err)
	}
	// A blob of the destroyed key stays unreadable: authentication fails.
	if _, err := k.Unwrap(ctx, old, nil); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("Unwrap of the destroyed key's blob: %v, want ErrUnwrap", err)
	}
}
