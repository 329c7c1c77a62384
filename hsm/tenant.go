package hsm

import "encoding/binary"

// The blob a TenantKeyring's WrapForTenant returns, the same for every
// backend:
//
//	version (1 byte, TenantWrapVersion) | nonce[12] | AES-256-GCM ciphertext || tag[16]
//
// with GCM additional data TenantWrapAAD(tenant, version):
//
//	"vaultd/tenant-wrap" 0x00 | u32be len(tenant) tenant | version (1 byte)
//
// so a blob moved to another tenant, or relabelled with another version,
// fails to authenticate (ErrUnwrap). The version byte lets a later format
// sit beside this one: version 2 (TenantWrapVersionScheme) records the
// wrapping scheme (scheme.go) of a token without AES-GCM:
//
//	2 | scheme (1 byte) | iv (Scheme.IVSize) | ciphertext
//
// bound to TenantWrapAADScheme(tenant, scheme).

// TenantWrapVersion is the format version of a tenant-wrapped blob.
const TenantWrapVersion byte = 1

// TenantWrapVersionScheme is the format version of a tenant-wrapped blob
// that names its scheme (AES-KWP, AES-CBC-PAD+SHA256-HMAC).
const TenantWrapVersionScheme byte = 2

// Sizes of a tenant-wrapped blob's parts.
const (
	TenantWrapNonceSize = 12
	TenantWrapTagSize   = 16
	// TenantWrapOverhead is what a blob adds to its plaintext.
	TenantWrapOverhead = 1 + TenantWrapNonceSize + TenantWrapTagSize
)

const tenantWrapAADLabel = "vaultd/tenant-wrap"

// TenantWrapAAD is the additional data binding a tenant-wrapped blob to
// its tenant and format version. Length-prefixed, so injective.
func TenantWrapAAD(tenantID string, version byte) []byte {
	b := make([]byte, 0, len(tenantWrapAADLabel)+1+4+len(tenantID)+1)
	b = append(b, tenantWrapAADLabel...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tenantID)))
	b = append(b, tenantID...)
	return append(b, version)
}

// AppendTenantWrapped appends the blob of a TenantWrapVersion wrap (nonce
// and GCM ciphertext with its tag) to dst.
func AppendTenantWrapped(dst, nonce, ciphertext []byte) []byte {
	dst = append(dst, TenantWrapVersion)
	dst = append(dst, nonce...)
	return append(dst, ciphertext...)
}

// ParseTenantWrapped splits a tenant-wrapped blob into its nonce and
// ciphertext (sub-slices of b). An unknown version or a blob too short to
// hold a nonce and a tag fails with ErrUnwrap.
func ParseTenantWrapped(b []byte) (nonce, ciphertext []byte, err error) {
	if len(b) < TenantWrapOverhead {
		return nil, nil, &Error{Msg: "hsm: unwrap for tenant: malformed blob (too short)", Kind: ErrUnwrap}
	}
	if b[0] != TenantWrapVersion {
		return nil, nil, &Error{Msg: "hsm: unwrap for tenant: unknown blob version", Kind: ErrUnwrap}
	}
	return b[1 : 1+TenantWrapNonceSize], b[1+TenantWrapNonceSize:], nil
}

// TenantWrapAADScheme is the additional data of a version-2 blob of
// scheme s: TenantWrapAAD(tenant, 2) followed by the scheme byte.
func TenantWrapAADScheme(tenantID string, s Scheme) []byte {
	return append(TenantWrapAAD(tenantID, TenantWrapVersionScheme), byte(s))
}

// AppendTenantWrappedScheme appends the blob of a wrap with scheme s to
// dst: the version-1 form for AES-GCM, version 2 for the others.
func AppendTenantWrappedScheme(dst []byte, s Scheme, iv, ciphertext []byte) []byte {
	if s == SchemeAESGCM {
		return AppendTenantWrapped(dst, iv, ciphertext)
	}
	dst = append(dst, TenantWrapVersionScheme, byte(s))
	dst = append(dst, iv...)
	return append(dst, ciphertext...)
}

// ParseTenantWrappedScheme splits a tenant-wrapped blob of either version
// into its scheme, iv and ciphertext (sub-slices of b) and returns the
// additional data it is bound to. An unknown version or scheme, or a
// malformed blob, fails with ErrUnwrap.
func ParseTenantWrappedScheme(tenantID string, b []byte) (s Scheme, iv, ciphertext, aad []byte, err error) {
	if len(b) > 0 && b[0] == TenantWrapVersionScheme {
		if len(b) < 2 {
			return 0, nil, nil, nil, &Error{Msg: "hsm: unwrap for tenant: malformed blob (too short)", Kind: ErrUnwrap}
		}
		s = Scheme(b[1])
		if s == SchemeAESGCM || !s.Valid() {
			return 0, nil, nil, nil, &Error{Msg: "hsm: unwrap for tenant: unknown wrapping scheme", Kind: ErrUnwrap}
		}
		rest := b[2:]
		if len(rest) < s.IVSize() {
			return 0, nil, nil, nil, &Error{Msg: "hsm: unwrap for tenant: malformed blob (too short)", Kind: ErrUnwrap}
		}
		iv, ciphertext = rest[:s.IVSize()], rest[s.IVSize():]
		if err := s.checkShape(iv, ciphertext); err != nil {
			return 0, nil, nil, nil, err
		}
		return s, iv, ciphertext, TenantWrapAADScheme(tenantID, s), nil
	}
	iv, ciphertext, err = ParseTenantWrapped(b)
	if err != nil {
		return 0, nil, nil, nil, err
	}
	return SchemeAESGCM, iv, ciphertext, TenantWrapAAD(tenantID, TenantWrapVersion), nil
}

// TenantWrappedLen is the length of the blob of an n-byte key wrapped for
// tenantID with scheme s (TenantWrapOverhead+n for AES-GCM).
func TenantWrappedLen(tenantID string, s Scheme, n int) int {
	if s == SchemeAESGCM {
		return TenantWrapOverhead + n
	}
	return 2 + s.IVSize() + s.CiphertextLen(n, len(TenantWrapAADScheme(tenantID, s)))
}
