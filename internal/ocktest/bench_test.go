//go:build cgo

package ocktest_test

import (
	"bytes"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/ocktest"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/softhsmtest"
)

// benchWrap measures one wrap and one unwrap of a 32-byte DEK under cfg's
// KEK (docs/benchmarks-components.md, "Wrapping schemes").
func benchWrap(b *testing.B, name string, cfg hsmpkcs11.Config) {
	if _, _, err := hsmpkcs11.InitKEK(b.Context(), cfg, nil); err != nil {
		b.Fatalf("%s: InitKEK: %v", name, err)
	}
	k, err := hsmpkcs11.Open(b.Context(), cfg, nil)
	if err != nil {
		b.Fatalf("%s: Open: %v", name, err)
	}
	defer func() { _ = k.Close() }()
	dek := bytes.Repeat([]byte{7}, 32)
	aad := []byte("tenant=acme\x00dek=1")
	w, err := k.Wrap(b.Context(), dek, aad)
	if err != nil {
		b.Fatalf("%s: Wrap: %v", name, err)
	}
	b.Run(name+"/wrap", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Wrap(b.Context(), dek, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(name+"/unwrap", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Unwrap(b.Context(), w, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSchemes: each scheme SoftHSMv2 runs, forced. SoftHSM reads its
// conf once, at the first C_Initialize, so its tokens are all made first.
// Run it in its own process (-bench 'BenchmarkSchemes$'): openCryptoki's
// C_Initialize crashes in a process that loaded and finalised SoftHSM.
func BenchmarkSchemes(b *testing.B) {
	schemes := []hsm.Scheme{hsm.SchemeAESGCM, hsm.SchemeAESCBCHMAC}
	conf := softhsmtest.NewConf(b)
	toks := make([]softhsmtest.Token, len(schemes))
	for i := range schemes {
		toks[i] = conf.NewToken(b)
	}
	b.Setenv("SOFTHSM2_CONF", conf.Path)
	for i, s := range schemes {
		benchWrap(b, "softhsm/"+s.String(), hsmpkcs11.Config{Module: toks[i].Module, TokenLabel: toks[i].Label,
			PIN: secret.NewString(toks[i].PIN), KEKLabel: "bench-kek", ForceScheme: s})
	}
}

// BenchmarkSchemesOpenCryptoki: the scheme openCryptoki's soft token
// negotiates (-bench BenchmarkSchemesOpenCryptoki, in its own process).
func BenchmarkSchemesOpenCryptoki(b *testing.B) {
	tok := ocktest.Need(b)
	benchWrap(b, "opencryptoki/negotiated", hsmpkcs11.Config{Module: tok.Module, TokenLabel: tok.Label,
		PIN: secret.NewString(tok.PIN), KEKLabel: tok.KeyLabel("bench")})
}
