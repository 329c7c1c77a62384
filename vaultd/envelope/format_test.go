package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateVectors = flag.Bool("update-vectors", false, "regenerate testdata/vectors.json (only for a deliberate format change)")

func randKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

var testAAD = AAD{Tenant: "acme", Integration: "crm-1", Field: "refresh_token"}

func TestSealOpenRoundTrip(t *testing.T) {
	key := randKey(t)
	for _, pt := range [][]byte{nil, {}, []byte("x"), []byte("ya29.a0AfH6SMB-access-token"), bytes.Repeat([]byte{0xA5}, 4096)} {
		sealed, err := Seal(key, 7, testAAD, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(pt)+Overhead {
			t.Fatalf("len %d, want %d", len(sealed), len(pt)+Overhead)
		}
		h, err := ParseHeader(sealed)
		if err != nil {
			t.Fatal(err)
		}
		if h.Format != FormatV1 || h.DEKVersion != 7 || len(h.Nonce) != NonceSize || len(h.Body) != len(pt)+TagSize {
			t.Fatalf("header %+v", h)
		}
		got, err := Open(key, testAAD, sealed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatal("round trip changed plaintext")
		}
		if len(pt) >= 8 && bytes.Contains(sealed, pt) {
			t.Fatal("plaintext visible in sealed value")
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	key := randKey(t)
	seen := map[string]bool{}
	for range 64 {
		s, err := Seal(key, 1, testAAD, []byte("same"))
		if err != nil {
			t.Fatal(err)
		}
		h, _ := ParseHeader(s)
		if seen[string(h.Nonce)] {
			t.Fatal("nonce repeated")
		}
		seen[string(h.Nonce)] = true
	}
}

func TestOpenRejectsMovedCiphertext(t *testing.T) {
	key := randKey(t)
	sealed, err := Seal(key, 3, testAAD, []byte("token"))
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]AAD{
		"other tenant":      {Tenant: "globex", Integration: testAAD.Integration, Field: testAAD.Field},
		"other integration": {Tenant: testAAD.Tenant, Integration: "crm-2", Field: testAAD.Field},
		"other field":       {Tenant: testAAD.Tenant, Integration: testAAD.Integration, Field: "access_token"},
		// Same concatenation, different split: only length prefixes tell these apart.
		"shifted boundary 1": {Tenant: "acmec", Integration: "rm-1", Field: testAAD.Field},
		"shifted boundary 2": {Tenant: testAAD.Tenant, Integration: "crm-1r", Field: "efresh_token"},
	} {
		if _, err := Open(key, a, sealed); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
		}
	}
	if _, err := Open(randKey(t), testAAD, sealed); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other key: err = %v, want ErrDecrypt", err)
	}
	// Re-labelled DEK version (same key): the version is in the additional data.
	relabel := bytes.Clone(sealed)
	binary.BigEndian.PutUint32(relabel[4:], 4)
	if _, err := Open(key, testAAD, relabel); !errors.Is(err, ErrDecrypt) {
		t.Errorf("relabelled version: err = %v, want ErrDecrypt", err)
	}
}

func TestAdditionalDataInjective(t *testing.T) {
	a, _ := additionalData(AAD{"a", "bc", "d"}, FormatV1, 1)
	b, _ := additionalData(AAD{"ab", "c", "d"}, FormatV1, 1)
	c, _ := additionalData(AAD{"a\x00\x00\x00\x02bc", "x", "d"}, FormatV1, 1)
	if bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(b, c) {
		t.Fatal("additional data is ambiguous")
	}
	f2, _ := additionalData(AAD{"a", "bc", "d"}, 2, 1)
	v2, _ := additionalData(AAD{"a", "bc", "d"}, FormatV1, 2)
	if bytes.Equal(a, f2) || bytes.Equal(a, v2) {
		t.Fatal("format or DEK version not bound")
	}
}

// TestAdditionalDataEncoding pins the byte layout documented in doc.go
// (also checked against an independent implementation when the vectors
// were made).
func TestAdditionalDataEncoding(t *testing.T) {
	got, err := additionalData(AAD{"acme", "crm-1", "refresh_token"}, FormatV1, 0x01020304)
	if err != nil {
		t.Fatal(err)
	}
	want := "vaultd/envelope/v1\x00" +
		"\x00\x00\x00\x04acme" +
		"\x00\x00\x00\x05crm-1" +
		"\x00\x00\x00\x0drefresh_token" +
		"\x01" + "\x01\x02\x03\x04"
	if string(got) != want {
		t.Fatalf("additional data\n got %q\nwant %q", got, want)
	}
	dek := dekAAD("acme", 7)
	if string(dek) != "vaultd/dek/v1\x00\x00\x00\x00\x04acme\x00\x00\x00\x07" {
		t.Fatalf("DEK wrap AAD %q", dek)
	}
}

func TestEveryFlippedBitFails(t *testing.T) {
	key := randKey(t)
	sealed, err := Seal(key, 1, testAAD, []byte("refresh-token-value"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		for bit := range 8 {
			c := bytes.Clone(sealed)
			c[i] ^= 1 << bit
			_, err := Open(key, testAAD, c)
			switch {
			case i < 4: // magic and format byte
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("byte %d bit %d: err = %v, want ErrFormat", i, bit, err)
				}
			default:
				if !errors.Is(err, ErrDecrypt) {
					t.Fatalf("byte %d bit %d: err = %v, want ErrDecrypt", i, bit, err)
				}
			}
		}
	}
	for n := range len(sealed) {
		if _, err := Open(key, testAAD, sealed[:n]); err == nil {
			t.Fatalf("truncated to %d bytes opened", n)
		}
	}
	if _, err := Open(key, testAAD, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extended: err = %v", err)
	}
}

func TestUnknownFormatVersion(t *testing.T) {
	key := randKey(t)
	sealed, err := Seal(key, 1, testAAD, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []byte{0x00, 0x02, 0xFF} {
		c := bytes.Clone(sealed)
		c[3] = v
		if _, err := ParseHeader(c); !errors.Is(err, ErrFormat) {
			t.Errorf("format %#x: ParseHeader err = %v", v, err)
		}
		if _, err := Open(key, testAAD, c); !errors.Is(err, ErrFormat) {
			t.Errorf("format %#x: Open err = %v", v, err)
		}
	}
	for _, in := range [][]byte{nil, []byte("VD"), []byte("XDE\x01" + strings.Repeat("\x00", 40)), sealed[:Overhead-1]} {
		if _, err := ParseHeader(in); !errors.Is(err, ErrFormat) {
			t.Errorf("%q: err = %v, want ErrFormat", in, err)
		}
	}
}

func TestKeySizeAndAAD(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := Seal(make([]byte, n), 1, testAAD, []byte("p")); !errors.Is(err, ErrKeySize) {
			t.Errorf("key %d bytes: Seal err = %v", n, err)
		}
	}
	key := randKey(t)
	sealed, _ := Seal(key, 1, testAAD, []byte("p"))
	if _, err := Open(key[:16], testAAD, sealed); !errors.Is(err, ErrKeySize) {
		t.Errorf("Open short key: %v", err)
	}
	for _, a := range []AAD{{}, {"", "i", "f"}, {"t", "", "f"}, {"t", "i", ""}, {strings.Repeat("t", maxNameLen+1), "i", "f"}} {
		if _, err := Seal(key, 1, a, []byte("p")); !errors.Is(err, ErrAAD) {
			t.Errorf("%+v: Seal err = %v", a, err)
		}
		if _, err := Open(key, a, sealed); !errors.Is(err, ErrAAD) {
			t.Errorf("%+v: Open err = %v", a, err)
		}
	}
}

// TestErrorsCarryNoSecrets checks every error path's message against the key
// and plaintext.
func TestErrorsCarryNoSecrets(t *testing.T) {
	key := bytes.Repeat([]byte("K"), KeySize)
	pt := []byte("PLAINTEXT-SECRET")
	sealed, _ := Seal(key, 1, testAAD, pt)
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	var errs []error
	_, err := Open(key, testAAD, bad)
	errs = append(errs, err)
	_, err = Open(key[:31], testAAD, sealed)
	errs = append(errs, err)
	_, err = Seal(append(bytes.Clone(key), 'K'), 1, testAAD, pt)
	errs = append(errs, err)
	_, err = Open(key, testAAD, sealed[:10])
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected an error")
		}
		msg := err.Error()
		for _, s := range []string{string(key), hex.EncodeToString(key), string(pt), hex.EncodeToString(pt), "KKKK"} {
			if strings.Contains(msg, s) {
				t.Fatalf("error %q leaks secret material", msg)
			}
		}
	}
}

// Known-answer vectors: regenerate only with -update-vectors for a
// deliberate, versioned format change.

type vector struct {
	Name        string `json:"name"`
	Key         string `json:"key"`
	DEKVersion  uint32 `json:"dek_version"`
	Tenant      string `json:"tenant"`
	Integration string `json:"integration"`
	Field       string `json:"field"`
	Nonce       string `json:"nonce"`
	Plaintext   string `json:"plaintext"`
	Sealed      string `json:"sealed"`
}

type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

const vectorsPath = "testdata/vectors.json"

func vectorInputs() []vector {
	seq := func(n int, start byte) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = start + byte(i)
		}
		return hex.EncodeToString(b)
	}
	return []vector{
		{Name: "empty plaintext", Key: seq(32, 0x00), DEKVersion: 1, Tenant: "acme", Integration: "crm", Field: "access_token", Nonce: seq(12, 0xA0), Plaintext: ""},
		{Name: "access token", Key: seq(32, 0x20), DEKVersion: 1, Tenant: "acme", Integration: "crm-1", Field: "access_token", Nonce: seq(12, 0x10), Plaintext: hex.EncodeToString([]byte("ya29.a0AfH6SMBexampleAccessToken"))},
		{Name: "refresh token, rotated DEK", Key: seq(32, 0x40), DEKVersion: 42, Tenant: "globex.eu", Integration: "mail_2", Field: "refresh_token", Nonce: seq(12, 0x00), Plaintext: hex.EncodeToString([]byte("1//0gExampleRefreshToken-_"))},
		{Name: "max DEK version, 1 KiB", Key: seq(32, 0xE0), DEKVersion: 0xFFFFFFFF, Tenant: "T", Integration: "I", Field: "F", Nonce: seq(12, 0xF0), Plaintext: seq(1024, 0x00)},
		{Name: "non-ASCII names", Key: seq(32, 0x80), DEKVersion: 2, Tenant: "tenant\x00with-nul", Integration: "int\u00e9gration", Field: "f\u00e9ld", Nonce: seq(12, 0x33), Plaintext: hex.EncodeToString([]byte{0, 1, 2, 0xFF})},
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		vs := vectorInputs()
		for i := range vs {
			v := &vs[i]
			s, err := sealWithNonce(mustHex(t, v.Key), v.DEKVersion, AAD{v.Tenant, v.Integration, v.Field}, mustHex(t, v.Nonce), mustHex(t, v.Plaintext))
			if err != nil {
				t.Fatal(err)
			}
			v.Sealed = hex.EncodeToString(s)
		}
		out, err := json.MarshalIndent(vectorFile{
			Comment: "vaultd envelope format v1 known-answer vectors: AES-256-GCM, additional data as in doc.go. Hex fields; never regenerate for an existing format version.",
			Vectors: vs,
		}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.FromSlash(vectorsPath), append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(filepath.FromSlash(vectorsPath))
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) != len(vectorInputs()) {
		t.Fatalf("%d vectors, want %d", len(f.Vectors), len(vectorInputs()))
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			key, nonce, pt, want := mustHex(t, v.Key), mustHex(t, v.Nonce), mustHex(t, v.Plaintext), mustHex(t, v.Sealed)
			aad := AAD{v.Tenant, v.Integration, v.Field}
			got, err := sealWithNonce(key, v.DEKVersion, aad, nonce, pt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("seal changed:\n got %x\nwant %x", got, want)
			}
			opened, err := Open(key, aad, want)
			if err != nil {
				t.Fatalf("Open stored vector: %v", err)
			}
			if !bytes.Equal(opened, pt) {
				t.Fatal("stored vector opened to other plaintext")
			}
			h, err := ParseHeader(want)
			if err != nil || h.DEKVersion != v.DEKVersion || !bytes.Equal(h.Nonce, nonce) || h.Format != FormatV1 {
				t.Fatalf("header %+v, %v", h, err)
			}
		})
	}
}

// Fuzzing. Seeds live in testdata/fuzz/<name>/ as well as below.

func FuzzParseHeader(f *testing.F) {
	key := bytes.Repeat([]byte{1}, KeySize)
	valid, _ := sealWithNonce(key, 9, testAAD, make([]byte, NonceSize), []byte("seed"))
	f.Add(valid)
	f.Add([]byte{})
	f.Add([]byte("VDE"))
	f.Add([]byte("VDE\x02"))
	f.Add(valid[:Overhead-1])
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseHeader(in)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			return
		}
		if h.Format != FormatV1 || len(h.Nonce) != NonceSize || len(h.Body) < TagSize ||
			len(in) != prefixLen+len(h.Nonce)+len(h.Body) || string(in[:3]) != magic {
			t.Fatalf("accepted inconsistent header %+v for %d bytes", h, len(in))
		}
	})
}

func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{2}, KeySize)
	valid, _ := sealWithNonce(key, 1, testAAD, bytes.Repeat([]byte{3}, NonceSize), []byte("refresh"))
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add([]byte("VDE\x01\x00\x00\x00\x01"))
	f.Add(bytes.Repeat([]byte{0}, 64))
	f.Fuzz(func(t *testing.T, in []byte) {
		pt, err := Open(key, testAAD, in)
		if err == nil {
			// Anything else authenticating would be a forgery.
			if !bytes.Equal(in, valid) || string(pt) != "refresh" {
				t.Fatalf("forged input opened: %x", in)
			}
			return
		}
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrDecrypt) {
			t.Fatalf("err = %v, want ErrFormat or ErrDecrypt", err)
		}
	})
}

// FuzzAADBinding checks that a value sealed for one (tenant, integration,
// field) opens under exactly that triple.
func FuzzAADBinding(f *testing.F) {
	f.Add("acme", "crm", "access_token", "acme", "crm", "refresh_token")
	f.Add("a", "bc", "d", "ab", "c", "d")
	f.Add("t\x00", "i", "f", "t", "\x00i", "f")
	f.Add("x", "y", "z", "x", "y", "z")
	key := bytes.Repeat([]byte{4}, KeySize)
	f.Fuzz(func(t *testing.T, t1, i1, f1, t2, i2, f2 string) {
		a1, a2 := AAD{t1, i1, f1}, AAD{t2, i2, f2}
		sealed, err := Seal(key, 1, a1, []byte("v"))
		if err != nil {
			if !errors.Is(err, ErrAAD) {
				t.Fatalf("Seal: %v", err)
			}
			return
		}
		_, err = Open(key, a2, sealed)
		if (err == nil) != (a1 == a2) {
			t.Fatalf("Open(%q) after Seal(%q): err = %v", a2, a1, err)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	key := randKey(b)
	pt := bytes.Repeat([]byte("x"), 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := Seal(key, 1, testAAD, pt); err != nil {
			b.Fatal(err)
		}
	}
}
