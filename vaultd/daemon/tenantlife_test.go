package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
)

// The HSM-operation counter must not hide the tenant keys from the DEK
// cache (which finds them by type assertion): without them every DEK
// would be wrapped once and offboarding could shred nothing.
func TestCountingKeyringKeepsTenantKeys(t *testing.T) {
	reg := prometheus.NewRegistry()
	fake := hsmtest.NewFake()
	kr := withTenantKeys(newCountingKeyring(fake, reg), fake)
	tk, ok := kr.(hsm.TenantKeyring)
	if !ok {
		t.Fatal("the counting keyring hides hsm.TenantKeyring")
	}
	ctx := t.Context()
	if err := tk.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	blob, err := tk.WrapForTenant(ctx, "acme", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.UnwrapForTenant(ctx, "acme", blob); err != nil {
		t.Fatal(err)
	}
	if err := tk.DestroyTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if has, err := tk.HasTenantKey(ctx, "acme"); has || err != nil {
		t.Fatalf("HasTenantKey after destroy: %v %v", has, err)
	}
	want := `
# HELP vaultd_hsm_operations_total PKCS#11 key operations by kind (wrap, unwrap), failures included; health pings are not counted.
# TYPE vaultd_hsm_operations_total counter
vaultd_hsm_operations_total{op="unwrap"} 1
vaultd_hsm_operations_total{op="wrap"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "vaultd_hsm_operations_total"); err != nil {
		t.Fatal(err)
	}
	// A keyring without tenant keys stays without.
	if _, ok := withTenantKeys(newCountingKeyring(legacyKR{fake}, prometheus.NewRegistry()), legacyKR{fake}).(hsm.TenantKeyring); ok {
		t.Fatal("tenant keys invented for a keyring that has none")
	}
}

type legacyKR struct{ hsm.Keyring }

func TestRevocationRetryEvery(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		0: time.Second, time.Second: time.Second, 10 * time.Second: 10 * time.Second,
		30 * time.Second: 30 * time.Second, time.Hour: 30 * time.Second,
	} {
		if got := revocationRetryEvery(in); got != want {
			t.Errorf("revocationRetryEvery(%v) = %v, want %v", in, got, want)
		}
	}
}
