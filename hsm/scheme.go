package hsm

// Wrapping schemes. Tokens differ in what they offer (Debian's openCryptoki
// software token has no AES-GCM and no AES key wrap), so a backend
// negotiates one of these with its token, in this order of preference:
//
//	AES-GCM                  CKM_AES_GCM: AEAD, the aad authenticated
//	AES-KWP                  RFC 5649 AES key wrap with padding
//	                         (CKM_AES_KEY_WRAP_KWP, or CKM_AES_KEY_WRAP_PAD
//	                         where it implements RFC 5649): integrity but no
//	                         aad, so the context is wrapped with the key
//	                         (KWPInput) and checked after unwrap (KWPOpen)
//	AES-CBC-PAD+SHA256-HMAC  encrypt-then-MAC: CKM_AES_CBC_PAD under the
//	                         KEK of CBCKeyCheck || key, CKM_SHA256_HMAC
//	                         under a second HSM key over CBCHMACInput,
//	                         verified before decrypting. The MAC key is
//	                         shared by every KEK version and tenant key, so
//	                         it cannot tell which key encrypted; the
//	                         CBCKeyCheck block can: under another key (an
//	                         older KEK version, a re-created tenant key) it
//	                         decrypts to other bytes and the unwrap fails
//
// Every wrapped blob records its scheme, so records move between tokens of
// different schemes: unwrapping goes by the recorded scheme, wrapping uses
// the negotiated one. The AES-GCM form is the format from before schemes
// existed (its shape identifies it), so a database written on a GCM token
// still opens in an older vaultd:
//
//	WrappedKey.Nonce  12 bytes                 AES-GCM, the nonce
//	                  scheme (1 byte) || iv    any other scheme: 0x02 KWP
//	                                           (no iv), 0x03 CBC-HMAC (16)
//	WrappedKey.Ciphertext                      GCM: ct || tag[16]; KWP: the
//	                                           RFC 5649 output; CBC-HMAC:
//	                                           CBC(CBCKeyCheck || key) ||
//	                                           HMAC-SHA256[32]
//
// Tenant blobs (tenant.go): version 1 is AES-GCM; version 2 is
// 2 | scheme | iv | ciphertext as above, with TenantWrapAADScheme.

import (
	"crypto/subtle"
	"encoding/binary"
	"strings"
)

// Scheme is a wrapping scheme; its value is the byte that records it.
type Scheme byte

// The schemes, strongest first. The zero Scheme means "negotiate".
const (
	SchemeAESGCM     Scheme = 1
	SchemeAESKWP     Scheme = 2
	SchemeAESCBCHMAC Scheme = 3
)

// Schemes lists the schemes in order of preference.
func Schemes() []Scheme { return []Scheme{SchemeAESGCM, SchemeAESKWP, SchemeAESCBCHMAC} }

// Sizes of the schemes' parts.
const (
	GCMNonceSize = 12
	GCMTagSize   = 16
	CBCIVSize    = 16
	HMACSize     = 32 // HMAC-SHA256
	// KWPMinSize is the shortest RFC 5649 output (one 8-byte block
	// plus the 8-byte integrity check).
	KWPMinSize = 16
)

// String is the scheme's name as vaultd reports it.
func (s Scheme) String() string {
	switch s {
	case SchemeAESGCM:
		return "AES-GCM"
	case SchemeAESKWP:
		return "AES-KWP"
	case SchemeAESCBCHMAC:
		return "AES-CBC-PAD+SHA256-HMAC"
	case 0:
		return "negotiated"
	}
	return "unknown"
}

// Valid reports whether s is one of the schemes.
func (s Scheme) Valid() bool { return s >= SchemeAESGCM && s <= SchemeAESCBCHMAC }

// ParseScheme reads a scheme name as String writes it (case-insensitive);
// "" is the zero Scheme (negotiate).
func ParseScheme(name string) (Scheme, bool) {
	if name == "" {
		return 0, true
	}
	for _, s := range Schemes() {
		if strings.EqualFold(name, s.String()) {
			return s, true
		}
	}
	return 0, false
}

// IVSize is the length of the scheme's iv (0 for KWP, which has none).
func (s Scheme) IVSize() int {
	switch s {
	case SchemeAESGCM:
		return GCMNonceSize
	case SchemeAESCBCHMAC:
		return CBCIVSize
	}
	return 0
}

// minCiphertext is the shortest well-formed ciphertext of the scheme.
func (s Scheme) minCiphertext() int {
	switch s {
	case SchemeAESGCM:
		return GCMTagSize
	case SchemeAESKWP:
		return KWPMinSize
	case SchemeAESCBCHMAC:
		// the key check block, then CBC-PAD's at least one block
		return len(CBCKeyCheck) + 16 + HMACSize
	}
	return 0
}

// CiphertextLen is the length of the ciphertext (with its tag, MAC or
// integrity check) of an n-byte plaintext wrapped with s under an
// aadLen-byte aad; -1 for an unknown scheme.
func (s Scheme) CiphertextLen(n, aadLen int) int {
	switch s {
	case SchemeAESGCM:
		return n + GCMTagSize
	case SchemeAESKWP:
		in := len(kwpLabel) + 1 + 4 + aadLen + n
		return (in+7)/8*8 + 8
	case SchemeAESCBCHMAC:
		return len(CBCKeyCheck) + (n/16+1)*16 + HMACSize
	}
	return -1
}

// WrappedKeyNonce is the Nonce field of a WrappedKey wrapped with s and
// iv: the bare nonce for AES-GCM, scheme || iv for the others.
func WrappedKeyNonce(s Scheme, iv []byte) []byte {
	if s == SchemeAESGCM {
		return append([]byte(nil), iv...)
	}
	return append([]byte{byte(s)}, iv...)
}

// ParseWrappedKey reads w's scheme and iv (a sub-slice of w.Nonce) and
// checks the shape of w's parts. An unknown scheme or a malformed key
// fails with ErrUnwrap.
func ParseWrappedKey(w WrappedKey) (Scheme, []byte, error) {
	s, iv := SchemeAESGCM, w.Nonce
	if len(w.Nonce) != GCMNonceSize {
		if len(w.Nonce) == 0 {
			return 0, nil, &Error{Msg: "hsm: unwrap: malformed wrapped key (no nonce)", Kind: ErrUnwrap}
		}
		s, iv = Scheme(w.Nonce[0]), w.Nonce[1:]
		if s == SchemeAESGCM || !s.Valid() {
			return 0, nil, &Error{Msg: "hsm: unwrap: unknown wrapping scheme", Kind: ErrUnwrap}
		}
	}
	if err := s.checkShape(iv, w.Ciphertext); err != nil {
		return 0, nil, err
	}
	return s, iv, nil
}

func (s Scheme) checkShape(iv, ct []byte) error {
	bad := len(iv) != s.IVSize() || len(ct) < s.minCiphertext()
	switch s {
	case SchemeAESKWP:
		bad = bad || len(ct)%8 != 0
	case SchemeAESCBCHMAC:
		bad = bad || (len(ct)-HMACSize)%16 != 0
	}
	if bad {
		return &Error{Msg: "hsm: unwrap: malformed " + s.String() + " wrapped key", Kind: ErrUnwrap}
	}
	return nil
}

// CBCKeyCheck is the block the CBC-HMAC scheme encrypts before the key.
const CBCKeyCheck = "vaultd/cbc-key\x00\x01"

const (
	kwpLabel     = "vaultd/kwp"
	cbcHMACLabel = "vaultd/cbc-hmac"
)

// KWPInput is what AES-KWP wraps for key under aad: the context
// "vaultd/kwp" 0x00 | u32be len(aad) | aad, then the key. RFC 5649 takes
// no additional data; wrapping the context with the key binds it.
func KWPInput(aad, key []byte) []byte {
	b := make([]byte, 0, len(kwpLabel)+1+4+len(aad)+len(key))
	b = append(b, kwpLabel...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(aad)))
	b = append(b, aad...)
	return append(b, key...)
}

// KWPOpen checks that unwrapped (KWPInput's output, as RFC 5649 returned
// it) carries aad's context and returns the key (a sub-slice). ok is false
// for another context.
func KWPOpen(aad, unwrapped []byte) (key []byte, ok bool) {
	n := len(kwpLabel) + 1 + 4 + len(aad)
	if len(unwrapped) < n {
		return nil, false
	}
	want := KWPInput(aad, nil)
	if subtle.ConstantTimeCompare(unwrapped[:n], want) != 1 {
		return nil, false
	}
	return unwrapped[n:], true
}

// CBCHMACInput is what the CBC-HMAC scheme MACs: "vaultd/cbc-hmac" 0x00 |
// u32be len(aad) | aad | iv[16] | ciphertext. Length-prefixed, so the aad
// cannot be shifted into the iv or the ciphertext.
func CBCHMACInput(aad, iv, ct []byte) []byte {
	b := make([]byte, 0, len(cbcHMACLabel)+1+4+len(aad)+len(iv)+len(ct))
	b = append(b, cbcHMACLabel...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(aad)))
	b = append(b, aad...)
	b = append(b, iv...)
	return append(b, ct...)
}
