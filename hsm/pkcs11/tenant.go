//go:build cgo

package pkcs11

// Tenant keys (hsm.TenantKeyring): one AES-256 token object per tenant,
// labelled "<kek_label>-tenant-<tenant id>", sensitive and never
// extractable, that wraps the tenant's DEKs inside the HSM with the
// negotiated scheme (schemes.go). Destroying it
// (C_DestroyObject) crypto-shreds every DEK it wrapped.
//
// Handles are found by label and cached for unwraps (the hot path after a
// DEK cache miss). A cached handle is never trusted past a destroy:
// DestroyTenantKey evicts it and bumps an epoch that keeps a lookup racing
// the destroy from caching what it found; a handle the HSM no longer knows
// (destroyed by another process) is evicted and looked up again; an
// authentication failure under a cached handle is retried once with a fresh
// lookup. Wraps always look the key up afresh: they are rare (a new DEK),
// and a blob wrapped under the wrong object would be lost.

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/ids"
)

var _ hsm.TenantKeyring = (*PKCS11)(nil)

// maxTenantHandles bounds the handle cache; beyond it the cache starts over.
const maxTenantHandles = 4096

func (p *PKCS11) tenantLabel(tenantID string) string { return p.kekLabel + "-tenant-" + tenantID }

// tenantEnter is enter plus the tenant id check. The caller runs
// p.life.RUnlock when it returns nil.
func (p *PKCS11) tenantEnter(ctx context.Context, op, tenantID string) error {
	if err := p.enter(ctx, op); err != nil {
		return err
	}
	if !ids.Valid(tenantID) {
		p.life.RUnlock()
		return p.errorf(hsm.ErrTenantKeyNotFound, nil, "%s: invalid tenant id", op)
	}
	return nil
}

// tenantTemplate is a new tenant key's attributes: as the KEK's (private,
// sensitive, never extractable, encrypt/decrypt only, not modifiable) and
// explicitly destroyable.
func tenantTemplate(label, tenantID string) []*pkcs11.Attribute {
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
		pkcs11.NewAttribute(pkcs11.CKA_DESTROYABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(tenantID)),
	}
}

// generateTenantKey runs C_GenerateKey (CKM_AES_KEY_GEN) with tmpl. A token
// that does not know CKA_DESTROYABLE (a PKCS#11 3.0 attribute: Debian 12's
// openCryptoki answers CKR_ATTRIBUTE_TYPE_INVALID) gets the template
// without it; its objects are destroyable anyway, as the attribute's
// default says.
func (p *PKCS11) generateTenantKey(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
	h, err := p.mod.GenerateKey(s, mech, tmpl)
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)) {
		return h, err
	}
	without := make([]*pkcs11.Attribute, 0, len(tmpl))
	for _, a := range tmpl {
		if a.Type != pkcs11.CKA_DESTROYABLE {
			without = append(without, a)
		}
	}
	return p.mod.GenerateKey(s, mech, without)
}

// findTenantKeys lists the tenant's key objects (normally one; two only if
// two processes raced to create it). With check, each must pass the KEK
// policy (hsm.ErrKEKInvalid otherwise): a key that is used, or created
// beside, must be sound; one being destroyed need not be.
func (p *PKCS11) findTenantKeys(ctx context.Context, tenantID string, check bool) ([]pkcs11.ObjectHandle, error) {
	label := p.tenantLabel(tenantID)
	var found []pkcs11.ObjectHandle
	err := p.withSession(ctx, "find tenant key", func(s pkcs11.SessionHandle) (bool, error) {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}
		if err := p.mod.FindObjectsInit(s, tmpl); err != nil {
			return false, p.p11Error("find tenant key: C_FindObjectsInit", err)
		}
		hs, _, err := p.mod.FindObjects(s, 8)
		if err != nil {
			_ = p.mod.FindObjectsFinal(s)
			return false, p.p11Error("find tenant key: C_FindObjects", err)
		}
		if err := p.mod.FindObjectsFinal(s); err != nil {
			return false, p.p11Error("find tenant key: C_FindObjectsFinal", err)
		}
		for _, h := range hs {
			if !check {
				break
			}
			info, err := p.readKEKInfo(s, h)
			if err != nil {
				return false, err
			}
			if bad := policyViolation(info); bad != "" {
				return true, p.errorf(hsm.ErrKEKInvalid, nil, "token %q: tenant key %q: %s", p.tokenLabel, label, bad)
			}
		}
		found = hs
		return true, nil
	})
	return found, err
}

// tenantHandles returns the tenant's key handles, from the cache unless
// fresh; cached reports where they came from. No key: ErrTenantKeyNotFound.
func (p *PKCS11) tenantHandles(ctx context.Context, tenantID string, fresh bool) (hs []pkcs11.ObjectHandle, cached bool, err error) {
	p.tmu.Lock()
	hs, ok := p.tenantCache[tenantID]
	epoch := p.tenantEpoch
	p.tmu.Unlock()
	if ok && !fresh {
		return hs, true, nil
	}
	hs, err = p.findTenantKeys(ctx, tenantID, true)
	if err != nil {
		return nil, false, err
	}
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if len(hs) == 0 {
		delete(p.tenantCache, tenantID)
		return nil, false, p.errorf(hsm.ErrTenantKeyNotFound, nil, "token %q: no tenant key %q", p.tokenLabel, p.tenantLabel(tenantID))
	}
	if epoch == p.tenantEpoch { // no destroy ran meanwhile
		if p.tenantCache == nil || len(p.tenantCache) >= maxTenantHandles {
			p.tenantCache = make(map[string][]pkcs11.ObjectHandle)
		}
		p.tenantCache[tenantID] = hs
	}
	return hs, false, nil
}

func (p *PKCS11) evictTenant(tenantID string) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	delete(p.tenantCache, tenantID)
	p.tenantEpoch++
}

// staleHandle reports an error saying the object handle is gone.
func staleHandle(err error) bool {
	var code pkcs11.Error
	return errors.As(err, &code) && (code == pkcs11.CKR_KEY_HANDLE_INVALID || code == pkcs11.CKR_OBJECT_HANDLE_INVALID)
}

// rwSession opens a read-write session: creating and destroying token
// objects needs one, and the pool's are read-only. The login is the
// module's, shared by every session.
func (p *PKCS11) rwSession(ctx context.Context, op string) (pkcs11.SessionHandle, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("hsm: %s: %w", op, err)
	}
	s, err := p.mod.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, p.p11Error(op+": open read-write session", err)
	}
	return s, nil
}

// CreateTenantKey implements hsm.TenantKeyring. Creates and destroys are
// serialised in this process, so racing creates make one key.
func (p *PKCS11) CreateTenantKey(ctx context.Context, tenantID string) error {
	if err := p.tenantEnter(ctx, "create tenant key", tenantID); err != nil {
		return err
	}
	defer p.life.RUnlock()
	p.tenantOpMu.Lock()
	defer p.tenantOpMu.Unlock()
	hs, err := p.findTenantKeys(ctx, tenantID, true)
	if err != nil || len(hs) > 0 {
		return err
	}
	s, err := p.rwSession(ctx, "create tenant key")
	if err != nil {
		return err
	}
	defer func() { _ = p.mod.CloseSession(s) }()
	label := p.tenantLabel(tenantID)
	if _, err := p.generateTenantKey(s, tenantTemplate(label, tenantID)); err != nil {
		return p.p11Error("create tenant key (AES-256)", err)
	}
	p.logger.Info("hsm: tenant key created", "token", p.tokenLabel, "label", label, "tenant_id", tenantID)
	return nil
}

// DestroyTenantKey implements hsm.TenantKeyring: C_DestroyObject on every
// object carrying the tenant key's label. An absent key is not an error.
func (p *PKCS11) DestroyTenantKey(ctx context.Context, tenantID string) error {
	if err := p.tenantEnter(ctx, "destroy tenant key", tenantID); err != nil {
		return err
	}
	defer p.life.RUnlock()
	p.tenantOpMu.Lock()
	defer p.tenantOpMu.Unlock()
	p.evictTenant(tenantID)
	defer p.evictTenant(tenantID) // and nothing a racing unwrap cached meanwhile
	hs, err := p.findTenantKeys(ctx, tenantID, false)
	if err != nil || len(hs) == 0 {
		return err
	}
	s, err := p.rwSession(ctx, "destroy tenant key")
	if err != nil {
		return err
	}
	defer func() { _ = p.mod.CloseSession(s) }()
	for _, h := range hs {
		if err := p.mod.DestroyObject(s, h); err != nil && !staleHandle(err) {
			return p.p11Error("destroy tenant key: C_DestroyObject", err)
		}
	}
	if left, err := p.findTenantKeys(ctx, tenantID, false); err != nil {
		return err
	} else if len(left) > 0 {
		return p.errorf(hsm.ErrUnavailable, nil, "token %q: tenant key %q still present after C_DestroyObject", p.tokenLabel, p.tenantLabel(tenantID))
	}
	p.logger.Info("hsm: tenant key destroyed", "token", p.tokenLabel, "label", p.tenantLabel(tenantID), "tenant_id", tenantID)
	return nil
}

// HasTenantKey implements hsm.TenantKeyring (always asks the HSM). A key
// that breaks the policy exists too (using it fails with hsm.ErrKEKInvalid).
func (p *PKCS11) HasTenantKey(ctx context.Context, tenantID string) (bool, error) {
	if err := p.tenantEnter(ctx, "find tenant key", tenantID); err != nil {
		return false, err
	}
	defer p.life.RUnlock()
	hs, err := p.findTenantKeys(ctx, tenantID, false)
	return len(hs) > 0, err
}

// WrapForTenant implements hsm.TenantKeyring: the negotiated scheme under
// the tenant's key inside the HSM, in the blob format of
// hsm.AppendTenantWrappedScheme.
func (p *PKCS11) WrapForTenant(ctx context.Context, tenantID string, plaintext []byte) ([]byte, error) {
	if err := p.tenantEnter(ctx, "wrap for tenant", tenantID); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	hs, _, err := p.tenantHandles(ctx, tenantID, true)
	if err != nil {
		return nil, err
	}
	scheme := p.neg.scheme
	aad := hsm.TenantWrapAAD(tenantID, hsm.TenantWrapVersion)
	if scheme != hsm.SchemeAESGCM {
		aad = hsm.TenantWrapAADScheme(tenantID, scheme)
	}
	iv, ct, err := p.seal(ctx, "wrap for tenant", scheme, hs[0], plaintext, aad)
	if staleHandle(err) { // destroyed since the lookup
		p.evictTenant(tenantID)
		return nil, p.errorf(hsm.ErrTenantKeyNotFound, err, "token %q: tenant key %q", p.tokenLabel, p.tenantLabel(tenantID))
	}
	if err != nil {
		return nil, err
	}
	return hsm.AppendTenantWrappedScheme(make([]byte, 0, 2+len(iv)+len(ct)), scheme, iv, ct), nil
}

// UnwrapForTenant implements hsm.TenantKeyring. The result is a fresh
// slice the caller owns and wipes.
func (p *PKCS11) UnwrapForTenant(ctx context.Context, tenantID string, wrapped []byte) ([]byte, error) {
	if err := p.tenantEnter(ctx, "unwrap for tenant", tenantID); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	scheme, iv, ct, aad, err := hsm.ParseTenantWrappedScheme(tenantID, wrapped)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		hs, cached, err := p.tenantHandles(ctx, tenantID, attempt > 0)
		if err != nil {
			return nil, err
		}
		pt, err := p.decryptAny(ctx, hs, scheme, iv, ct, aad)
		if err == nil {
			return pt, nil
		}
		if cached && (staleHandle(err) || errors.Is(err, hsm.ErrUnwrap)) {
			// The cached handle may be gone or name another object now
			// (another process destroyed or replaced the key): ask again.
			p.evictTenant(tenantID)
			continue
		}
		if staleHandle(err) {
			p.evictTenant(tenantID)
			return nil, p.errorf(hsm.ErrTenantKeyNotFound, err, "token %q: tenant key %q", p.tokenLabel, p.tenantLabel(tenantID))
		}
		if errors.Is(err, hsm.ErrUnwrap) {
			return nil, p.errorf(hsm.ErrUnwrap, nil, "unwrap for tenant %q: authentication failed", tenantID)
		}
		return nil, err
	}
}

// decryptAny tries each handle (several only after a cross-process create
// race); the first that authenticates wins.
func (p *PKCS11) decryptAny(ctx context.Context, hs []pkcs11.ObjectHandle, scheme hsm.Scheme, iv, ct, aad []byte) ([]byte, error) {
	var first error
	for _, h := range hs {
		pt, err := p.unseal(ctx, "unwrap for tenant", scheme, h, iv, ct, aad)
		if err == nil {
			return pt, nil
		}
		if !errors.Is(err, hsm.ErrUnwrap) && !staleHandle(err) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}
