//go:build cgo

package pkcs11

// KEK versions: finding and checking them (scan), creating them (InitKEK,
// RotateKEK), re-reading them (Reload) and reporting them (KEKInfo).

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

const (
	kekBytes = 32 // AES-256

	// maxKEKObjects bounds the KEK search: a label matching more objects than
	// this is a misconfiguration, not a key set.
	maxKEKObjects = 1024
)

// policyViolation says what is wrong with k as a KEK, or "" if nothing.
func policyViolation(k hsm.KEKInfo) string {
	var bad []string
	if k.KeyType != "AES" {
		bad = append(bad, "key type "+k.KeyType+" (want AES)")
	}
	if k.Bytes != kekBytes {
		bad = append(bad, fmt.Sprintf("%d-bit key (want 256)", k.Bytes*8))
	}
	if !k.Token {
		bad = append(bad, "not a token object")
	}
	if !k.Private {
		bad = append(bad, "CKA_PRIVATE=false")
	}
	if !k.Sensitive {
		bad = append(bad, "CKA_SENSITIVE=false")
	}
	if k.Extractable {
		bad = append(bad, "CKA_EXTRACTABLE=true")
	}
	if !k.Encrypt || !k.Decrypt {
		bad = append(bad, "not usable for encrypt and decrypt")
	}
	return strings.Join(bad, ", ")
}

// RotateKEK implements hsm.KEKRotator: it creates KEK version n+1 (n = the
// highest version on the token) and makes it current. Older versions stay on
// the token for Unwrap.
func (p *PKCS11) RotateKEK(ctx context.Context) (uint32, error) {
	if err := p.enter(ctx, "rotate KEK"); err != nil {
		return 0, err
	}
	defer p.life.RUnlock()
	p.rotMu.Lock()
	defer p.rotMu.Unlock()
	keks, err := p.scan(ctx) // another process may have rotated meanwhile
	if err != nil {
		return 0, err
	}
	if len(keks) == 0 {
		return 0, p.errorf(hsm.ErrKEKNotFound, nil, "token %q: no KEK labelled %q", p.tokenLabel, p.kekLabel)
	}
	cur := maxVersion(keks)
	if cur == ^uint32(0) {
		return 0, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: KEK version space exhausted", p.tokenLabel)
	}
	next := cur + 1
	if err := p.generate(ctx, next); err != nil {
		return 0, err
	}
	keks, err = p.scan(ctx)
	if err != nil {
		return 0, err
	}
	if _, ok := keks[next]; !ok {
		return 0, p.errorf(hsm.ErrUnavailable, nil, "token %q: generated KEK version %d not found", p.tokenLabel, next)
	}
	p.install(keks)
	p.logger.Info("hsm: KEK rotated", "token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", next)
	return next, nil
}

// Reload implements hsm.Reloader: it re-reads the KEK versions from the token,
// e.g. after another process ran RotateKEK. It keeps the old set on error.
func (p *PKCS11) Reload(ctx context.Context) error {
	if err := p.enter(ctx, "reload KEKs"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	p.rotMu.Lock()
	defer p.rotMu.Unlock()
	keks, err := p.scan(ctx)
	if err != nil {
		return err
	}
	if len(keks) == 0 {
		return p.errorf(hsm.ErrKEKNotFound, nil, "token %q: no KEK labelled %q", p.tokenLabel, p.kekLabel)
	}
	p.install(keks)
	return p.loadMACKey(ctx)
}

// KEKInfo implements hsm.KEKInspector: it reads the attributes of every KEK
// version back from the token, oldest first. It validates nothing, so it
// also shows a bad key set.
func (p *PKCS11) KEKInfo(ctx context.Context) ([]hsm.KEKInfo, error) {
	if err := p.enter(ctx, "KEK info"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	objs, err := p.findKEKObjects(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]hsm.KEKInfo, 0, len(objs))
	for _, o := range objs {
		o.info.Scheme = p.neg.scheme.String()
		out = append(out, o.info)
	}
	slices.SortFunc(out, func(a, b hsm.KEKInfo) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

func (p *PKCS11) install(keks map[uint32]kekObject) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keks = keks
	p.current = maxVersion(keks)
}

func maxVersion(keks map[uint32]kekObject) uint32 {
	var v uint32
	for k := range keks {
		v = max(v, k)
	}
	return v
}

// scan finds and validates the KEK set: every object carrying the label must
// pass the policy and have a distinct 4-byte version. One bad object fails
// the whole set (fail closed).
func (p *PKCS11) scan(ctx context.Context) (map[uint32]kekObject, error) {
	objs, err := p.findKEKObjects(ctx)
	if err != nil {
		return nil, err
	}
	keks := make(map[uint32]kekObject, len(objs))
	for _, o := range objs {
		if o.info.Version == 0 {
			return nil, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: KEK %q: CKA_ID is not a 4-byte version >= 1", p.tokenLabel, p.kekLabel)
		}
		if bad := policyViolation(o.info); bad != "" {
			return nil, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: KEK %q version %d: %s", p.tokenLabel, p.kekLabel, o.info.Version, bad)
		}
		if _, dup := keks[o.info.Version]; dup {
			return nil, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: KEK %q: version %d exists twice", p.tokenLabel, p.kekLabel, o.info.Version)
		}
		if !o.info.AlwaysSensitive || !o.info.NeverExtractable {
			// Legitimate for a KEK cloned between HSMs by key ceremony, but
			// worth an operator's attention.
			p.logger.Warn("hsm: KEK was not generated sensitive and non-extractable on this token",
				"token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", o.info.Version,
				"always_sensitive", o.info.AlwaysSensitive, "never_extractable", o.info.NeverExtractable)
		}
		keks[o.info.Version] = o
	}
	return keks, nil
}

// findKEKObjects lists the secret-key token objects labelled kekLabel with
// their attributes. Version is 0 when CKA_ID is not 4 bytes.
func (p *PKCS11) findKEKObjects(ctx context.Context) ([]kekObject, error) {
	var objs []kekObject
	err := p.withSession(ctx, "find KEK", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.kekLabel),
		}
		if err := p.mod.FindObjectsInit(s, tmpl); err != nil {
			return false, p.p11Error("find KEK: C_FindObjectsInit", err)
		}
		var handles []pkcs11.ObjectHandle
		for len(handles) <= maxKEKObjects {
			hs, _, err := p.mod.FindObjects(s, 64)
			if err != nil {
				_ = p.mod.FindObjectsFinal(s)
				return false, p.p11Error("find KEK: C_FindObjects", err)
			}
			if len(hs) == 0 {
				break
			}
			handles = append(handles, hs...)
		}
		if err := p.mod.FindObjectsFinal(s); err != nil {
			return false, p.p11Error("find KEK: C_FindObjectsFinal", err)
		}
		if len(handles) > maxKEKObjects {
			return true, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: more than %d objects labelled %q", p.tokenLabel, maxKEKObjects, p.kekLabel)
		}
		for _, h := range handles {
			info, err := p.readKEKInfo(s, h)
			if err != nil {
				return false, err
			}
			objs = append(objs, kekObject{handle: h, info: info})
		}
		return true, nil
	})
	return objs, err
}

func (p *PKCS11) readKEKInfo(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (hsm.KEKInfo, error) {
	types := []uint{
		pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_TOKEN,
		pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
		pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT, pkcs11.CKA_MODIFIABLE,
	}
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	attrs, err := p.mod.GetAttributeValue(s, h, tmpl)
	if err != nil {
		return hsm.KEKInfo{}, p.p11Error("read KEK attributes", err)
	}
	info := hsm.KEKInfo{Label: p.kekLabel}
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_ID:
			if len(a.Value) == 4 {
				info.Version = binary.BigEndian.Uint32(a.Value)
			}
		case pkcs11.CKA_KEY_TYPE:
			if kt, ok := ulong(a.Value); ok && kt == pkcs11.CKK_AES {
				info.KeyType = "AES"
			} else {
				info.KeyType = fmt.Sprintf("0x%x", kt)
			}
		case pkcs11.CKA_VALUE_LEN:
			n, _ := ulong(a.Value)
			info.Bytes = int(min(n, 1<<20))
		case pkcs11.CKA_TOKEN:
			info.Token = boolAttr(a.Value)
		case pkcs11.CKA_PRIVATE:
			info.Private = boolAttr(a.Value)
		case pkcs11.CKA_SENSITIVE:
			info.Sensitive = boolAttr(a.Value)
		case pkcs11.CKA_EXTRACTABLE:
			info.Extractable = boolAttr(a.Value)
		case pkcs11.CKA_ALWAYS_SENSITIVE:
			info.AlwaysSensitive = boolAttr(a.Value)
		case pkcs11.CKA_NEVER_EXTRACTABLE:
			info.NeverExtractable = boolAttr(a.Value)
		case pkcs11.CKA_ENCRYPT:
			info.Encrypt = boolAttr(a.Value)
		case pkcs11.CKA_DECRYPT:
			info.Decrypt = boolAttr(a.Value)
		case pkcs11.CKA_MODIFIABLE:
			info.Modifiable = boolAttr(a.Value)
		}
	}
	return info, nil
}

func boolAttr(v []byte) bool { return len(v) == 1 && v[0] != 0 }

// ulong decodes a CK_ULONG attribute (native byte order, 4 or 8 bytes).
func ulong(v []byte) (uint64, bool) {
	switch len(v) {
	case 8:
		return binary.NativeEndian.Uint64(v), true
	case 4:
		return uint64(binary.NativeEndian.Uint32(v)), true
	}
	return 0, false
}

// kekTemplate is the attribute template of a new KEK version: an AES-256
// token object that is private (login needed), sensitive, never extractable,
// usable only to encrypt/decrypt (no wrap/unwrap, sign, derive), and not
// modifiable afterwards.
func kekTemplate(label string, version uint32) []*pkcs11.Attribute {
	id := binary.BigEndian.AppendUint32(nil, version)
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, kekBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// generate creates KEK version v with CKM_AES_KEY_GEN through crypto11.
func (p *PKCS11) generate(ctx context.Context, v uint32) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: generate KEK: %w", err)
	}
	tmpl := crypto11.NewAttributeSet()
	tmpl.AddIfNotPresent(kekTemplate(p.kekLabel, v))
	if _, err := p.c11.GenerateSecretKeyWithAttributes(tmpl, kekBytes*8, crypto11.CipherAES); err != nil {
		return p.p11Error(fmt.Sprintf("generate KEK version %d", v), err)
	}
	return nil
}
