package hsm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
)

// The HSM keys are non-extractable, so these known-answer tests check the
// formats (what is wrapped, what is MACed, where the scheme byte goes)
// with software AES; hsm/pkcs11's tests check the HSM path round trips.

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// kwpWrap is RFC 5649 in software.
func kwpWrap(kek, p []byte) []byte {
	blk, _ := aes.NewCipher(kek)
	aiv := binary.BigEndian.AppendUint32([]byte{0xa6, 0x59, 0x59, 0xa6}, uint32(len(p)))
	padded := append(bytes.Clone(p), make([]byte, (8-len(p)%8)%8)...)
	if len(padded) == 8 {
		out := make([]byte, 16)
		blk.Encrypt(out, append(aiv, padded...))
		return out
	}
	n := len(padded) / 8
	a, r := aiv, padded
	b := make([]byte, 16)
	for j := range 6 {
		for i := 1; i <= n; i++ {
			blk.Encrypt(b, append(bytes.Clone(a), r[(i-1)*8:i*8]...))
			t := uint64(n*j + i)
			a = binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(b[:8])^t)
			copy(r[(i-1)*8:], b[8:])
		}
	}
	return append(a, r...)
}

// kwpUnwrap is RFC 5649's unwrap; ok is false when the check fails.
func kwpUnwrap(kek, c []byte) ([]byte, bool) {
	blk, _ := aes.NewCipher(kek)
	if len(c) < 16 || len(c)%8 != 0 {
		return nil, false
	}
	var a, r []byte
	if len(c) == 16 {
		b := make([]byte, 16)
		blk.Decrypt(b, c)
		a, r = b[:8], b[8:]
	} else {
		n := len(c)/8 - 1
		a, r = bytes.Clone(c[:8]), bytes.Clone(c[8:])
		b := make([]byte, 16)
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				t := uint64(n*j + i)
				x := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(a)^t)
				blk.Decrypt(b, append(x, r[(i-1)*8:i*8]...))
				a = bytes.Clone(b[:8])
				copy(r[(i-1)*8:], b[8:])
			}
		}
	}
	if !bytes.Equal(a[:4], []byte{0xa6, 0x59, 0x59, 0xa6}) {
		return nil, false
	}
	mli := int(binary.BigEndian.Uint32(a[4:]))
	if mli > len(r) || mli <= len(r)-8 || !bytes.Equal(r[mli:], make([]byte, len(r)-mli)) {
		return nil, false
	}
	return r[:mli], true
}

// The software KWP matches RFC 5649's own examples (section 6).
func TestKWPSoftwareMatchesRFC5649(t *testing.T) {
	kek := unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, c := range []struct{ key, wrap string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		if got := hex.EncodeToString(kwpWrap(kek, unhex(c.key))); got != c.wrap {
			t.Errorf("wrap %s = %s, want %s", c.key, got, c.wrap)
		}
		if got, ok := kwpUnwrap(kek, unhex(c.wrap)); !ok || hex.EncodeToString(got) != c.key {
			t.Errorf("unwrap %s = %x, %v", c.wrap, got, ok)
		}
	}
}

// softSeal is what an HSM holding kek (and macKey) writes for scheme s.
func softSeal(s Scheme, kek, macKey, iv, pt, aad []byte) WrappedKey {
	blk, _ := aes.NewCipher(kek)
	var ct []byte
	switch s {
	case SchemeAESGCM:
		g, _ := cipher.NewGCM(blk)
		ct = g.Seal(nil, iv, pt, aad)
	case SchemeAESKWP:
		ct = kwpWrap(kek, KWPInput(aad, pt))
	case SchemeAESCBCHMAC:
		pt = append([]byte(CBCKeyCheck), pt...)
		n := 16 - len(pt)%16
		p := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(n)}, n)...)
		ct = make([]byte, len(p))
		cipher.NewCBCEncrypter(blk, iv).CryptBlocks(ct, p)
		m := hmac.New(sha256.New, macKey)
		m.Write(CBCHMACInput(aad, iv, ct))
		ct = m.Sum(ct)
	}
	return WrappedKey{KEKVersion: 1, Nonce: WrappedKeyNonce(s, iv), Ciphertext: ct}
}

// softOpen opens w the way the backend does: scheme from the record,
// the MAC checked before decrypting, the KWP context after unwrapping.
func softOpen(kek, macKey []byte, w WrappedKey, aad []byte) ([]byte, error) {
	s, iv, err := ParseWrappedKey(w)
	if err != nil {
		return nil, err
	}
	blk, _ := aes.NewCipher(kek)
	fail := &Error{Msg: "hsm: unwrap: authentication failed", Kind: ErrUnwrap}
	switch s {
	case SchemeAESGCM:
		g, _ := cipher.NewGCM(blk)
		pt, err := g.Open(nil, iv, w.Ciphertext, aad)
		if err != nil {
			return nil, fail
		}
		return pt, nil
	case SchemeAESKWP:
		in, ok := kwpUnwrap(kek, w.Ciphertext)
		if !ok {
			return nil, fail
		}
		k, ok := KWPOpen(aad, in)
		if !ok {
			return nil, fail
		}
		return k, nil
	}
	body, tag := w.Ciphertext[:len(w.Ciphertext)-HMACSize], w.Ciphertext[len(w.Ciphertext)-HMACSize:]
	m := hmac.New(sha256.New, macKey)
	m.Write(CBCHMACInput(aad, iv, body))
	if subtle.ConstantTimeCompare(m.Sum(nil), tag) != 1 {
		return nil, fail
	}
	p := make([]byte, len(body))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(p, body)
	n := int(p[len(p)-1])
	if n == 0 || n > 16 || !bytes.HasPrefix(p, []byte(CBCKeyCheck)) {
		return nil, fail
	}
	return p[len(CBCKeyCheck) : len(p)-n], nil
}

var (
	katKEK = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	katMAC = unhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
	katDEK = unhex("dededededededededededededededededededededededededededededededede")
	katAAD = []byte("tenant=acme\x00dek=1")
)

// Known answers: the full record (Nonce and Ciphertext) of each scheme for
// fixed keys, iv and DEK. A change to any format breaks these.
func TestSchemeKnownAnswers(t *testing.T) {
	for _, c := range []struct {
		s             Scheme
		iv            []byte
		nonce, cipher string
	}{
		{SchemeAESGCM, unhex("0c0c0c0c0c0c0c0c0c0c0c0c"), "0c0c0c0c0c0c0c0c0c0c0c0c", gcmKAT},
		{SchemeAESKWP, nil, "02", kwpKAT},
		{SchemeAESCBCHMAC, unhex("16161616161616161616161616161616"), "03" + "16161616161616161616161616161616", cbcKAT},
	} {
		t.Run(c.s.String(), func(t *testing.T) {
			w := softSeal(c.s, katKEK, katMAC, c.iv, katDEK, katAAD)
			if got := hex.EncodeToString(w.Nonce); got != c.nonce {
				t.Errorf("Nonce = %s, want %s", got, c.nonce)
			}
			if got := hex.EncodeToString(w.Ciphertext); got != c.cipher {
				t.Errorf("Ciphertext = %s, want %s", got, c.cipher)
			}
			s, _, err := ParseWrappedKey(w)
			if err != nil || s != c.s {
				t.Fatalf("ParseWrappedKey = %s, %v", s, err)
			}
			pt, err := softOpen(katKEK, katMAC, w, katAAD)
			if err != nil || !bytes.Equal(pt, katDEK) {
				t.Fatalf("open: %v", err)
			}
			// Failure vectors: wrong aad, a flipped tag/MAC byte, a flipped
			// first byte, truncation, an unknown scheme byte.
			bad := map[string]WrappedKey{}
			flip := WrappedKey{KEKVersion: 1, Nonce: bytes.Clone(w.Nonce), Ciphertext: bytes.Clone(w.Ciphertext)}
			flip.Ciphertext[len(flip.Ciphertext)-1] ^= 1
			bad["last byte (tag/MAC/ICV)"] = flip
			first := WrappedKey{KEKVersion: 1, Nonce: bytes.Clone(w.Nonce), Ciphertext: bytes.Clone(w.Ciphertext)}
			first.Ciphertext[0] ^= 1
			bad["first byte"] = first
			bad["truncated"] = WrappedKey{Nonce: w.Nonce, Ciphertext: w.Ciphertext[:len(w.Ciphertext)-8]}
			bad["truncated to nothing"] = WrappedKey{Nonce: w.Nonce}
			bad["unknown scheme"] = WrappedKey{Nonce: append([]byte{9}, c.iv...), Ciphertext: w.Ciphertext}
			bad["GCM framed"] = WrappedKey{Nonce: append([]byte{1}, c.iv...), Ciphertext: w.Ciphertext}
			for name, b := range bad {
				if _, err := softOpen(katKEK, katMAC, b, katAAD); !errors.Is(err, ErrUnwrap) {
					t.Errorf("%s: err = %v, want ErrUnwrap", name, err)
				}
			}
			// Encrypted under another key: for CBC-HMAC the shared MAC key
			// verifies, and the key check block is what refuses it.
			otherKEK := bytes.Repeat([]byte{0x42}, 32)
			for i := range 64 { // many blobs, so a lucky CBC padding cannot pass
				other := softSeal(c.s, otherKEK, katMAC, c.iv, append(bytes.Clone(katDEK), byte(i)), katAAD)
				if _, err := softOpen(katKEK, katMAC, other, katAAD); !errors.Is(err, ErrUnwrap) {
					t.Fatalf("blob %d under another key: err = %v, want ErrUnwrap", i, err)
				}
			}
			if _, err := softOpen(katKEK, katMAC, w, []byte("tenant=acme\x00dek=2")); !errors.Is(err, ErrUnwrap) {
				t.Errorf("wrong aad: err = %v, want ErrUnwrap", err)
			}
		})
	}
}

// The CBC-HMAC MAC covers the aad, the iv and the ciphertext, and the
// KWP context the aad: pinned byte for byte.
func TestSchemeMACAndContextInputs(t *testing.T) {
	got := CBCHMACInput([]byte("ad"), []byte{1, 2}, []byte{3})
	want := append([]byte("vaultd/cbc-hmac\x00\x00\x00\x00\x02ad"), 1, 2, 3)
	if !bytes.Equal(got, want) {
		t.Errorf("CBCHMACInput = %q, want %q", got, want)
	}
	in := KWPInput([]byte("ad"), []byte("key"))
	if want := []byte("vaultd/kwp\x00\x00\x00\x00\x02adkey"); !bytes.Equal(in, want) {
		t.Errorf("KWPInput = %q, want %q", in, want)
	}
	if k, ok := KWPOpen([]byte("ad"), in); !ok || string(k) != "key" {
		t.Errorf("KWPOpen = %q, %v", k, ok)
	}
	for _, aad := range [][]byte{nil, []byte("a"), []byte("ae"), []byte("adk")} {
		if _, ok := KWPOpen(aad, in); ok {
			t.Errorf("KWPOpen with aad %q accepted", aad)
		}
	}
	if _, ok := KWPOpen([]byte("ad"), in[:5]); ok {
		t.Error("KWPOpen accepted a short input")
	}
}

func TestSchemeNames(t *testing.T) {
	for _, s := range Schemes() {
		if got, ok := ParseScheme(s.String()); !ok || got != s {
			t.Errorf("ParseScheme(%q) = %v, %v", s, got, ok)
		}
	}
	if s, ok := ParseScheme(""); !ok || s != 0 {
		t.Error(`ParseScheme("") is not the zero Scheme`)
	}
	if _, ok := ParseScheme("AES-CTR"); ok {
		t.Error("ParseScheme accepted AES-CTR")
	}
	if Scheme(0).Valid() || Scheme(4).Valid() || !SchemeAESKWP.Valid() {
		t.Error("Valid")
	}
}

// Legacy records (GCM, bare 12-byte nonce) and version-1 tenant blobs
// keep their meaning; version-2 blobs carry the scheme and bind it.
func TestTenantWrappedScheme(t *testing.T) {
	iv := bytes.Repeat([]byte{7}, 16)
	ct := make([]byte, 64+HMACSize)
	b := AppendTenantWrappedScheme(nil, SchemeAESCBCHMAC, iv, ct)
	if b[0] != TenantWrapVersionScheme || Scheme(b[1]) != SchemeAESCBCHMAC || len(b) != 2+16+len(ct) {
		t.Fatalf("blob %x", b[:2])
	}
	s, gotIV, gotCT, aad, err := ParseTenantWrappedScheme("acme", b)
	if err != nil || s != SchemeAESCBCHMAC || !bytes.Equal(gotIV, iv) || !bytes.Equal(gotCT, ct) {
		t.Fatalf("ParseTenantWrappedScheme = %v, %v", s, err)
	}
	if want := append(TenantWrapAAD("acme", 2), byte(SchemeAESCBCHMAC)); !bytes.Equal(aad, want) {
		t.Errorf("aad = %q, want %q", aad, want)
	}
	v1 := AppendTenantWrappedScheme(nil, SchemeAESGCM, make([]byte, 12), make([]byte, 48))
	if v1[0] != TenantWrapVersion {
		t.Fatal("GCM tenant blob is not version 1")
	}
	s, _, _, aad, err = ParseTenantWrappedScheme("acme", v1)
	if err != nil || s != SchemeAESGCM || !bytes.Equal(aad, TenantWrapAAD("acme", 1)) {
		t.Fatalf("version 1: %v, %v", s, err)
	}
	// 2 | 3 | iv[16] | CBC-PAD(check 16 + key 32)=64 | HMAC[32]; KWP: the 29-byte aad
	// and the label make a 76-byte input, RFC 5649 writes 88.
	for _, c := range []struct {
		s    Scheme
		want int
	}{{SchemeAESGCM, 61}, {SchemeAESCBCHMAC, 114}, {SchemeAESKWP, 90}} {
		if got := TenantWrappedLen("acme", c.s, 32); got != c.want {
			t.Errorf("TenantWrappedLen(%s) = %d, want %d", c.s, got, c.want)
		}
	}
	kwp := AppendTenantWrappedScheme(nil, SchemeAESKWP, nil, make([]byte, 40))
	for _, bad := range [][]byte{{2}, {2, 1}, {2, 9}, {2, 0}, b[:20], b[:len(b)-1], kwp[:len(kwp)-4], {3, 2}} {
		if _, _, _, _, err := ParseTenantWrappedScheme("acme", bad); !errors.Is(err, ErrUnwrap) {
			t.Errorf("ParseTenantWrappedScheme(%x): %v, want ErrUnwrap", bad, err)
		}
	}
}

func FuzzParseWrappedKey(f *testing.F) {
	f.Add(make([]byte, 12), make([]byte, 48))
	f.Add([]byte{2}, make([]byte, 48))
	f.Add(append([]byte{3}, make([]byte, 16)...), make([]byte, 64))
	f.Add([]byte{1}, make([]byte, 16))
	f.Fuzz(func(t *testing.T, nonce, ct []byte) {
		s, iv, err := ParseWrappedKey(WrappedKey{Nonce: nonce, Ciphertext: ct})
		if err != nil {
			if !errors.Is(err, ErrUnwrap) {
				t.Fatalf("err %v is not ErrUnwrap", err)
			}
			return
		}
		if !s.Valid() || len(iv) != s.IVSize() || len(ct) < s.minCiphertext() {
			t.Fatalf("accepted %s with iv %d, ct %d", s, len(iv), len(ct))
		}
		if again := WrappedKeyNonce(s, iv); !bytes.Equal(again, nonce) {
			t.Fatalf("nonce %x re-encodes as %x", nonce, again)
		}
	})
}

func FuzzParseTenantWrappedScheme(f *testing.F) {
	f.Add(AppendTenantWrappedScheme(nil, SchemeAESGCM, make([]byte, 12), make([]byte, 48)))
	f.Add(AppendTenantWrappedScheme(nil, SchemeAESKWP, nil, make([]byte, 48)))
	f.Add(AppendTenantWrappedScheme(nil, SchemeAESCBCHMAC, make([]byte, 16), make([]byte, 64)))
	f.Add([]byte{2, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, iv, ct, aad, err := ParseTenantWrappedScheme("acme", b)
		if err != nil {
			if !errors.Is(err, ErrUnwrap) {
				t.Fatalf("err %v is not ErrUnwrap", err)
			}
			return
		}
		if again := AppendTenantWrappedScheme(nil, s, iv, ct); !bytes.Equal(again, b) {
			t.Fatalf("blob %x re-encodes as %x", b, again)
		}
		if len(aad) == 0 {
			t.Fatal("no aad")
		}
	})
}

// The expected ciphertexts. The CBC-HMAC and KWP values were checked
// against OpenSSL 3.0 (openssl enc -aes-256-cbc / -id-aes256-wrap-pad,
// openssl dgst -sha256 -mac HMAC) over the inputs these tests compose.
const (
	gcmKAT = "2a6dc52780c7b4b11d29ee95085c5ae070795d317ebbdfe7ed31dedcdd19e031c0d5dd53f72818bcebef37cdfe2f3479"
	kwpKAT = "181dcce190f81386cc474340567124a50ef79364b40f84e7c5d51e7af5a98f0a2b12cc52e89663edb796a5670fd2a6eb1e86419b3898f21b26bb1aa55d03e0671e55587c55d57f6f"
	cbcKAT = "a111a1b5a2d1ed51b98e330387beef4dcc3d0902ab48ab7e5cb8f76bb1ec3f81fc2fb4083e7402e49287fd0d666c0dcf9bbdff5b47d7f44dc5759e8e857e1b2c" +
		"cf12118e5804a7eb844ec138d1e8242f4e6d6dd5ed7efb9c94dbbe5974107703"
)
