//go:build cgo

package pkcs11

// Wrap and Unwrap under a KEK version with the negotiated scheme
// (schemes.go). gcmEncrypt and gcmDecrypt are the raw CKM_AES_GCM calls in
// a pooled session, shared with the tenant keys (tenant.go).

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
)

const (
	gcmNonceSize = 12
	gcmTagBits   = 128
	gcmTagSize   = gcmTagBits / 8

	// ckrAEADDecryptFailed is PKCS#11 v3.0's tag-mismatch code (absent from
	// miekg/pkcs11's v2.40 constants).
	ckrAEADDecryptFailed = pkcs11.Error(0x00000035)
)

// Wrap implements hsm.Keyring: the negotiated scheme under the current
// KEK, inside the HSM; the result records the scheme (hsm.WrappedKeyNonce).
func (p *PKCS11) Wrap(ctx context.Context, plaintext, aad []byte) (hsm.WrappedKey, error) {
	if err := p.enter(ctx, "wrap"); err != nil {
		return hsm.WrappedKey{}, err
	}
	defer p.life.RUnlock()
	version, kek := p.currentKEK()
	iv, ct, err := p.seal(ctx, "wrap", p.neg.scheme, kek, plaintext, aad)
	if err != nil {
		return hsm.WrappedKey{}, err
	}
	return hsm.WrappedKey{KEKVersion: version, Nonce: hsm.WrappedKeyNonce(p.neg.scheme, iv), Ciphertext: ct}, nil
}

// gcmEncrypt encrypts plaintext under key with CKM_AES_GCM (random 12-byte
// IV, 128-bit tag, aad) in a pooled session. It returns the IV actually used
// and ciphertext||tag.
func (p *PKCS11) gcmEncrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, plaintext, aad []byte) (nonce, ct []byte, err error) {
	nonce = make([]byte, gcmNonceSize)
	_, _ = rand.Read(nonce) // crypto/rand does not fail; it crashes the program instead
	err = p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := p.mod.EncryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_EncryptInit", err)
		}
		out, err := p.mod.Encrypt(s, plaintext)
		if err != nil {
			return false, p.p11Error(op+": C_Encrypt", err)
		}
		if len(out) != len(plaintext)+gcmTagSize {
			return false, p.errorf(hsm.ErrUnavailable, nil, "token %q: %s: HSM returned %d bytes for %d", p.tokenLabel, op, len(out), len(plaintext))
		}
		// Some HSMs (CloudHSM, FIPS-mode firmware) replace the caller's IV
		// with their own and write it back; store the one actually used.
		if iv := params.IV(); !bytes.Equal(iv, nonce) {
			if len(iv) != gcmNonceSize {
				return false, p.errorf(hsm.ErrUnavailable, nil, "token %q: %s: HSM used a %d-byte IV", p.tokenLabel, op, len(iv))
			}
			nonce = iv
		}
		ct = out
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return nonce, ct, nil
}

// Unwrap implements hsm.Keyring. A blob that fails authentication (tampered,
// other AAD, other KEK, unknown version, malformed) fails with hsm.ErrUnwrap;
// an HSM that does not answer fails with hsm.ErrUnavailable.
func (p *PKCS11) Unwrap(ctx context.Context, w hsm.WrappedKey, aad []byte) (secret.Bytes, error) {
	if err := p.enter(ctx, "unwrap"); err != nil {
		return secret.Bytes{}, err
	}
	defer p.life.RUnlock()
	scheme, iv, err := hsm.ParseWrappedKey(w)
	if err != nil {
		return secret.Bytes{}, err
	}
	kek, ok := p.kek(w.KEKVersion)
	if !ok {
		return secret.Bytes{}, p.errorf(hsm.ErrUnwrap, nil, "unwrap: unknown KEK version %d", w.KEKVersion)
	}
	pt, err := p.unseal(ctx, "unwrap", scheme, kek, iv, w.Ciphertext, aad)
	if err != nil {
		if errors.Is(err, hsm.ErrUnwrap) {
			return secret.Bytes{}, p.errorf(hsm.ErrUnwrap, nil, "unwrap: authentication failed (KEK version %d, %s)", w.KEKVersion, scheme)
		}
		return secret.Bytes{}, err
	}
	return secret.NewBytes(pt), nil
}

// gcmDecrypt decrypts ct (ciphertext||tag) under key with CKM_AES_GCM in a
// pooled session. A tag mismatch fails with hsm.ErrUnwrap; any other
// failure with hsm.ErrUnavailable (its pkcs11.Error reachable by errors.As).
func (p *PKCS11) gcmDecrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, nonce, ct, aad []byte) ([]byte, error) {
	var pt []byte
	err := p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if err := p.mod.DecryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_DecryptInit", err)
		}
		out, err := p.mod.Decrypt(s, ct)
		if err != nil {
			return p.decryptFailed(s, op, err)
		}
		pt = out
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}
