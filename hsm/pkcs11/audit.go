//go:build cgo

package pkcs11

// The audit signing key: an ECDSA P-256 key pair labelled
// "<kek_label>-audit" whose private half is sensitive and never
// extractable. vaultd signs audit checkpoints with it (hsm.AuditSigner);
// InitAuditKey ('vaultctl init') creates it.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

var _ hsm.AuditSigner = (*PKCS11)(nil)

// p256OID is the DER of the prime256v1 OID, CKA_EC_PARAMS of a P-256 key.
var p256OID = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// auditKeyID is CKA_ID of both halves, so tools list them as a pair.
var auditKeyID = []byte("vaultd-audit")

func (p *PKCS11) auditLabel() string { return p.kekLabel + "-audit" }

// InitAuditKey creates the audit signing key pair labelled
// cfg.KEKLabel+"-audit" unless it exists, in which case it changes nothing
// and reports created=false. A half-present or policy-breaking key fails
// with hsm.ErrAuditKeyInvalid rather than being replaced.
func InitAuditKey(ctx context.Context, cfg Config, logger *slog.Logger) (created bool, err error) {
	p, err := open(ctx, cfg, logger)
	if err != nil {
		return false, err
	}
	defer func() { _ = p.Close() }()
	switch _, err := p.auditPrivate(ctx); {
	case err == nil:
		_, err := p.auditPublic(ctx)
		return false, err
	case !errors.Is(err, hsm.ErrAuditKeyNotFound):
		return false, err
	}
	if _, err := p.findAudit(ctx, pkcs11.CKO_PUBLIC_KEY); err == nil {
		return false, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: a public key labelled %q exists without its private key; remove it and run 'vaultctl init' again", p.tokenLabel, p.auditLabel())
	}
	if err := p.generateAuditKey(ctx); err != nil {
		return false, err
	}
	if _, err := p.auditPrivate(ctx); err != nil {
		return false, err
	}
	if _, err := p.auditPublic(ctx); err != nil {
		return false, err
	}
	p.logger.Info("hsm: audit signing key created", "token", p.tokenLabel, "label", p.auditLabel())
	return true, nil
}

func (p *PKCS11) generateAuditKey(ctx context.Context) error {
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
	pub := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256OID),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, auditKeyID),
	}
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
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
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	if _, _, err := p.mod.GenerateKeyPair(s, mech, pub, priv); err != nil {
		return p.p11Error("generate audit key (EC P-256)", err)
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

// auditPrivate finds the private key and checks its policy.
func (p *PKCS11) auditPrivate(ctx context.Context) (pkcs11.ObjectHandle, error) {
	h, err := p.findAudit(ctx, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return 0, err
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
				if kt, ok := ulong(a.Value); !ok || kt != pkcs11.CKK_EC {
					bad = append(bad, "not an EC key")
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
	return h, err
}

// auditPublic reads the public key: CKA_EC_PARAMS must name P-256 and
// CKA_EC_POINT hold an uncompressed point (DER OCTET STRING, or bare as
// some modules return it).
func (p *PKCS11) auditPublic(ctx context.Context) (*ecdsa.PublicKey, error) {
	h, err := p.findAudit(ctx, pkcs11.CKO_PUBLIC_KEY)
	if err != nil {
		return nil, err
	}
	var pub *ecdsa.PublicKey
	err = p.withSession(ctx, "read audit public key", func(s pkcs11.SessionHandle) (bool, error) {
		attrs, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
		})
		if err != nil {
			return false, p.p11Error("read audit public key", err)
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
			return true, p.errorf(hsm.ErrAuditKeyInvalid, nil, "token %q: audit key %q is not on curve P-256", p.tokenLabel, p.auditLabel())
		}
		if len(point) == 67 && point[0] == 0x04 && point[1] == 65 {
			point = point[2:]
		}
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return true, p.errorf(hsm.ErrAuditKeyInvalid, err, "token %q: audit key %q: bad CKA_EC_POINT", p.tokenLabel, p.auditLabel())
		}
		pub = k
		return true, nil
	})
	return pub, err
}

// SignAudit implements hsm.AuditSigner: CKM_ECDSA over digest inside the
// HSM; the result is raw r||s (64 bytes).
func (p *PKCS11) SignAudit(ctx context.Context, digest []byte) ([]byte, error) {
	if err := p.enter(ctx, "sign audit checkpoint"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	if len(digest) != 32 {
		return nil, fmt.Errorf("hsm: sign audit checkpoint: digest is %d bytes, want 32", len(digest))
	}
	h, err := p.auditPrivate(ctx)
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = p.withSession(ctx, "sign audit checkpoint", func(s pkcs11.SessionHandle) (bool, error) {
		if err := p.mod.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, h); err != nil {
			return false, p.p11Error("sign audit checkpoint: C_SignInit", err)
		}
		out, err := p.mod.Sign(s, digest)
		if err != nil {
			return false, p.p11Error("sign audit checkpoint: C_Sign", err)
		}
		if len(out) != 64 {
			return true, p.errorf(hsm.ErrUnavailable, nil, "token %q: sign audit checkpoint: %d-byte signature, want 64", p.tokenLabel, len(out))
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
	if _, err := p.auditPrivate(ctx); err != nil {
		return nil, err
	}
	pub, err := p.auditPublic(ctx)
	if err != nil {
		return nil, err
	}
	return pub, nil
}
