package settings

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// settingsBase is a minimal config for ModeSyntax (no file is touched).
const settingsBase = `[server]
listen    = "127.0.0.1:8443"
tls_cert  = "tls/server.crt"
tls_key   = "tls/server.key"
client_ca = "tls/client-ca.crt"

[hsm]
module      = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "vaultd"
pin_file    = "hsm.pin"
kek_label   = "vaultd-kek"

[storage]
path = "data/vault.db"
`

func parseSettings(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc), t.TempDir(), config.ModeSyntax)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return cfg
}

// checkConfigErr: a refusal from the wiring reads and classifies like one
// from config.Load: one line, "config <file>: line N: key: reason", exit 78.
func checkConfigErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config <input>: ") || strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, want) {
		t.Errorf("got  %q\nwant one line starting \"config <input>: \" and containing %q", msg, want)
	}
	var ce *config.Error
	if !errors.Is(err, config.ErrInvalid) || !errors.As(err, &ce) {
		t.Errorf("%q is not a config error", msg)
	}

}

func TestCheckAcceptsValid(t *testing.T) {
	if err := Check(parseSettings(t, settingsBase+settingsPrincipals+settingsProvider)); err != nil {
		t.Fatal(err)
	}
}

func TestHardenOptions(t *testing.T) {
	o, err := Harden(parseSettings(t, settingsBase))
	if err != nil {
		t.Fatal(err)
	}
	if o.Mlock != harden.MlockRequired || o.Seccomp != harden.SeccompEnforce || len(o.ExtraSyscalls) != 0 || !o.NoNewPrivs || o.Dumpable {
		t.Errorf("defaults: %+v", o)
	}
	o, err = Harden(parseSettings(t, settingsBase+"[harden]\nmlock = \"best-effort\"\nseccomp = \"log\"\n"+
		"extra_syscalls = [\"ioctl\"]\nno_new_privs = false\ndumpable = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Mlock != harden.MlockBestEffort || o.Seccomp != harden.SeccompLog || len(o.ExtraSyscalls) != 1 || o.ExtraSyscalls[0] != "ioctl" ||
		o.NoNewPrivs || !o.Dumpable {
		t.Errorf("set: %+v", o)
	}
}

func TestHardenOptionsRefusals(t *testing.T) {
	for _, tc := range []struct{ name, harden, want string }{
		{"mlock", `mlock = "sometimes"`, `line 16: harden.mlock: not allowed (want "required", "best-effort" or "off")`},
		{"seccomp", `seccomp = "strict"`, `line 16: harden.seccomp: not allowed (want "enforce", "log" or "off")`},
		{"extra_syscalls name", `extra_syscalls = ["read", "Bad Name"]`, `line 16: harden.extra_syscalls[1]: not a syscall name`},
		{"extra_syscalls unknown", `extra_syscalls = ["not_a_syscall_xyz"]`, `line 16: harden.extra_syscalls[0]: not a syscall on `},
		{"extra_syscalls twice", `extra_syscalls = ["ioctl", "ioctl"]`, `line 16: harden.extra_syscalls[1]: listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseSettings(t, settingsBase+"[harden]\n"+tc.harden+"\n")
			_, err := Harden(cfg)
			checkConfigErr(t, err, tc.want)
			checkConfigErr(t, Check(cfg), tc.want)
			if !errors.Is(err, harden.ErrSyscall) && !errors.Is(err, harden.ErrConfig) {
				t.Errorf("%v matches neither harden.ErrSyscall nor harden.ErrConfig", err)
			}
		})
	}
}

// settingsPrincipals follows settingsBase: [tenant_context] at line 15,
// the first [[principals]] at line 20, the second at line 25.
const settingsPrincipals = `[tenant_context]
jwks_file = "tc.jwks.json"
issuer    = "https://auth.example.internal"
audience  = "vaultd"

[[principals]]
uri_san = "spiffe://example.internal/app/crm-sync"
roles   = ["app"]
tenant  = ""

[[principals]]
subject_cn = "ops-admin"
roles      = ["operator"]
`

func TestPrincipals(t *testing.T) {
	ps, err := Principals(parseSettings(t, settingsBase+settingsPrincipals+
		"\n[[principals]]\nsubject_cn = \"siem\"\nroles = [\"auditor\", \"app\"]\ntenant = \"acme\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.Principal{
		{URISAN: "spiffe://example.internal/app/crm-sync", Roles: []policy.Role{policy.RoleApp}},
		{SubjectCN: "ops-admin", Roles: []policy.Role{policy.RoleOperator}},
		{SubjectCN: "siem", Roles: []policy.Role{policy.RoleAuditor, policy.RoleApp}, Tenant: "acme"},
	}
	if !reflect.DeepEqual(ps, want) {
		t.Fatalf("got  %+v\nwant %+v", ps, want)
	}
	if _, err := policy.NewDirectory(ps); err != nil {
		t.Fatal(err)
	}
}

func TestPrincipalsRefusals(t *testing.T) {
	doc := settingsBase + settingsPrincipals
	edit := func(old, new string) string {
		t.Helper()
		if !strings.Contains(doc, old) {
			t.Fatalf("doc lacks %q", old)
		}
		return strings.Replace(doc, old, new, 1)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"no roles", edit(`roles      = ["operator"]`, `roles = []`), `line 27: principals[1].roles: at least one role is required ("app", "operator" or "auditor")`},
		{"roles absent", edit(`roles      = ["operator"]`, ``), `line 25: principals[1].roles: at least one role is required`},
		{"bad role", edit(`roles      = ["operator"]`, `roles = ["operator", "admin"]`), `line 27: principals[1].roles[1]: not a role (want "app", "operator" or "auditor")`},
		{"role twice", edit(`roles      = ["operator"]`, `roles = ["operator", "operator"]`), `principals[1].roles[1]: listed twice`},
		{"operator with tenant", edit(`roles      = ["operator"]`, `roles = ["operator"]`+"\ntenant = \"acme\""),
			`line 28: principals[1].tenant: operator principals are platform-wide and cannot have a tenant`},
		{"app+operator with tenant", edit(`roles      = ["operator"]`, `roles = ["app", "operator"]`+"\ntenant = \"acme\""),
			`principals[1].tenant: operator principals are platform-wide`},
		{"app without tenant_context", edit("[tenant_context]\njwks_file = \"tc.jwks.json\"\nissuer    = \"https://auth.example.internal\"\naudience  = \"vaultd\"\n", ""),
			`principals[0].tenant: an app principal with tenant "" takes its tenant from a tenant-context JWT, which needs [tenant_context]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseSettings(t, tc.doc)
			_, err := Principals(cfg)
			checkConfigErr(t, err, tc.want)
			checkConfigErr(t, Check(cfg), tc.want)
		})
	}
}

// FuzzSettings: a document config accepts either maps to settings that
// hold what the rest of vaultd relies on, or is refused with one
// well-formed config error.
func FuzzSettings(f *testing.F) {
	f.Add([]byte(settingsBase))
	f.Add([]byte(settingsBase + settingsPrincipals))
	f.Add([]byte(settingsBase + "[harden]\nmlock = \"off\"\nseccomp = \"log\"\nextra_syscalls = [\"ioctl\"]\n"))
	f.Add([]byte(settingsBase + "[[principals]]\nsubject_cn = \"x\"\nroles = [\"operator\"]\ntenant = \"acme\"\n"))
	f.Add([]byte(settingsBase + settingsProvider + "auth_style = \"body\"\n"))
	f.Add([]byte(settingsBase + "[providers.z]\ntemplate = \"zendesk\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n"))
	f.Add([]byte(settingsBase + "[providers.s]\ntemplate = \"salesforce\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\ngrant = \"client_credentials\"\n"))
	f.Add([]byte(settingsBase + "[providers.s]\ntemplate = \"nope\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := config.Parse(doc, t.TempDir(), config.ModeSyntax)
		if err != nil {
			return
		}
		wellFormed := func(err error) {
			msg := err.Error()
			if !strings.HasPrefix(msg, "config <input>: ") || strings.ContainsAny(msg, "\r\n") || !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("malformed error %q", msg)
			}
		}
		if o, err := Harden(cfg); err != nil {
			wellFormed(err)
		} else if _, err := harden.ParseMlock(string(o.Mlock)); err != nil || o.Mlock == "" || o.Seccomp == "" {
			t.Fatalf("hardening options with bad modes: %+v", o)
		}
		for _, name := range cfg.ProviderNames() {
			if style, err := AuthStyle(cfg, name); err != nil {
				wellFormed(err)
			} else if style != oauth.AuthStyleBasic && style != oauth.AuthStyleBody {
				t.Fatalf("provider %q with auth style %q", name, style)
			}
		}
		if provs, err := Providers(cfg); err != nil {
			wellFormed(err)
		} else {
			for name, p := range provs {
				if p.TokenURL == "" || p.APIBaseURL == "" || p.ScopeSeparator != " " && p.ScopeSeparator != "," ||
					p.Grant != catalog.GrantAuthorizationCode && p.Grant != catalog.GrantClientCredentials ||
					p.Grant == catalog.GrantClientCredentials && p.AuthorizationURL != "" || p.AuthorizeParams == nil {
					t.Fatalf("provider %q merged with bad values: %+v", name, p)
				}
				if p.Template == "" && (len(p.Params) != 0 || p.APIHostFromToken != nil ||
					strings.ContainsAny(p.TokenURL+p.APIBaseURL+p.RevocationURL+p.AuthorizationURL, "{}")) {
					t.Fatalf("provider %q without a template has template values: %+v", name, p)
				}
			}
		}
		ps, err := Principals(cfg)
		if err != nil {
			wellFormed(err)
			return
		}
		for _, p := range ps {
			if len(p.Roles) == 0 || (p.Tenant != "" && p.HasRole(policy.RoleOperator)) {
				t.Fatalf("principal accepted with bad values: %+v", p)
			}
			if p.HasRole(policy.RoleApp) && p.Tenant == "" && cfg.TenantContext == nil {
				t.Fatalf("app principal without tenant and without [tenant_context] accepted")
			}
		}
	})
}

// settingsProvider follows settingsBase: [providers.example] at line 15.
const settingsProvider = `[providers.example]
token_url          = "https://oauth.example.com/token"
api_base_url       = "https://api.example.com/v2"
client_id          = "abc"
client_secret_file = "secrets/example"
`

func TestAuthStyle(t *testing.T) {
	for style, want := range map[string]string{"": oauth.AuthStyleBasic, "basic": oauth.AuthStyleBasic, "body": oauth.AuthStyleBody} {
		doc := settingsBase + settingsProvider
		if style != "" {
			doc += "auth_style         = \"" + style + "\"\n"
		}
		got, err := AuthStyle(parseSettings(t, doc), "example")
		if err != nil || got != want {
			t.Errorf("auth_style %q: %q, %v", style, got, err)
		}
	}
	doc := settingsBase + settingsProvider + "auth_style         = \"header\"\n"
	cfg := parseSettings(t, doc)
	_, err := AuthStyle(cfg, "example")
	checkConfigErr(t, err, `line 20: providers.example.auth_style: not allowed (want "basic" or "body")`)
	checkConfigErr(t, Check(cfg), `line 20: providers.example.auth_style: not allowed`)
}

// TestSettingsNeverEchoValues: like config's own errors, a refusal from
// the wiring names the key, never the value (a mistaken one may be a
// secret pasted into the wrong key).
func TestSettingsNeverEchoValues(t *testing.T) {
	const secret = "Zq7-SECRET-9f3c-HUNTER2"
	for _, doc := range []string{
		settingsBase + settingsProvider + "auth_style = \"" + secret + "\"\n",
		settingsBase + "[harden]\nmlock = \"" + secret + "\"\n",
		settingsBase + "[harden]\nseccomp = \"" + secret + "\"\n",
		settingsBase + "[harden]\nextra_syscalls = [\"" + secret + "\"]\n",
		settingsBase + "[harden]\nextra_syscalls = [\"zq7_secret_9f3c_hunter2\"]\n",
		settingsBase + "[[principals]]\nsubject_cn = \"x\"\nroles = [\"" + secret + "\"]\n",
	} {
		cfg := parseSettings(t, doc)
		var errs []error
		if _, err := Harden(cfg); err != nil {
			errs = append(errs, err)
		}
		if _, err := Principals(cfg); err != nil {
			errs = append(errs, err)
		}
		for _, name := range cfg.ProviderNames() {
			if _, err := AuthStyle(cfg, name); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			t.Errorf("accepted: %q", doc)
		}
		for _, err := range errs {
			if msg := strings.ToLower(err.Error()); strings.Contains(msg, strings.ToLower(secret)) || strings.Contains(msg, "zq7_secret") {
				t.Errorf("value echoed: %s", err)
			}
		}
	}
}
