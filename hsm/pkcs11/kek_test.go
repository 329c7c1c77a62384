//go:build cgo

package pkcs11_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/softhsmtest"
)

func TestInitKEKAttributes(t *testing.T) {
	tok := initToken(t)
	k := openKeyring(t, config(tok))
	if k.CurrentVersion() != 1 {
		t.Fatalf("CurrentVersion = %d, want 1", k.CurrentVersion())
	}

	// 1. Through the backend's own reader.
	infos, err := k.KEKInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := hsm.KEKInfo{Version: 1, Label: kekLabel, KeyType: "AES", Bytes: 32, Token: true, Private: true,
		Sensitive: true, Extractable: false, AlwaysSensitive: true, NeverExtractable: true,
		Encrypt: true, Decrypt: true, Modifiable: false, Scheme: "AES-GCM"}
	if len(infos) != 1 || infos[0] != want {
		t.Fatalf("KEKInfo = %+v, want [%+v]", infos, want)
	}

	// 2. Independently, through crypto11's FindKeysWithAttributes and
	// GetAttributes (same canonical module path, so it shares the module).
	path, _ := filepath.EvalSymlinks(tok.Module)
	c11, err := crypto11.Configure(&crypto11.Config{Path: path, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	q := crypto11.NewAttributeSet()
	_ = q.Set(crypto11.CkaLabel, kekLabel)
	keys, err := c11.FindKeysWithAttributes(q)
	if err != nil || len(keys) != 1 {
		t.Fatalf("crypto11 found %d keys, err %v", len(keys), err)
	}
	attrs, err := c11.GetAttributes(keys[0], []crypto11.AttributeType{
		crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken, crypto11.CkaId, crypto11.CkaWrap, crypto11.CkaUnwrap})
	if err != nil {
		t.Fatal(err)
	}
	for typ, wantV := range map[crypto11.AttributeType][]byte{
		crypto11.CkaSensitive: {1}, crypto11.CkaExtractable: {0}, crypto11.CkaToken: {1},
		crypto11.CkaId: {0, 0, 0, 1}, crypto11.CkaWrap: {0}, crypto11.CkaUnwrap: {0},
	} {
		if a := attrs[typ]; a == nil || !bytes.Equal(a.Value, wantV) {
			t.Errorf("crypto11 attribute 0x%x = %v, want %v", typ, a, wantV)
		}
	}
	if err := c11.Close(); err != nil {
		t.Fatal(err)
	}

	// 3. The key cannot leave the HSM: no C_WrapKey under another key, no
	// CKA_VALUE, no flipping CKA_EXTRACTABLE.
	rawSession(t, tok, func(mod *pkcs11.Ctx, s pkcs11.SessionHandle) {
		hs := kekHandles(t, mod, s)
		if len(hs) != 1 {
			t.Fatalf("found %d KEK objects, want 1", len(hs))
		}
		kek := hs[0]
		wrapper, err := mod.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		})
		if err != nil {
			t.Fatalf("generate wrapping key: %v", err)
		}
		for _, m := range []uint{pkcs11.CKM_AES_KEY_WRAP_PAD, pkcs11.CKM_AES_KEY_WRAP, pkcs11.CKM_AES_ECB} {
			out, err := mod.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(m, nil)}, wrapper, kek)
			if err == nil || len(out) != 0 {
				t.Errorf("C_WrapKey(mech 0x%x) of the KEK succeeded (%d bytes)", m, len(out))
			}
		}
		if _, err := mod.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapper, kek); !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_UNEXTRACTABLE)) {
			t.Errorf("C_WrapKey: err = %v, want CKR_KEY_UNEXTRACTABLE", err)
		}
		v, err := mod.GetAttributeValue(s, kek, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
			t.Errorf("reading CKA_VALUE: %d attrs, err = %v; want CKR_ATTRIBUTE_SENSITIVE", len(v), err)
		}
		for _, a := range []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		} {
			if err := mod.SetAttributeValue(s, kek, []*pkcs11.Attribute{a}); err == nil {
				t.Errorf("C_SetAttributeValue(0x%x) on the KEK succeeded", a.Type)
			}
		}
	})

	// 4. Independently, in another process: pkcs11-tool.
	out := pkcs11Tool(t, tok, "--list-objects", "--type", "secrkey")
	t.Logf("pkcs11-tool:\n%s", out)
	if !strings.Contains(out, "label:      "+kekLabel) || !strings.Contains(out, "00000001") {
		t.Fatalf("pkcs11-tool does not list the KEK:\n%s", out)
	}
	access, usage := "", ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Access:"); ok {
			access = v
		}
		if v, ok := strings.CutPrefix(line, "Usage:"); ok {
			usage = strings.TrimSpace(v)
		}
	}
	if usage != "encrypt, decrypt" {
		t.Errorf("pkcs11-tool Usage = %q, want only encrypt, decrypt (no wrap/unwrap/sign)", usage)
	}
	for _, w := range []string{"sensitive", "always sensitive", "never extractable"} {
		if !strings.Contains(access, w) {
			t.Errorf("pkcs11-tool Access line %q lacks %q", access, w)
		}
	}
	// "extractable" appears only as part of "never extractable".
	if strings.Count(access, "extractable") != strings.Count(access, "never extractable") {
		t.Errorf("pkcs11-tool reports the KEK extractable: %q", access)
	}
}

func TestInitKEKIdempotent(t *testing.T) {
	tok := initToken(t)
	count := func() int {
		return strings.Count(pkcs11Tool(t, tok, "--list-objects"), "Object;")
	}
	before := count()
	for range 2 {
		v, created, err := hsmpkcs11.InitKEK(t.Context(), config(tok), nil)
		if err != nil || v != 1 || created {
			t.Fatalf("InitKEK again = %d, %v, %v; want 1, false, nil", v, created, err)
		}
		if created, err := hsmpkcs11.InitAuditKey(t.Context(), config(tok), nil); err != nil || created {
			t.Fatalf("InitAuditKey again = %v, %v; want false, nil", created, err)
		}
	}
	// The KEK and the audit key pair.
	if after := count(); after != before || before != 3 {
		t.Fatalf("objects on token: %d before, %d after; want 3 and 3", before, after)
	}
}

// plantKey creates an AES token object labelled kekLabel with the given
// overrides, through crypto11 (as an operator's tool might).
func plantKey(t *testing.T, tok softhsmtest.Token, id []byte, overrides map[crypto11.AttributeType]any) {
	t.Helper()
	path, _ := filepath.EvalSymlinks(tok.Module)
	c11, err := crypto11.Configure(&crypto11.Config{Path: path, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c11.Close() }()
	tmpl := crypto11.NewAttributeSet()
	for typ, v := range map[crypto11.AttributeType]any{
		crypto11.CkaLabel: kekLabel, crypto11.CkaId: id, crypto11.CkaPrivate: true,
		crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		_ = tmpl.Set(typ, v)
	}
	for typ, v := range overrides {
		_ = tmpl.Set(typ, v)
	}
	if _, err := c11.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadKEK(t *testing.T) {
	v1 := []byte{0, 0, 0, 1}
	cases := []struct {
		name  string
		plant func(t *testing.T, tok softhsmtest.Token)
	}{
		{"extractable", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaExtractable: true})
		}},
		{"not sensitive", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaSensitive: false})
		}},
		{"not private", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaPrivate: false})
		}},
		{"no decrypt", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, map[crypto11.AttributeType]any{crypto11.CkaDecrypt: false})
		}},
		{"bad id", func(t *testing.T, tok softhsmtest.Token) { plantKey(t, tok, []byte{1}, nil) }},
		{"version 0", func(t *testing.T, tok softhsmtest.Token) { plantKey(t, tok, []byte{0, 0, 0, 0}, nil) }},
		{"duplicate version", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, nil)
			plantKey(t, tok, v1, nil)
		}},
		{"good v1 plus extractable v2", func(t *testing.T, tok softhsmtest.Token) {
			plantKey(t, tok, v1, nil)
			plantKey(t, tok, []byte{0, 0, 0, 2}, map[crypto11.AttributeType]any{crypto11.CkaExtractable: true})
		}},
	}
	// Every token first: the module must be closed when tokens are made.
	toks := make([]softhsmtest.Token, len(cases))
	for i := range cases {
		toks[i] = softhsmtest.NewToken(t)
	}
	control := softhsmtest.NewToken(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := toks[i]
			tc.plant(t, tok)
			k, err := hsmpkcs11.Open(t.Context(), config(tok), nil)
			if err == nil {
				_ = k.Close()
				t.Fatal("Open accepted the key set")
			}
			if got := matching(err); len(got) != 1 || got[0] != "ErrKEKInvalid" {
				t.Fatalf("Open: %q matches %v, want [ErrKEKInvalid]", err, got)
			}
			t.Logf("%v", err)
			if _, created, err := hsmpkcs11.InitKEK(t.Context(), config(tok), nil); !errors.Is(err, hsm.ErrKEKInvalid) || created {
				t.Fatalf("InitKEK: created=%v err=%v, want ErrKEKInvalid", created, err)
			}
		})
	}

	// Control: the same helper without overrides plants an acceptable KEK,
	// so the refusals above are due to the overrides.
	t.Run("control", func(t *testing.T) {
		plantKey(t, control, v1, nil)
		k := openKeyring(t, config(control))
		if k.CurrentVersion() != 1 {
			t.Fatalf("CurrentVersion = %d", k.CurrentVersion())
		}
		if _, err := k.Wrap(t.Context(), []byte("k"), nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRotateKEK(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	aad := []byte("tenant=acme")
	dek := []byte("0123456789abcdef0123456789abcdef")

	k := openKeyring(t, config(tok))
	old, err := k.Wrap(ctx, dek, aad)
	if err != nil || old.KEKVersion != 1 {
		t.Fatalf("Wrap: version %d, err %v", old.KEKVersion, err)
	}
	v, err := k.RotateKEK(ctx)
	if err != nil || v != 2 || k.CurrentVersion() != 2 {
		t.Fatalf("RotateKEK = %d, %v; current %d; want 2", v, err, k.CurrentVersion())
	}
	got, err := k.Unwrap(ctx, old, aad)
	if err != nil || !bytes.Equal(got.Reveal(), dek) {
		t.Fatalf("Unwrap of a version-1 blob after rotation: %v", err)
	}
	nw, err := k.Wrap(ctx, dek, aad)
	if err != nil || nw.KEKVersion != 2 {
		t.Fatalf("Wrap after rotation: version %d, err %v", nw.KEKVersion, err)
	}
	// A version-2 blob relabelled as version 1 fails: the versions are
	// different keys.
	relabelled := nw
	relabelled.KEKVersion = 1
	if _, err := k.Unwrap(ctx, relabelled, aad); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("relabelled blob: err = %v, want ErrUnwrap", err)
	}
	infos, err := k.KEKInfo(ctx)
	if err != nil || len(infos) != 2 || infos[0].Version != 1 || infos[1].Version != 2 || infos[1].Extractable || !infos[1].Sensitive {
		t.Fatalf("KEKInfo after rotation = %+v, %v", infos, err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	// A fresh Open picks the highest version and still unwraps both.
	k2 := openKeyring(t, config(tok))
	if k2.CurrentVersion() != 2 {
		t.Fatalf("reopened CurrentVersion = %d, want 2", k2.CurrentVersion())
	}
	for _, w := range []hsm.WrappedKey{old, nw} {
		if got, err := k2.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got.Reveal(), dek) {
			t.Fatalf("reopened Unwrap(version %d): %v", w.KEKVersion, err)
		}
	}
	// InitKEK still changes nothing.
	if v, created, err := hsmpkcs11.InitKEK(ctx, config(tok), nil); err != nil || v != 2 || created {
		t.Fatalf("InitKEK after rotation = %d, %v, %v; want 2, false, nil", v, created, err)
	}
}

// Rotation by one keyring becomes visible to another through Reload.
func TestReload(t *testing.T) {
	tok := initToken(t)
	ctx := t.Context()
	a := openKeyring(t, config(tok))
	b := openKeyring(t, config(tok))
	if _, err := a.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if b.CurrentVersion() != 1 {
		t.Fatalf("b saw the rotation without Reload: %d", b.CurrentVersion())
	}
	if err := b.Reload(ctx); err != nil || b.CurrentVersion() != 2 {
		t.Fatalf("Reload: %v, current %d", err, b.CurrentVersion())
	}
	w, err := a.Wrap(ctx, []byte("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("b unwraps a's version-2 blob: %v", err)
	}
}
