//go:build !cgo

package pkcs11_test

import (
	"errors"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	hsmpkcs11 "github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/internal/secret"
)

// Without cgo, Open and InitKEK fail at once with a message that says why,
// and the error still classifies as a module failure.
func TestWithoutCgo(t *testing.T) {
	cfg := hsmpkcs11.Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "vaultd", PIN: secret.NewString("1234"), KEKLabel: "vaultd-kek"}
	const want = "vaultd was built without cgo; the PKCS#11 backend needs it"
	k, err := hsmpkcs11.Open(t.Context(), cfg, nil)
	if k != nil || !errors.Is(err, hsmpkcs11.ErrNoCgo) || !errors.Is(err, hsm.ErrModule) || err.Error() != want {
		t.Fatalf("Open = %v, %v; want nil, %q", k, err, want)
	}
	if v, created, err := hsmpkcs11.InitKEK(t.Context(), cfg, nil); v != 0 || created || !errors.Is(err, hsmpkcs11.ErrNoCgo) {
		t.Fatalf("InitKEK = %d, %v, %v; want ErrNoCgo", v, created, err)
	}
	// The stub's tenant-key methods fail the same way.
	var k0 *hsmpkcs11.PKCS11
	for name, err := range map[string]error{
		"CreateTenantKey":  k0.CreateTenantKey(t.Context(), "acme"),
		"DestroyTenantKey": k0.DestroyTenantKey(t.Context(), "acme"),
	} {
		if !errors.Is(err, hsmpkcs11.ErrNoCgo) {
			t.Errorf("%s = %v, want ErrNoCgo", name, err)
		}
	}
	if _, err := k0.WrapForTenant(t.Context(), "acme", []byte("k")); !errors.Is(err, hsmpkcs11.ErrNoCgo) {
		t.Errorf("WrapForTenant = %v, want ErrNoCgo", err)
	}
	if _, err := k0.UnwrapForTenant(t.Context(), "acme", []byte("k")); !errors.Is(err, hsmpkcs11.ErrNoCgo) {
		t.Errorf("UnwrapForTenant = %v, want ErrNoCgo", err)
	}
	if ok, err := k0.HasTenantKey(t.Context(), "acme"); ok || !errors.Is(err, hsmpkcs11.ErrNoCgo) {
		t.Errorf("HasTenantKey = %v, %v; want ErrNoCgo", ok, err)
	}
}
