package pkcs11

// Negotiating the wrapping scheme (hsm.Scheme) with the token's mechanism
// list. No cgo: the decision is a pure function of the list, tested with
// made-up lists.
//
// AES-KWP is used through C_Encrypt/C_Decrypt only, never C_WrapKey: the
// wrap API would need the KEK to carry CKA_WRAP/CKA_UNWRAP (vaultd's KEKs
// are encrypt/decrypt only and not modifiable) and the DEK to sit in a
// readable session object for each call. A token that offers KWP only as
// wrap/unwrap (SoftHSMv2) falls through to AES-CBC-PAD+SHA256-HMAC.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vaultd/vaultd/hsm"
)

// PKCS#11 numbers, here so that this file builds without cgo.
const (
	ckmAESCBCPad     = 0x1085
	ckmAESGCM        = 0x1087
	ckmSHA256HMAC    = 0x0251
	ckmAESKeyWrapPad = 0x210A // PKCS#11 2.40's name; RFC 5649 in SoftHSMv2, AWS CloudHSM, Thales Luna
	ckmAESKeyWrapKWP = 0x210B // PKCS#11 3.0: RFC 5649

	ckfEncrypt = 0x0100
	ckfDecrypt = 0x0200
	ckfSign    = 0x0800
	ckfVerify  = 0x2000
)

// Mechanisms is a token's mechanism list: mechanism -> CKF_ flags, as
// C_GetMechanismList and C_GetMechanismInfo report them.
type Mechanisms map[uint]uint

func (m Mechanisms) has(mech, flags uint) bool {
	f, ok := m[mech]
	return ok && f&flags == flags
}

const encDec = ckfEncrypt | ckfDecrypt

// negotiated is the outcome: the scheme and, for KWP, which of the two
// mechanism numbers implements it.
type negotiated struct {
	scheme  hsm.Scheme
	kwpMech uint
}

// offers reports whether the token can wrap and unwrap with s, and which
// mechanisms it lacks for s otherwise.
func (m Mechanisms) offers(s hsm.Scheme) (n negotiated, missing []string) {
	n.scheme = s
	switch s {
	case hsm.SchemeAESGCM:
		if !m.has(ckmAESGCM, encDec) {
			missing = append(missing, "CKM_AES_GCM")
		}
	case hsm.SchemeAESKWP:
		switch {
		case m.has(ckmAESKeyWrapKWP, encDec):
			n.kwpMech = ckmAESKeyWrapKWP
		case m.has(ckmAESKeyWrapPad, encDec):
			n.kwpMech = ckmAESKeyWrapPad
		default:
			missing = append(missing, "CKM_AES_KEY_WRAP_KWP")
		}
	case hsm.SchemeAESCBCHMAC:
		if !m.has(ckmAESCBCPad, encDec) {
			missing = append(missing, "CKM_AES_CBC_PAD")
		}
		if !m.has(ckmSHA256HMAC, ckfSign|ckfVerify) {
			missing = append(missing, "CKM_SHA256_HMAC")
		}
	default:
		missing = append(missing, fmt.Sprintf("scheme %d", s))
	}
	return n, missing
}

// negotiate picks the strongest scheme the token offers, or force when
// it is set (tests, and operators pinning a scheme). With none it fails
// with hsm.ErrMechanism in one line naming the token, what it lacks and
// what vaultd needs.
func (m Mechanisms) negotiate(token string, force hsm.Scheme) (negotiated, error) {
	if force != 0 {
		n, missing := m.offers(force)
		if len(missing) > 0 {
			return negotiated{}, &hsm.Error{Kind: hsm.ErrMechanism, Msg: fmt.Sprintf(
				"hsm: token %q does not offer %s (missing: %s)", token, force, strings.Join(missing, ", "))}
		}
		return n, nil
	}
	var all []string
	names := make([]string, 0, 3)
	for _, s := range hsm.Schemes() {
		n, missing := m.offers(s)
		if len(missing) == 0 {
			return n, nil
		}
		names = append(names, s.String())
		for _, x := range missing {
			if !slices.Contains(all, x) {
				all = append(all, x)
			}
		}
	}
	return negotiated{}, &hsm.Error{Kind: hsm.ErrMechanism, Msg: fmt.Sprintf(
		"hsm: token %q offers none of %s (missing: %s); vaultd needs one of them",
		token, strings.Join(names, ", "), strings.Join(all, ", "))}
}

// canUnwrap reports whether the token can open blobs of scheme s.
func (m Mechanisms) canUnwrap(s hsm.Scheme) bool {
	_, missing := m.offers(s)
	return len(missing) == 0
}
