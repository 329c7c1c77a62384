package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/vaultd/vaultd/hsm"
)

// runOptionalSuites runs the suite part of every optional interface the
// keyrings from newKeyring implement, and only those: a backend that gains
// one cannot skip its checks. open is RunKeyringSuite's (it closes).
func runOptionalSuites(t *testing.T, newKeyring func(t *testing.T) hsm.Keyring, open func(t *testing.T) hsm.Keyring) {
	t.Helper()
	probe := newKeyring(t)
	_, rotator := probe.(hsm.KEKRotator)
	_, reloader := probe.(hsm.Reloader)
	_, inspector := probe.(hsm.KEKInspector)
	_, signer := probe.(hsm.AuditSigner)
	_, tenants := probe.(hsm.TenantKeyring)
	if err := probe.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if rotator {
		t.Run("KEKRotator", func(t *testing.T) { kekRotatorSuite(t, open) })
	}
	if reloader {
		t.Run("Reloader", func(t *testing.T) { reloaderSuite(t, open) })
	}
	if inspector {
		t.Run("KEKInspector", func(t *testing.T) { kekInspectorSuite(t, open) })
	}
	if signer {
		t.Run("AuditSigner", func(t *testing.T) { auditSignerSuite(t, open) })
	}
	if tenants {
		t.Run("TenantKeyring", func(t *testing.T) { tenantKeyringSuite(t, open) })
	}
}

func kekRotatorSuite(t *testing.T, open func(t *testing.T) hsm.Keyring) {
	k := open(t)
	r := k.(hsm.KEKRotator)
	ctx := context.Background()
	pt, aad := randBytes(32), []byte("tenant=acme\x00dek=1")
	old, err := k.Wrap(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.RotateKEK(ctx)
	if err != nil || v <= old.KEKVersion || k.CurrentVersion() != v {
		t.Fatalf("RotateKEK = %d, %v; current %d; want > %d and current", v, err, k.CurrentVersion(), old.KEKVersion)
	}
	nw, err := k.Wrap(ctx, pt, aad)
	if err != nil || nw.KEKVersion != v {
		t.Fatalf("Wrap after rotation: version %d, %v; want %d", nw.KEKVersion, err, v)
	}
	for _, w := range []hsm.WrappedKey{old, nw} {
		if got, err := k.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got.Reveal(), pt) {
			t.Fatalf("Unwrap of a version-%d blob after rotation: %v", w.KEKVersion, err)
		}
	}
	// Versions are distinct keys: a new blob relabelled old does not open.
	relabelled := clone(nw)
	relabelled.KEKVersion = old.KEKVersion
	if _, err := k.Unwrap(ctx, relabelled, aad); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("new blob under the old version: err = %v, want ErrUnwrap", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.RotateKEK(cancelled); !errors.Is(err, context.Canceled) || k.CurrentVersion() != v {
		t.Errorf("RotateKEK(cancelled): err = %v, current %d; want context.Canceled, %d", err, k.CurrentVersion(), v)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RotateKEK(ctx); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("RotateKEK after Close: err = %v, want ErrClosed", err)
	}
}

func reloaderSuite(t *testing.T, open func(t *testing.T) hsm.Keyring) {
	k := open(t)
	r := k.(hsm.Reloader)
	ctx := context.Background()
	w, err := k.Wrap(ctx, randBytes(32), nil)
	if err != nil {
		t.Fatal(err)
	}
	v := k.CurrentVersion()
	if err := r.Reload(ctx); err != nil || k.CurrentVersion() != v {
		t.Fatalf("Reload = %v, current %d; want nil, %d", err, k.CurrentVersion(), v)
	}
	if _, err := k.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("Unwrap after Reload: %v", err)
	}
	if rot, ok := k.(hsm.KEKRotator); ok {
		nv, err := rot.RotateKEK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(ctx); err != nil || k.CurrentVersion() != nv {
			t.Fatalf("Reload after rotation = %v, current %d; want nil, %d", err, k.CurrentVersion(), nv)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.Reload(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Reload(cancelled): err = %v, want context.Canceled", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(ctx); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Reload after Close: err = %v, want ErrClosed", err)
	}
}

func kekInspectorSuite(t *testing.T, open func(t *testing.T) hsm.Keyring) {
	k := open(t)
	in := k.(hsm.KEKInspector)
	ctx := context.Background()
	check := func() []hsm.KEKInfo {
		t.Helper()
		infos, err := in.KEKInfo(ctx)
		if err != nil || len(infos) == 0 {
			t.Fatalf("KEKInfo = %+v, %v; want at least one KEK", infos, err)
		}
		for i, ki := range infos {
			if i > 0 && ki.Version <= infos[i-1].Version {
				t.Errorf("KEKInfo not oldest first: %d after %d", ki.Version, infos[i-1].Version)
			}
			// The policy every usable KEK meets.
			if ki.KeyType != "AES" || ki.Bytes != 32 || !ki.Sensitive || ki.Extractable || !ki.Encrypt || !ki.Decrypt {
				t.Errorf("KEK version %d breaks the KEK policy: %+v", ki.Version, ki)
			}
		}
		if last := infos[len(infos)-1].Version; last != k.CurrentVersion() {
			t.Errorf("newest listed version %d, current %d", last, k.CurrentVersion())
		}
		return infos
	}
	before := check()
	if rot, ok := k.(hsm.KEKRotator); ok {
		if _, err := rot.RotateKEK(ctx); err != nil {
			t.Fatal(err)
		}
		if after := check(); len(after) != len(before)+1 {
			t.Errorf("KEKInfo lists %d versions after a rotation, want %d", len(after), len(before)+1)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := in.KEKInfo(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("KEKInfo(cancelled): err = %v, want context.Canceled", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := in.KEKInfo(ctx); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("KEKInfo after Close: err = %v, want ErrClosed", err)
	}
}

func auditSignerSuite(t *testing.T, open func(t *testing.T) hsm.Keyring) {
	k := open(t)
	s := k.(hsm.AuditSigner)
	ctx := context.Background()
	pub, err := s.AuditPublicKey(ctx)
	if err != nil {
		t.Fatalf("AuditPublicKey: %v", err)
	}
	// ECDSA P-256 where the token has EC, else RSA-PSS (3072 bits or more).
	var verify func(sig, digest []byte) bool
	var sigLen int
	switch key := pub.(type) {
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() {
			t.Fatalf("AuditPublicKey is ECDSA on %s, want P-256", key.Curve.Params().Name)
		}
		sigLen = 64
		verify = func(sig, digest []byte) bool {
			if len(sig) != 64 {
				return false
			}
			r, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			return ecdsa.Verify(key, digest, r, ss)
		}
	case *rsa.PublicKey:
		if key.N.BitLen() < 3072 {
			t.Fatalf("AuditPublicKey is RSA-%d, want at least 3072 bits", key.N.BitLen())
		}
		sigLen = key.Size()
		verify = func(sig, digest []byte) bool {
			return rsa.VerifyPSS(key, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}) == nil
		}
	default:
		t.Fatalf("AuditPublicKey = %T, want ECDSA P-256 or RSA", pub)
	}
	again, err := s.AuditPublicKey(ctx)
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); err != nil || !ok || !eq.Equal(again) {
		t.Fatalf("second AuditPublicKey differs (%v)", err)
	}
	digest := sha256.Sum256([]byte("vaultd audit checkpoint suite"))
	sig, err := s.SignAudit(ctx, digest[:])
	if err != nil {
		t.Fatalf("SignAudit: %v", err)
	}
	if len(sig) != sigLen {
		t.Fatalf("signature is %d bytes, want %d", len(sig), sigLen)
	}
	if !verify(sig, digest[:]) {
		t.Fatal("signature does not verify under AuditPublicKey")
	}
	other := sha256.Sum256([]byte("another message"))
	if verify(sig, other[:]) {
		t.Error("signature verifies over another digest")
	}
	bad := bytes.Clone(sig)
	bad[10] ^= 1
	if verify(bad, digest[:]) {
		t.Error("tampered signature verifies")
	}
	if _, err := s.SignAudit(ctx, digest[:31]); err == nil {
		t.Error("SignAudit of a 31-byte digest succeeded, want an error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.SignAudit(cancelled, digest[:]); !errors.Is(err, context.Canceled) {
		t.Errorf("SignAudit(cancelled): err = %v, want context.Canceled", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SignAudit(ctx, digest[:]); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("SignAudit after Close: err = %v, want ErrClosed", err)
	}
	if _, err := s.AuditPublicKey(ctx); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("AuditPublicKey after Close: err = %v, want ErrClosed", err)
	}
}
