package hsm

import (
	"context"
	"crypto"
)

// Optional capabilities. A backend implements those its HSM offers; callers
// find them by type assertion on a Keyring and say so when one is missing.
// Each is one method, so a backend can take them one at a time, except
// AuditSigner and TenantKeyring, whose methods belong together.

// KEKRotator adds KEK versions ('vaultctl kek-rotate').
type KEKRotator interface {
	// RotateKEK creates KEK version n+1 (n = the highest version in the
	// HSM) and makes it current. Older versions stay for Unwrap.
	RotateKEK(ctx context.Context) (uint32, error)
}

// Reloader re-reads the KEK versions from the HSM, so that versions another
// process added (vaultctl kek-rotate) are used without a restart (SIGHUP).
type Reloader interface {
	// Reload keeps the current set on error.
	Reload(ctx context.Context) error
}

// KEKInspector reports the KEK versions and their protection attributes
// ('vaultctl kek-info').
type KEKInspector interface {
	// KEKInfo lists every KEK version, oldest first. It validates nothing,
	// so it also shows a key set the backend would refuse to use.
	KEKInfo(ctx context.Context) ([]KEKInfo, error)
}

// KEKInfo describes one KEK object as the HSM reports it. Reading it never
// reveals key material.
type KEKInfo struct {
	Version          uint32
	Label            string
	KeyType          string // "AES" for a valid KEK
	Bytes            int    // key length (CKA_VALUE_LEN)
	Token            bool
	Private          bool
	Sensitive        bool
	Extractable      bool
	AlwaysSensitive  bool
	NeverExtractable bool
	Encrypt          bool
	Decrypt          bool
	Modifiable       bool
	// Scheme is the wrapping scheme the keyring uses with the KEK (a
	// Scheme's name), negotiated with the token; "" if the backend does
	// not say.
	Scheme string
}

// AuditSigner signs audit checkpoints with a non-extractable key held in
// the HSM (a separate key from the KEK: label "<kek_label>-audit"), so a
// trail rewritten with recomputed hashes cannot carry valid checkpoints.
// vaultd requires it; 'vaultctl init' creates the key.
type AuditSigner interface {
	// SignAudit signs a SHA-256 digest. For an ECDSA P-256 key the
	// signature is the raw r||s, 32 bytes each, big-endian (as PKCS#11's
	// CKM_ECDSA returns it); for an RSA key (tokens without EC) it is
	// RSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt. Without the
	// key it fails with ErrAuditKeyNotFound.
	SignAudit(ctx context.Context, digest []byte) ([]byte, error)
	// AuditPublicKey is the public half (*ecdsa.PublicKey for P-256,
	// *rsa.PublicKey of at least 3072 bits). Without the key it fails
	// with ErrAuditKeyNotFound.
	AuditPublicKey(ctx context.Context) (crypto.PublicKey, error)
}

// TenantKeyring holds one non-extractable AES-256 wrapping key per tenant, so that destroying it
// crypto-shreds every DEK wrapped under it (and so every copy of the tenant's records).
//
// Unlike the other capabilities it has several methods: a tenant key is
// created, used and destroyed together. Blobs have the format of
// AppendTenantWrapped and are bound to their tenant (TenantWrapAAD): one
// tenant's blob does not open under another's key. A tenant id must be
// ids-valid (storage.ValidID); another fails with ErrTenantKeyNotFound.
type TenantKeyring interface {
	// CreateTenantKey creates the tenant's key unless it exists (idempotent).
	CreateTenantKey(ctx context.Context, tenantID string) error
	// WrapForTenant encrypts plaintext (a DEK) under the tenant's key.
	// Without the key it fails with ErrTenantKeyNotFound.
	WrapForTenant(ctx context.Context, tenantID string, plaintext []byte) ([]byte, error)
	// UnwrapForTenant decrypts a WrapForTenant blob; the plaintext is in
	// caller-owned memory, which the caller wipes. A blob that fails
	// authentication (tampered, other tenant, other key) fails with
	// ErrUnwrap; without the key (destroyed) with ErrTenantKeyNotFound.
	UnwrapForTenant(ctx context.Context, tenantID string, wrapped []byte) ([]byte, error)
	// DestroyTenantKey destroys the tenant's key in the HSM
	// (C_DestroyObject); an absent key is not an error.
	DestroyTenantKey(ctx context.Context, tenantID string) error
	// HasTenantKey reports whether the tenant's key exists.
	HasTenantKey(ctx context.Context, tenantID string) (bool, error)
}
