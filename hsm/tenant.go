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
// sit beside this one.

// TenantWrapVersion is the format version of a tenant-wrapped blob.
const TenantWrapVersion byte = 1

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
