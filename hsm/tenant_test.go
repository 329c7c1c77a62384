package hsm

import (
	"bytes"
	"errors"
	"testing"
)

func TestTenantWrapAADInjective(t *testing.T) {
	seen := map[string]string{}
	for _, c := range []struct {
		tenant string
		v      byte
	}{{"acme", 1}, {"acme", 2}, {"acm", 1}, {"acme1", 1}, {"a", 1}, {"", 1}} {
		aad := string(TenantWrapAAD(c.tenant, c.v))
		if prev, dup := seen[aad]; dup {
			t.Fatalf("AAD of %q/%d equals that of %s", c.tenant, c.v, prev)
		}
		seen[aad] = c.tenant
	}
	want := []byte("vaultd/tenant-wrap\x00\x00\x00\x00\x04acme\x01")
	if got := TenantWrapAAD("acme", 1); !bytes.Equal(got, want) {
		t.Fatalf("TenantWrapAAD = %q, want %q", got, want)
	}
}

func TestTenantWrappedRoundTrip(t *testing.T) {
	nonce := bytes.Repeat([]byte{7}, TenantWrapNonceSize)
	ct := bytes.Repeat([]byte{9}, 48)
	b := AppendTenantWrapped(nil, nonce, ct)
	if len(b) != 1+len(nonce)+len(ct) || b[0] != TenantWrapVersion {
		t.Fatalf("blob = %x", b)
	}
	n, c, err := ParseTenantWrapped(b)
	if err != nil || !bytes.Equal(n, nonce) || !bytes.Equal(c, ct) {
		t.Fatalf("ParseTenantWrapped = %x, %x, %v", n, c, err)
	}
	for _, bad := range [][]byte{nil, {}, b[:TenantWrapOverhead-1], append([]byte{2}, b[1:]...), append([]byte{0}, b[1:]...)} {
		if _, _, err := ParseTenantWrapped(bad); !errors.Is(err, ErrUnwrap) {
			t.Errorf("ParseTenantWrapped(%x): err = %v, want ErrUnwrap", bad, err)
		}
	}
	// The shortest valid blob: an empty plaintext.
	if _, c, err := ParseTenantWrapped(b[:TenantWrapOverhead]); err != nil || len(c) != TenantWrapTagSize {
		t.Errorf("shortest blob: %d-byte ciphertext, %v", len(c), err)
	}
}

func FuzzParseTenantWrapped(f *testing.F) {
	f.Add(AppendTenantWrapped(nil, make([]byte, TenantWrapNonceSize), make([]byte, 48)))
	f.Add([]byte{1})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, ct, err := ParseTenantWrapped(b)
		if err != nil {
			if !errors.Is(err, ErrUnwrap) {
				t.Fatalf("error %v is not ErrUnwrap", err)
			}
			return
		}
		if len(nonce) != TenantWrapNonceSize || len(ct) < TenantWrapTagSize {
			t.Fatalf("parsed a %d-byte nonce and %d-byte ciphertext", len(nonce), len(ct))
		}
		if again := AppendTenantWrapped(nil, nonce, ct); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}
