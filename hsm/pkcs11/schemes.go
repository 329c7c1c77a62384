//go:build cgo

package pkcs11

// The wrapping schemes (hsm.Scheme) inside the HSM: reading the token's
// mechanism list, the CBC-HMAC scheme's MAC key ("<kek_label>-mac"), seal
// and open per scheme, and the wrap/unwrap self-test Open, InitKEK and Ping
// run.

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

// macKeyBytes is the HMAC-SHA256 key length (a generic secret).
const macKeyBytes = 32

func (p *PKCS11) macLabel() string { return p.kekLabel + "-mac" }

// Scheme is the wrapping scheme new wraps use, negotiated with the token
// at Open (or Config.ForceScheme).
func (p *PKCS11) Scheme() hsm.Scheme { return p.neg.scheme }

// readMechanisms reads the token's mechanism list with each mechanism's
// flags.
func (p *PKCS11) readMechanisms() (Mechanisms, error) {
	list, err := p.mod.GetMechanismList(p.slot)
	if err != nil {
		return nil, p.p11Error("C_GetMechanismList", err)
	}
	m := make(Mechanisms, len(list))
	for _, mech := range list {
		info, err := p.mod.GetMechanismInfo(p.slot, []*pkcs11.Mechanism{mech})
		if err != nil {
			continue // listed but not described: treat as absent
		}
		m[mech.Mechanism] = info.Flags
	}
	return m, nil
}

// negotiate reads the mechanism list and picks the scheme (or checks the
// forced one).
func (p *PKCS11) negotiate(force hsm.Scheme) error {
	m, err := p.readMechanisms()
	if err != nil {
		return err
	}
	n, err := m.negotiate(p.tokenLabel, force)
	if err != nil {
		return err
	}
	p.mechs, p.neg = m, n
	return nil
}

// kwpMech is the token's RFC 5649 mechanism (0 when it has none).
func (p *PKCS11) kwpMech() uint {
	n, missing := p.mechs.offers(hsm.SchemeAESKWP)
	if len(missing) > 0 {
		return 0
	}
	return n.kwpMech
}

// findMACKey finds the MAC key; absent is (0, false, nil). It must be a
// sensitive, non-extractable private token object.
func (p *PKCS11) findMACKey(ctx context.Context) (pkcs11.ObjectHandle, bool, error) {
	var h pkcs11.ObjectHandle
	var found bool
	err := p.withSession(ctx, "find MAC key", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.macLabel()),
		}
		if err := p.mod.FindObjectsInit(s, tmpl); err != nil {
			return false, p.p11Error("find MAC key: C_FindObjectsInit", err)
		}
		hs, _, err := p.mod.FindObjects(s, 2)
		if err != nil {
			_ = p.mod.FindObjectsFinal(s)
			return false, p.p11Error("find MAC key: C_FindObjects", err)
		}
		if err := p.mod.FindObjectsFinal(s); err != nil {
			return false, p.p11Error("find MAC key: C_FindObjectsFinal", err)
		}
		switch len(hs) {
		case 0:
			return true, nil
		case 1:
		default:
			return true, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: MAC key %q exists twice", p.tokenLabel, p.macLabel())
		}
		attrs, err := p.mod.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, nil),
		})
		if err != nil {
			return false, p.p11Error("read MAC key attributes", err)
		}
		want := map[uint]bool{pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SIGN: true, pkcs11.CKA_VERIFY: true}
		for _, a := range attrs {
			if boolAttr(a.Value) != want[a.Type] {
				return true, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: MAC key %q: attribute 0x%x is %v (want %v)", p.tokenLabel, p.macLabel(), a.Type, boolAttr(a.Value), want[a.Type])
			}
		}
		h, found = hs[0], true
		return true, nil
	})
	return h, found, err
}

// loadMACKey finds the MAC key and remembers it. The CBC-HMAC scheme
// needs it: without it Open fails with hsm.ErrKEKNotFound.
func (p *PKCS11) loadMACKey(ctx context.Context) error {
	h, ok, err := p.findMACKey(ctx)
	if err != nil {
		return err
	}
	if !ok && p.neg.scheme == hsm.SchemeAESCBCHMAC {
		return p.errorf(hsm.ErrKEKNotFound, nil, "token %q: scheme %s needs the MAC key %q (run 'vaultctl init')", p.tokenLabel, p.neg.scheme, p.macLabel())
	}
	p.mu.Lock()
	p.macKey, p.hasMAC = h, ok
	p.mu.Unlock()
	return nil
}

// createMACKey creates the MAC key unless it exists: a 256-bit generic
// secret, private, sensitive, never extractable, sign/verify only.
func (p *PKCS11) createMACKey(ctx context.Context) (created bool, err error) {
	if _, ok, err := p.findMACKey(ctx); err != nil || ok {
		return false, err
	}
	s, err := p.rwSession(ctx, "create MAC key")
	if err != nil {
		return false, err
	}
	defer func() { _ = p.mod.CloseSession(s) }()
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, macKeyBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.macLabel()),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte("vaultd-mac")),
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}
	if _, err := p.mod.GenerateKey(s, mech, tmpl); err != nil {
		return false, p.p11Error("create MAC key (HMAC-SHA256)", err)
	}
	p.logger.Info("hsm: MAC key created", "token", p.tokenLabel, "label", p.macLabel())
	return true, nil
}

// seal wraps plaintext under key with scheme s, binding aad. It returns the
// iv (none for KWP) and the ciphertext in the scheme's format.
func (p *PKCS11) seal(ctx context.Context, op string, s hsm.Scheme, key pkcs11.ObjectHandle, plaintext, aad []byte) (iv, ct []byte, err error) {
	switch s {
	case hsm.SchemeAESGCM:
		return p.gcmEncrypt(ctx, op, key, plaintext, aad)
	case hsm.SchemeAESKWP:
		ct, err := p.kwpEncrypt(ctx, op, key, plaintext, aad)
		return nil, ct, err
	case hsm.SchemeAESCBCHMAC:
		return p.cbcHMACEncrypt(ctx, op, key, plaintext, aad)
	}
	return nil, nil, p.errorf(hsm.ErrMechanism, nil, "%s: unknown scheme %d", op, s)
}

// unseal reverses seal. Authentication failures are hsm.ErrUnwrap; a
// scheme this token cannot run is hsm.ErrMechanism.
func (p *PKCS11) unseal(ctx context.Context, op string, s hsm.Scheme, key pkcs11.ObjectHandle, iv, ct, aad []byte) ([]byte, error) {
	if !p.mechs.canUnwrap(s) {
		// ErrUnwrap (this token cannot authenticate it; a flipped scheme
		// byte looks the same) with ErrMechanism as the cause.
		return nil, p.errorf(hsm.ErrUnwrap, hsm.ErrMechanism, "token %q: %s: blob wrapped with %s, which this token does not offer", p.tokenLabel, op, s)
	}
	switch s {
	case hsm.SchemeAESGCM:
		return p.gcmDecrypt(ctx, op, key, iv, ct, aad)
	case hsm.SchemeAESKWP:
		return p.kwpDecrypt(ctx, op, key, ct, aad)
	case hsm.SchemeAESCBCHMAC:
		return p.cbcHMACDecrypt(ctx, op, key, iv, ct, aad)
	}
	return nil, p.errorf(hsm.ErrUnwrap, nil, "%s: unknown scheme %d", op, s)
}

// kwpEncrypt: C_Encrypt with the RFC 5649 mechanism over KWPInput(aad,
// plaintext). The output length is checked against RFC 5649's (a
// CKM_AES_KEY_WRAP_PAD that pads PKCS#7-style before RFC 3394 writes 8
// bytes more for block-aligned input), so another padding is refused.
func (p *PKCS11) kwpEncrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, plaintext, aad []byte) ([]byte, error) {
	in := hsm.KWPInput(aad, plaintext)
	defer clear(in)
	var ct []byte
	err := p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(p.kwpMech(), nil)}
		if err := p.mod.EncryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_EncryptInit (AES-KWP)", err)
		}
		out, err := p.mod.Encrypt(s, in)
		if err != nil {
			return false, p.p11Error(op+": C_Encrypt (AES-KWP)", err)
		}
		if want := (len(in)+7)/8*8 + 8; len(out) != want {
			return true, p.errorf(hsm.ErrMechanism, nil, "token %q: %s: AES-KWP returned %d bytes for %d, want %d (not RFC 5649)", p.tokenLabel, op, len(out), len(in), want)
		}
		ct = out
		return true, nil
	})
	return ct, err
}

func (p *PKCS11) kwpDecrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, ct, aad []byte) ([]byte, error) {
	var pt []byte
	err := p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(p.kwpMech(), nil)}
		if err := p.mod.DecryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_DecryptInit (AES-KWP)", err)
		}
		out, err := p.mod.Decrypt(s, ct)
		if err != nil {
			return p.decryptFailed(s, op, err)
		}
		k, ok := hsm.KWPOpen(aad, out)
		if !ok {
			clear(out)
			return true, p.errorf(hsm.ErrUnwrap, nil, "%s: authentication failed (context)", op)
		}
		pt = append([]byte{}, k...)
		clear(out)
		return true, nil
	})
	return pt, err
}

// cbcHMACEncrypt: CKM_AES_CBC_PAD of hsm.CBCKeyCheck || plaintext under
// key with a random iv, then CKM_SHA256_HMAC under the MAC key over
// CBCHMACInput(aad, iv, ct).
func (p *PKCS11) cbcHMACEncrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, plaintext, aad []byte) (iv, ct []byte, err error) {
	mac, err := p.macHandle(op)
	if err != nil {
		return nil, nil, err
	}
	plaintext = append([]byte(hsm.CBCKeyCheck), plaintext...)
	defer clear(plaintext)
	iv = make([]byte, hsm.CBCIVSize)
	_, _ = rand.Read(iv)
	err = p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CBC_PAD, iv)}
		if err := p.mod.EncryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_EncryptInit (AES-CBC-PAD)", err)
		}
		out, err := p.mod.Encrypt(s, plaintext)
		if err != nil {
			return false, p.p11Error(op+": C_Encrypt (AES-CBC-PAD)", err)
		}
		if len(out) != (len(plaintext)/16+1)*16 { // plaintext has the check block
			return false, p.errorf(hsm.ErrUnavailable, nil, "token %q: %s: AES-CBC-PAD returned %d bytes for %d", p.tokenLabel, op, len(out), len(plaintext))
		}
		hm := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}
		if err := p.mod.SignInit(s, hm, mac); err != nil {
			return false, p.p11Error(op+": C_SignInit (SHA256-HMAC)", err)
		}
		tag, err := p.mod.Sign(s, hsm.CBCHMACInput(aad, iv, out))
		if err != nil {
			return false, p.p11Error(op+": C_Sign (SHA256-HMAC)", err)
		}
		if len(tag) != hsm.HMACSize {
			return false, p.errorf(hsm.ErrUnavailable, nil, "token %q: %s: HMAC of %d bytes", p.tokenLabel, op, len(tag))
		}
		ct = append(out, tag...)
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return iv, ct, nil
}

// cbcHMACDecrypt verifies the MAC (C_Verify) before it decrypts anything.
func (p *PKCS11) cbcHMACDecrypt(ctx context.Context, op string, key pkcs11.ObjectHandle, iv, ct, aad []byte) ([]byte, error) {
	mac, err := p.macHandle(op)
	if err != nil {
		return nil, err
	}
	body, tag := ct[:len(ct)-hsm.HMACSize], ct[len(ct)-hsm.HMACSize:]
	var pt []byte
	err = p.withSession(ctx, op, func(s pkcs11.SessionHandle) (bool, error) {
		hm := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}
		if err := p.mod.VerifyInit(s, hm, mac); err != nil {
			return false, p.p11Error(op+": C_VerifyInit (SHA256-HMAC)", err)
		}
		if err := p.mod.Verify(s, hsm.CBCHMACInput(aad, iv, body), tag); err != nil {
			var code pkcs11.Error
			if errors.As(err, &code) && (code == pkcs11.CKR_SIGNATURE_INVALID || code == pkcs11.CKR_SIGNATURE_LEN_RANGE) {
				return true, p.errorf(hsm.ErrUnwrap, nil, "%s: authentication failed", op)
			}
			return false, p.p11Error(op+": C_Verify (SHA256-HMAC)", err)
		}
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CBC_PAD, iv)}
		if err := p.mod.DecryptInit(s, mech, key); err != nil {
			return false, p.p11Error(op+": C_DecryptInit (AES-CBC-PAD)", err)
		}
		out, err := p.mod.Decrypt(s, body)
		if err != nil {
			// Authenticated, so not tampered: another key (an older KEK
			// version, a re-created tenant key) is the likely cause.
			return p.decryptFailed(s, op, err)
		}
		n := len(hsm.CBCKeyCheck)
		if len(out) < n || subtle.ConstantTimeCompare(out[:n], []byte(hsm.CBCKeyCheck)) != 1 {
			clear(out)
			return true, p.errorf(hsm.ErrUnwrap, nil, "%s: authentication failed (encrypted under another key)", op)
		}
		pt = append([]byte{}, out[n:]...)
		clear(out)
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

func (p *PKCS11) macHandle(op string) (pkcs11.ObjectHandle, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.hasMAC {
		return 0, p.errorf(hsm.ErrKEKNotFound, nil, "token %q: %s: no MAC key %q (run 'vaultctl init')", p.tokenLabel, op, p.macLabel())
	}
	return p.macKey, nil
}

// decryptFailed classifies a failed C_Decrypt: an authentication failure
// is hsm.ErrUnwrap, anything else hsm.ErrUnavailable.
func (p *PKCS11) decryptFailed(s pkcs11.SessionHandle, op string, err error) (bool, error) {
	var code pkcs11.Error
	errors.As(err, &code)
	switch code {
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_SIGNATURE_INVALID, ckrAEADDecryptFailed, pkcs11.CKR_WRAPPED_KEY_INVALID:
		return true, p.errorf(hsm.ErrUnwrap, nil, "%s: authentication failed", op)
	case pkcs11.CKR_GENERAL_ERROR:
		// SoftHSMv2 reports a GCM tag mismatch as CKR_GENERAL_ERROR.
		// Tell it from a sick device by asking the same session
		// whether it is still logged in.
		if p.sessionLoggedIn(s) {
			return true, p.errorf(hsm.ErrUnwrap, nil, "%s: authentication failed", op)
		}
	}
	return false, p.p11Error(op+": C_Decrypt", err)
}

// selfTest wraps and unwraps a random key under the current KEK with the
// negotiated scheme, and does the same under a throwaway session AES key
// made like a tenant key (the tenant-key path), so a token that lists a
// mechanism it cannot run fails here, before vaultd says it is ready, and
// not at the first tenant. A mechanism the token refuses is
// hsm.ErrMechanism, in one line.
func (p *PKCS11) selfTest(ctx context.Context, tenantPath bool) error {
	_, kek := p.currentKEK()
	if err := p.roundTrip(ctx, "self-test (KEK)", kek); err != nil {
		return p.selfTestError(err)
	}
	if !tenantPath {
		return nil
	}
	var h pkcs11.ObjectHandle
	err := p.withSession(ctx, "self-test (tenant key)", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := tenantTemplate("vaultd-self-test", "self-test")
		for i, a := range tmpl {
			if a.Type == pkcs11.CKA_TOKEN {
				tmpl[i] = pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)
			}
		}
		var err error
		if h, err = p.generateTenantKey(s, tmpl); err != nil {
			return false, p.p11Error("self-test: generate a session AES-256 key", err)
		}
		return true, nil
	})
	if err != nil {
		return p.selfTestError(err)
	}
	// A session object lives as long as its session; destroy it now
	// rather than leave it in a pooled session.
	defer func() {
		_ = p.withSession(context.WithoutCancel(ctx), "self-test: destroy", func(s pkcs11.SessionHandle) (bool, error) {
			return true, p.mod.DestroyObject(s, h)
		})
	}()
	if err := p.roundTrip(ctx, "self-test (tenant key)", h); err != nil {
		return p.selfTestError(err)
	}
	return nil
}

// roundTrip wraps 32 random bytes under key and unwraps them.
func (p *PKCS11) roundTrip(ctx context.Context, op string, key pkcs11.ObjectHandle) error {
	pt := make([]byte, 32)
	_, _ = rand.Read(pt)
	aad := []byte("vaultd/self-test")
	iv, ct, err := p.seal(ctx, op, p.neg.scheme, key, pt, aad)
	if err != nil {
		return err
	}
	back, err := p.unseal(ctx, op, p.neg.scheme, key, iv, ct, aad)
	if err != nil {
		return err
	}
	defer clear(back)
	if string(back) != string(pt) {
		return p.errorf(hsm.ErrMechanism, nil, "token %q: %s: %s round trip returned other bytes", p.tokenLabel, op, p.neg.scheme)
	}
	return nil
}

// selfTestError turns a mechanism the token refuses into hsm.ErrMechanism
// with the one-line explanation; other failures (device away) stay.
func (p *PKCS11) selfTestError(err error) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID,
			pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT,
			pkcs11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CKR_TEMPLATE_INCONSISTENT,
			pkcs11.CKR_ATTRIBUTE_VALUE_INVALID:
			return &hsm.Error{Kind: hsm.ErrMechanism, Msg: fmt.Sprintf(
				"hsm: token %q lists %s but refuses it (%s); vaultd needs one of AES-GCM, AES-KWP, AES-CBC-PAD+SHA256-HMAC working",
				p.tokenLabel, p.neg.scheme, code.Error())}
		}
	}
	if errors.Is(err, hsm.ErrUnwrap) {
		return &hsm.Error{Kind: hsm.ErrMechanism, Msg: fmt.Sprintf(
			"hsm: token %q: %s wrap/unwrap self-test failed to authenticate; vaultd needs one of AES-GCM, AES-KWP, AES-CBC-PAD+SHA256-HMAC working", p.tokenLabel, p.neg.scheme)}
	}
	return err
}
