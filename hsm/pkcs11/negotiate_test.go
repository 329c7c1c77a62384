package pkcs11

import (
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
)

// The mechanism lists of the tokens vaultd meets, reduced to what
// negotiation looks at.
var (
	softHSMv2 = Mechanisms{ // SoftHSMv2 2.6.1: KWP only as wrap/unwrap
		ckmAESGCM: encDec, ckmAESCBCPad: encDec, ckmSHA256HMAC: ckfSign | ckfVerify,
		ckmAESKeyWrapPad: 0x20000 | 0x40000, // CKF_WRAP | CKF_UNWRAP
	}
	openCryptokiSoft = Mechanisms{ // Debian 12 openCryptoki soft token
		ckmAESCBCPad: encDec, ckmSHA256HMAC: ckfSign | ckfVerify,
	}
	kwpToken = Mechanisms{ // a PKCS#11 3.0 token without GCM
		ckmAESKeyWrapKWP: encDec, ckmAESCBCPad: encDec, ckmSHA256HMAC: ckfSign | ckfVerify,
	}
)

func TestNegotiatePicksStrongest(t *testing.T) {
	for _, c := range []struct {
		name    string
		m       Mechanisms
		want    hsm.Scheme
		wantKWP uint
	}{
		{"SoftHSMv2", softHSMv2, hsm.SchemeAESGCM, 0},
		{"no GCM, KWP", kwpToken, hsm.SchemeAESKWP, ckmAESKeyWrapKWP},
		{"no GCM, vendor KWP", Mechanisms{ckmAESKeyWrapPad: encDec}, hsm.SchemeAESKWP, ckmAESKeyWrapPad},
		{"both KWP numbers", Mechanisms{ckmAESKeyWrapPad: encDec, ckmAESKeyWrapKWP: encDec}, hsm.SchemeAESKWP, ckmAESKeyWrapKWP},
		{"openCryptoki", openCryptokiSoft, hsm.SchemeAESCBCHMAC, 0},
		{"GCM encrypt only", Mechanisms{ckmAESGCM: ckfEncrypt, ckmAESCBCPad: encDec, ckmSHA256HMAC: ckfSign | ckfVerify}, hsm.SchemeAESCBCHMAC, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.m.negotiate("vaultd", 0)
			if err != nil || n.scheme != c.want || n.kwpMech != c.wantKWP {
				t.Fatalf("negotiate = %v (kwp 0x%x), %v; want %v (kwp 0x%x)", n.scheme, n.kwpMech, err, c.want, c.wantKWP)
			}
		})
	}
}

func TestNegotiateNoneIsOneLine(t *testing.T) {
	for _, m := range []Mechanisms{
		{},
		{ckmAESCBCPad: encDec},               // no HMAC
		{ckmSHA256HMAC: ckfSign | ckfVerify}, // no CBC-PAD
		{ckmAESGCM: ckfDecrypt},              // GCM without encrypt
		{ckmSHA256HMAC: ckfSign, ckmAESCBCPad: encDec}, // HMAC without verify
	} {
		_, err := m.negotiate("vaultd", 0)
		if !errors.Is(err, hsm.ErrMechanism) {
			t.Fatalf("negotiate(%v): err = %v, want ErrMechanism", m, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, `hsm: token "vaultd" offers none of AES-GCM, AES-KWP, AES-CBC-PAD+SHA256-HMAC (missing: `) ||
			!strings.HasSuffix(msg, "; vaultd needs one of them") {
			t.Errorf("message %q", msg)
		}
	}
	_, err := Mechanisms{}.negotiate("vaultd", 0)
	want := `hsm: token "vaultd" offers none of AES-GCM, AES-KWP, AES-CBC-PAD+SHA256-HMAC (missing: CKM_AES_GCM, CKM_AES_KEY_WRAP_KWP, CKM_AES_CBC_PAD, CKM_SHA256_HMAC); vaultd needs one of them`
	if err.Error() != want {
		t.Errorf("empty list:\n got %s\nwant %s", err, want)
	}
	// openCryptoki's real gap: only what it lacks is named.
	_, err = Mechanisms{ckmAESCBCPad: encDec}.negotiate("ock", 0)
	if want := `(missing: CKM_AES_GCM, CKM_AES_KEY_WRAP_KWP, CKM_SHA256_HMAC)`; !strings.Contains(err.Error(), want) {
		t.Errorf("%v does not contain %s", err, want)
	}
}

func TestNegotiateForced(t *testing.T) {
	for _, s := range hsm.Schemes() {
		n, err := kwpToken.negotiate("t", s)
		if s == hsm.SchemeAESGCM {
			if !errors.Is(err, hsm.ErrMechanism) || !strings.Contains(err.Error(), "CKM_AES_GCM") {
				t.Errorf("forced GCM on a token without it: %v", err)
			}
			continue
		}
		if err != nil || n.scheme != s {
			t.Errorf("forced %s: %v, %v", s, n.scheme, err)
		}
	}
	if _, err := softHSMv2.negotiate("t", hsm.SchemeAESKWP); !errors.Is(err, hsm.ErrMechanism) {
		t.Errorf("forced KWP on a wrap-only KWP token: %v, want ErrMechanism", err)
	}
	if _, err := softHSMv2.negotiate("t", hsm.Scheme(9)); !errors.Is(err, hsm.ErrMechanism) {
		t.Errorf("forced unknown scheme: %v, want ErrMechanism", err)
	}
}

func TestCanUnwrap(t *testing.T) {
	if !openCryptokiSoft.canUnwrap(hsm.SchemeAESCBCHMAC) || openCryptokiSoft.canUnwrap(hsm.SchemeAESGCM) || openCryptokiSoft.canUnwrap(hsm.SchemeAESKWP) {
		t.Error("openCryptoki: only CBC-HMAC blobs open")
	}
}
