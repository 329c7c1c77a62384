package daemon

import (
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/config"
)

// TestKeyringConfig: every [hsm] key reaches the backend's Config.
func TestKeyringConfig(t *testing.T) {
	c := config.HSMConfig{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "vaultd", KEKLabel: "vaultd-kek", MaxSessions: 3}
	hc := keyringConfig(&c, secret.NewString("1234"))
	if hc.Module != c.Module || hc.TokenLabel != "vaultd" || hc.KEKLabel != "vaultd-kek" ||
		hc.MaxSessions != 3 || hc.PIN.Reveal() != "1234" {
		t.Errorf("%+v", hc)
	}
}
