//go:build cgo

package pkcs11

// The audit signing key: a key pair labelled "<kek_label>-audit" whose
// private half is sensitive and never extractable. vaultd signs audit
// checkpoints with it (hsm.AuditSigner); InitAuditKey ('vaultctl init')
// creates it. ECDSA P-256 where the token has EC; else RSA-PSS 3072
// (openCryptoki's soft token and other tokens without EC), signed with
// CKM_RSA_PKCS_PSS over the SHA-256 digest, MGF1-SHA256, 32-byte salt.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

var _ hsm.AuditSigner = (*PKCS11)(nil)

// p256OID is the DER of the prime256v1 OID, CKA_EC_PARAMS of a P-256 key.
var p256OID = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// auditKeyID is CKA_ID of both halves, so tools list them as a pair.
var auditKeyID = []byte("vaultd-audit")

// The audit key kinds InitAuditKeyAlg takes; the names are the checkpoint
// algorithms (vaultd/audit's AlgES256, AlgPS256).
const (
	AuditKeyAuto = ""      // ECDSA P-256 where the token has EC, else RSA-PSS 3072
	AuditKeyEC   = "ES256" // ECDSA P-256, CKM_ECDSA
	AuditKeyRSA  = "PS256" // RSA 3072, CKM_RSA_PKCS_PSS (SHA-256, MGF1-SHA256, salt 32)
)

// auditRSABits is the modulus size of a created RSA audit key; a smaller
// one found on the token is refused.
const auditRSABits = 3072

// pssSaltLen is the PSS salt length: the digest's size, as JWS PS256 has it.
const pssSaltLen = 32

func (p *PKCS11) auditLabel() string { return p.kekLabel + "-audit" }

// InitAuditKey creates the audit signing key pair labelled
// cfg.KEKLabel+"-audit" unless it exists, in which case it changes nothing
// and reports created=false. A half-present or policy-breaking key fails
// with hsm.ErrAuditKeyInvalid rather than being replaced. The kind is the
// token's choice (AuditKeyAuto).
func InitAuditKey(ctx context.Context, cfg Config, logger *slog.Logger) (created bool, err error) {
	return InitAuditKeyAlg(ctx, cfg, logger, AuditKeyAuto)
}

// InitAuditKeyAlg is InitAuditKey with the key kind chosen: AuditKeyAuto,
// AuditKeyEC or AuditKeyRSA (tests force RSA on a token that has EC). A
// kind the token lacks fails with hsm.ErrAuditKeyInvalid. An existing key
// is kept whatever its kind.
func InitAuditKeyAlg(ctx context.Context, cfg Config, logger *slog.Logger, alg string) (created bool, err error) {
	switch alg {
	case AuditKeyAuto, AuditKeyEC, AuditKeyRSA:
	default:
		return false, fmt.Errorf("hsm: audit key kind %q: want %q, %q or empty", alg, AuditKeyEC, AuditKeyRSA)
	}
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return false, err
	}
	defer func() { _ = p.Close() }()
	switch _, _, err := p.auditPrivate(ctx); {
	case err == nil:
		_, err := p.auditPublic(ctx)
		return false, err
	case !errors.Is(err, hsm.ErrAuditKeyNotFound):
		return false, err
	}
	if _, err := p.findAudit(ctx, pkcs11.CKO_PUBLIC_KEY); err == nil {
		return false, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: a public key labelled %q exists without its private key; remove it and run 'vaultctl init' again", p.tokenLabel, p.auditLabel())
	}
	if alg == AuditKeyAuto {
		if alg, err = p.auditKeyKind(); err != nil {
			return false, err
		}
	}
	if err := p.generateAuditKey(ctx, alg); err != nil {
		return false, err
	}
	if _, _, err := p.auditPrivate(ctx); err != nil {
		return false, err
	}
	if _, err := p.auditPublic(ctx); err != nil {
		return false, err
	}
	p.logger.Info("hsm: audit signing key created", "token", p.tokenLabel, "label", p.auditLabel(), "alg", alg)
	return true, nil
}

// auditKeyKind picks the audit key the token can make and sign with: EC
// first (smaller, faster), RSA-PSS on a token without it.
func (p *PKCS11) auditKeyKind() (string, error) {
	mechs, err := p.mod.GetMechanismList(p.slot)
	if err != nil {
		return "", p.p11Error("audit key: C_GetMechanismList", err)
	}
	has := func(want ...uint) bool {
		for _, w := range want {
			if !slices.ContainsFunc(mechs, func(m *pkcs11.Mechanism) bool { return m.Mechanism == w }) {
				return false
			}
		}
		return true
	}
	switch {
	case has(pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKM_ECDSA):
		return AuditKeyEC, nil
	case has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKM_RSA_PKCS_PSS):
		return AuditKeyRSA, nil
	}
	return "", p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: no mechanism for an audit signing key (needs CKM_EC_KEY_PAIR_GEN and CKM_ECDSA, or CKM_RSA_PKCS_KEY_PAIR_GEN and CKM_RSA_PKCS_PSS)", p.tokenLabel)
}

func (p *PKCS11) generateAuditKey(ctx context.Context, alg string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: generate audit key: %w", err)
	}
	// Creating token objects needs a read-write session; the pool's are
	// read-only. The login is the module's, shared by every session.
	s, err := p.mod.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return p.p11Error("generate audit key: open read-write session", err)
	}
	defer func() { _ = p.mod.CloseSession(s) }()
	label := p.auditLabel()
	keyType, gen, what := uint(pkcs11.CKK_EC), uint(pkcs11.CKM_EC_KEY_PAIR_GEN), "EC P-256"
	pubKind := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256OID)}
	if alg == AuditKeyRSA {
		keyType, gen, what = pkcs11.CKK_RSA, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, "RSA 3072"
		pubKind = []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, auditRSABits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		}
	}
	pub := append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, auditKeyID),
	}, pubKind...)
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, auditKeyID),
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(gen, nil)}
	if _, _, err := p.mod.GenerateKeyPair(s, mech, pub, priv); err != nil {
		return p.p11Error("generate audit key ("+what+")", err)
	}
	return nil
}

// findAudit returns the one token object of class labelled auditLabel:
// hsm.ErrAuditKeyNotFound without one, hsm.ErrAuditKeyInvalid with several.
func (p *PKCS11) findAudit(ctx context.Context, class uint) (pkcs11.ObjectHandle, error) {
	var h pkcs11.ObjectHandle
	err := p.withSession(ctx, "find audit key", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.auditLabel()),
		}
		if err := p.mod.FindObjectsInit(s, tmpl); err != nil {
			return false, p.p11Error("find audit key: C_FindObjectsInit", err)
		}
		hs, _, err := p.mod.FindObjects(s, 2)
		if err != nil {
			_ = p.mod.FindObjectsFinal(s)
			return false, p.p11Error("find audit key: C_FindObjects", err)
		}
		if err := p.mod.FindObjectsFinal(s); err != nil {
			return false, p.p11Error("find audit key: C_FindObjectsFinal", err)
		}
		switch len(hs) {
		case 0:
			return true, p.errorf(hsm.ErrAuditKeyNotFound, nil, "token %q: no audit signing key labelled %q (run 'vaultctl init')", p.tokenLabel, p.auditLabel())
		case 1:
			h = hs[0]
			return true, nil
		}
		return true, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: several objects of one class labelled %q", p.tokenLabel, p.auditLabel())
	})
	return h, err
}

// auditPrivate finds the private key and checks its policy; kind is
// AuditKeyEC or AuditKeyRSA.
func (p *PKCS11) auditPrivate(ctx context.Context) (h pkcs11.ObjectHandle, kind string, err error) {
	h, err = p.findAudit(ctx, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return 0, "", err
	}
	err = p.withSession(ctx, "read audit key attributes", func(s pkcs11.SessionHandle) (bool, error) {
		attrs, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
		})
		if err != nil {
			return false, p.p11Error("read audit key attributes", err)
		}
		var bad []string
		for _, a := range attrs {
			switch a.Type {
			case pkcs11.CKA_KEY_TYPE:
				// CKK_RSA is 0, so an unreadable value must not fall into it.
				switch kt, ok := ulong(a.Value); {
				case !ok:
					bad = append(bad, "unreadable CKA_KEY_TYPE")
				case kt == pkcs11.CKK_EC:
					kind = AuditKeyEC
				case kt == pkcs11.CKK_RSA:
					kind = AuditKeyRSA
				default:
					bad = append(bad, "neither an EC nor an RSA key")
				}
			case pkcs11.CKA_SENSITIVE:
				if !boolAttr(a.Value) {
					bad = append(bad, "CKA_SENSITIVE=false")
				}
			case pkcs11.CKA_EXTRACTABLE:
				if boolAttr(a.Value) {
					bad = append(bad, "CKA_EXTRACTABLE=true")
				}
			case pkcs11.CKA_SIGN:
				if !boolAttr(a.Value) {
					bad = append(bad, "CKA_SIGN=false")
				}
			}
		}
		if len(bad) > 0 {
			return true, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q: %v", p.tokenLabel, p.auditLabel(), bad)
		}
		return true, nil
	})
	return h, kind, err
}

// auditPublic reads the public key. EC: CKA_EC_PARAMS must name P-256 and
// CKA_EC_POINT hold an uncompressed point (DER OCTET STRING, or bare as
// some modules return it). RSA: CKA_MODULUS of at least 3072 bits and
// CKA_PUBLIC_EXPONENT.
func (p *PKCS11) auditPublic(ctx context.Context) (crypto.PublicKey, error) {
	h, err := p.findAudit(ctx, pkcs11.CKO_PUBLIC_KEY)
	if err != nil {
		return nil, err
	}
	var pub crypto.PublicKey
	err = p.withSession(ctx, "read audit public key", func(s pkcs11.SessionHandle) (bool, error) {
		kt, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
		if err != nil {
			return false, p.p11Error("read audit public key type", err)
		}
		var keyType uint64
		ok := len(kt) == 1
		if ok {
			keyType, ok = ulong(kt[0].Value)
		}
		switch {
		case ok && keyType == pkcs11.CKK_EC:
			pub, err = p.ecPublic(s, h)
		case ok && keyType == pkcs11.CKK_RSA:
			pub, err = p.rsaPublic(s, h)
		default:
			return true, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit public key %q is neither EC nor RSA", p.tokenLabel, p.auditLabel())
		}
		return !errors.Is(err, hsm.ErrUnavailable), err
	})
	return pub, err
}

func (p *PKCS11) ecPublic(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, p.p11Error("read audit public key", err)
	}
	var params, point []byte
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_EC_PARAMS:
			params = a.Value
		case pkcs11.CKA_EC_POINT:
			point = a.Value
		}
	}
	if !bytes.Equal(params, p256OID) {
		return nil, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q is not on curve P-256", p.tokenLabel, p.auditLabel())
	}
	if len(point) == 67 && point[0] == 0x04 && point[1] == 65 {
		point = point[2:]
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, p.errorf(hsm.ErrAuditKeyInvalid, err, "token %q: audit key %q: bad CKA_EC_POINT", p.tokenLabel, p.auditLabel())
	}
	return k, nil
}

func (p *PKCS11) rsaPublic(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (*rsa.PublicKey, error) {
	attrs, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return nil, p.p11Error("read audit public key", err)
	}
	var n, e []byte
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_MODULUS:
			n = a.Value
		case pkcs11.CKA_PUBLIC_EXPONENT:
			e = a.Value
		}
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
	eb := new(big.Int).SetBytes(e)
	if !eb.IsInt64() || eb.Int64() < 3 || eb.Int64() > 1<<31-1 || eb.Bit(0) == 0 {
		return nil, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q: bad CKA_PUBLIC_EXPONENT", p.tokenLabel, p.auditLabel())
	}
	k.E = int(eb.Int64())
	if k.N.BitLen() < auditRSABits {
		return nil, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q: RSA modulus of %d bits, want at least %d", p.tokenLabel, p.auditLabel(), k.N.BitLen(), auditRSABits)
	}
	return k, nil
}

// SignAudit implements hsm.AuditSigner, inside the HSM: with an EC key
// CKM_ECDSA over digest, the result raw r||s (64 bytes); with an RSA key
// CKM_RSA_PKCS_PSS over digest (SHA-256, MGF1-SHA256, 32-byte salt), the
// result as long as the modulus.
func (p *PKCS11) SignAudit(ctx context.Context, digest []byte) ([]byte, error) {
	if err := p.enter(ctx, "sign audit checkpoint"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	if len(digest) != 32 {
		return nil, fmt.Errorf("hsm: sign audit checkpoint: digest is %d bytes, want 32", len(digest))
	}
	h, kind, err := p.auditPrivate(ctx)
	if err != nil {
		return nil, err
	}
	mech := pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)
	okLen := func(n int) bool { return n == 64 }
	if kind == AuditKeyRSA {
		// Not CKM_SHA256_RSA_PKCS_PSS: the caller hashed already, and that
		// mechanism would hash again.
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pssSaltLen))
		okLen = func(n int) bool { return n >= auditRSABits/8 }
	}
	var sig []byte
	err = p.withSession(ctx, "sign audit checkpoint", func(s pkcs11.SessionHandle) (bool, error) {
		if err := p.mod.SignInit(s, []*pkcs11.Mechanism{mech}, h); err != nil {
			return false, p.p11Error("sign audit checkpoint: C_SignInit", err)
		}
		out, err := p.mod.Sign(s, digest)
		if err != nil {
			return false, p.p11Error("sign audit checkpoint: C_Sign", err)
		}
		if !okLen(len(out)) {
			return true, p.errorf(hsm.ErrUnavailable, nil, "token %q: sign audit checkpoint: %s signature of %d bytes", p.tokenLabel, kind, len(out))
		}
		sig = out
		return true, nil
	})
	return sig, err
}

// AuditPublicKey implements hsm.AuditSigner.
func (p *PKCS11) AuditPublicKey(ctx context.Context) (crypto.PublicKey, error) {
	if err := p.enter(ctx, "audit public key"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	// The private half must be there and sound too: a public key alone
	// signs nothing.
	_, kind, err := p.auditPrivate(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := p.auditPublic(ctx)
	if err != nil {
		return nil, err
	}
	// Halves of different kinds would sign what no one can verify.
	if _, isRSA := pub.(*rsa.PublicKey); isRSA != (kind == AuditKeyRSA) {
		return nil, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q: the private key is %s, the public key is not", p.tokenLabel, p.auditLabel(), kind)
	}
	return pub, nil
}
