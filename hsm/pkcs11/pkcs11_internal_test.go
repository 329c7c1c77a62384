//go:build cgo

package pkcs11

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

// PIN states SoftHSM cannot produce (it never locks a PIN) are mapped from
// crypto11's error shape: "failed to log into long term session: <pkcs11.Error>".
func TestConfigureErrorMapping(t *testing.T) {
	p := &PKCS11{tokenLabel: "vaultd"}
	login := func(code uint) error {
		return fmt.Errorf("failed to log into long term session: %w", pkcs11.Error(code))
	}
	cases := []struct {
		err  error
		want error
		msg  string
	}{
		{login(pkcs11.CKR_PIN_INCORRECT), hsm.ErrWrongPIN, `hsm: token "vaultd": wrong PIN`},
		{login(pkcs11.CKR_PIN_LEN_RANGE), hsm.ErrWrongPIN, `hsm: token "vaultd": wrong PIN`},
		{login(pkcs11.CKR_PIN_LOCKED), hsm.ErrPINLocked, `hsm: token "vaultd": PIN locked`},
		{login(pkcs11.CKR_PIN_EXPIRED), hsm.ErrPINLocked, `hsm: token "vaultd": PIN expired`},
		{login(pkcs11.CKR_TOKEN_NOT_PRESENT), hsm.ErrTokenNotFound, `hsm: token "vaultd": not present`},
		{login(pkcs11.CKR_DEVICE_ERROR), hsm.ErrUnavailable, `hsm: token "vaultd": login`},
		{errors.New("could not find PKCS#11 token"), hsm.ErrTokenNotFound, `hsm: token "vaultd": not present`},
		{errors.New("failed to create module context: failed to open module"), hsm.ErrModule, `hsm: module "/m.so": cannot load or initialise`},
		{fmt.Errorf("failed to create module context: failed to initialize module: %w", pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)), hsm.ErrModule, `hsm: module "/m.so"`},
		{errors.New("something new"), hsm.ErrUnavailable, `hsm: token "vaultd": open`},
	}
	for _, tc := range cases {
		got := p.configureError("/m.so", tc.err)
		if !errors.Is(got, tc.want) {
			t.Errorf("%v -> %v, want %v", tc.err, got, tc.want)
		}
		if len(got.Error()) < len(tc.msg) || got.Error()[:len(tc.msg)] != tc.msg {
			t.Errorf("%v -> message %q, want prefix %q", tc.err, got, tc.msg)
		}
	}
	// The pkcs11 code stays reachable for callers that want it.
	var code pkcs11.Error
	if !errors.As(p.configureError("/m.so", login(pkcs11.CKR_PIN_LOCKED)), &code) || code != pkcs11.CKR_PIN_LOCKED {
		t.Errorf("pkcs11.Error not in chain: %v", code)
	}
}

func TestKEKTemplate(t *testing.T) {
	want := map[uint][]byte{
		pkcs11.CKA_TOKEN: {1}, pkcs11.CKA_PRIVATE: {1}, pkcs11.CKA_SENSITIVE: {1}, pkcs11.CKA_EXTRACTABLE: {0},
		pkcs11.CKA_ENCRYPT: {1}, pkcs11.CKA_DECRYPT: {1}, pkcs11.CKA_WRAP: {0}, pkcs11.CKA_UNWRAP: {0},
		pkcs11.CKA_MODIFIABLE: {0}, pkcs11.CKA_LABEL: []byte("kek"), pkcs11.CKA_ID: {0, 0, 1, 2},
	}
	got := map[uint][]byte{}
	for _, a := range kekTemplate("kek", 258) {
		got[a.Type] = a.Value
	}
	for typ, v := range want {
		if string(got[typ]) != string(v) {
			t.Errorf("attribute 0x%x = %v, want %v", typ, got[typ], v)
		}
	}
	if n, _ := ulong(got[pkcs11.CKA_VALUE_LEN]); n != 32 {
		t.Errorf("CKA_VALUE_LEN = %d", n)
	}
	if kt, _ := ulong(got[pkcs11.CKA_KEY_TYPE]); kt != pkcs11.CKK_AES {
		t.Errorf("CKA_KEY_TYPE = %d", kt)
	}
}

func TestPolicyViolation(t *testing.T) {
	good := hsm.KEKInfo{Version: 1, KeyType: "AES", Bytes: 32, Token: true, Private: true, Sensitive: true, Encrypt: true, Decrypt: true}
	if v := policyViolation(good); v != "" {
		t.Fatalf("good KEK flagged: %s", v)
	}
	for name, mut := range map[string]func(*hsm.KEKInfo){
		"extractable":   func(k *hsm.KEKInfo) { k.Extractable = true },
		"not sensitive": func(k *hsm.KEKInfo) { k.Sensitive = false },
		"not private":   func(k *hsm.KEKInfo) { k.Private = false },
		"session":       func(k *hsm.KEKInfo) { k.Token = false },
		"aes-128":       func(k *hsm.KEKInfo) { k.Bytes = 16 },
		"des3":          func(k *hsm.KEKInfo) { k.KeyType = "0x15" },
		"no encrypt":    func(k *hsm.KEKInfo) { k.Encrypt = false },
	} {
		k := good
		mut(&k)
		if policyViolation(k) == "" {
			t.Errorf("%s not flagged", name)
		}
	}
}

// A caller waiting for a pooled session gives up when its context ends.
func TestSessionPoolWaitHonoursContext(t *testing.T) {
	sp := newSessionPool(nil, 0, 1)
	sp.sem <- struct{}{} // the only session is in use
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := sp.get(ctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("get = %v, want context.Canceled", err)
	}
	// Releasing the slot lets the next caller take an idle session without
	// touching the module.
	sp.idle <- pkcs11.SessionHandle(7)
	<-sp.sem
	s, err := sp.get(t.Context())
	if err != nil || s != 7 {
		t.Fatalf("get = %v, %v; want the idle session 7", s, err)
	}
}

func TestUlong(t *testing.T) {
	b8 := binary.NativeEndian.AppendUint64(nil, 32)
	b4 := binary.NativeEndian.AppendUint32(nil, 32)
	for _, b := range [][]byte{b8, b4} {
		if n, ok := ulong(b); !ok || n != 32 {
			t.Errorf("ulong(%v) = %d, %v", b, n, ok)
		}
	}
	if _, ok := ulong([]byte{1, 2}); ok {
		t.Error("ulong accepted 2 bytes")
	}
}
