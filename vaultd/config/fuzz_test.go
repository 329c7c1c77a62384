package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/ids"
)

// FuzzParse: any document either parses into a config that satisfies the
// invariants the rest of vaultd relies on, or yields one well-formed error.
// It never panics (a panic inside go-toml is turned into an error that this
// target reports as a failure).
func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(base))
	f.Add([]byte(""))
	f.Add([]byte("[server]\nlistn = 1\n"))
	f.Add([]byte("[server]\nrequest_timeout = 5\n"))
	f.Add([]byte("storage = { path = \"x\", lock_timeout = \"1s\" }\n[providers]\na = { timeout = 3 }\n"))
	f.Add([]byte("[[principals]]\nuri_san = \"a:b\"\nroles = [\"app\", \"app\"]\n[[principals]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "/fuzz", ModeSyntax)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "config <input>: ") || strings.ContainsAny(msg, "\n\r") || !errors.Is(err, ErrInvalid) {
				t.Fatalf("malformed error %q", msg)
			}
			if strings.Contains(msg, errDecoderPanic) {
				t.Fatalf("decoder panicked")
			}
			return
		}
		if cfg.Server.Listen == "" || cfg.HSM.Module == "" || cfg.Storage.Path == "" || cfg.HSM.MaxSessions < 1 {
			t.Fatalf("required keys missing in accepted config: %+v", cfg)
		}
		for _, d := range []Duration{cfg.Server.RequestTimeout, cfg.Server.ShutdownTimeout, cfg.Storage.LockTimeout} {
			if d.Duration() <= 0 {
				t.Fatalf("non-positive duration accepted")
			}
		}
		for name, p := range cfg.Providers {
			if p == nil || p.Name != name || p.TokenEndpoint == nil || p.APIBase == nil ||
				p.Timeout.Duration() <= 0 || p.RefreshMargin.Duration() <= 0 || p.DefaultTokenLifetime.Duration() <= 0 {
				t.Fatalf("provider %q accepted with bad values: %+v", name, p)
			}
		}
		for _, p := range cfg.Principals {
			if (p.URISAN == "") == (p.SubjectCN == "") || (p.Tenant != "" && !ids.Valid(p.Tenant)) {
				t.Fatalf("principal accepted with bad values: %+v", p)
			}
		}
		if tc := cfg.TenantContext; tc != nil && (tc.TenantClaim == "" || tc.MaxLifetime.Duration() <= 0 || tc.ClockSkew.Duration() <= 0) {
			t.Fatalf("tenant_context accepted with bad values: %+v", tc)
		}
	})
}
