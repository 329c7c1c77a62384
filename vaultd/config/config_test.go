package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// base is a minimal valid config; its relative paths are the files env
// creates. Cases derive broken configs from it with strings.Replace.
const base = `[server]
listen    = "127.0.0.1:8443"
tls_cert  = "tls/server.crt"
tls_key   = "tls/server.key"
client_ca = "tls/client-ca.crt"

[hsm]
module      = "` + softhsmModule + `"
token_label = "vaultd"
pin_file    = "hsm.pin"
kek_label   = "vaultd-kek"

[storage]
path = "data/vault.db"

[tenant_context]
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

[providers.example]
token_url          = "https://oauth.example.com/token"
api_base_url       = "https://api.example.com/v2"
client_id          = "abc"
client_secret_file = "secrets/example"
`

// env writes the files base refers to into a fresh directory and returns it.
func env(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"tls", "data", "secrets", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"tls/server.crt":    "cert",
		"tls/server.key":    "key",
		"tls/client-ca.crt": "ca",
		"hsm.pin":           "1234\n",
		"tc.jwks.json":      `{"keys":[]}`,
		"secrets/example":   "client-secret\n",
		"tls/provider.pem":  string(testCAPEM(t)),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test provider CA"},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Unix(1<<33, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeConfig(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "vaultd.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// edit applies old->new replacements to base, failing if old is absent
// (so a case cannot silently test the unmodified config).
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := base
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("test bug: %q not in base config", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// checkErrShape asserts the properties every config error has.
func checkErrShape(t *testing.T, err error, file string) {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config "+file+": ") {
		t.Errorf("error %q does not start with %q", msg, "config "+file+": ")
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error is not one line: %q", msg)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %q does not match ErrInvalid", msg)
	}
}

func TestBaseIsValid(t *testing.T) {
	dir := env(t)
	for _, mode := range []Mode{ModeSyntax, ModeInit, ModeDaemon} {
		if _, err := Load(writeConfig(t, dir, base), mode); err != nil {
			t.Fatalf("mode %v: %v", mode, err)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      string // the whole message after "config <input>: "
	}{
		{"unknown key", edit(t, "listen    =", "listn ="), `line 2: unknown key "server.listn"`},
		{"unknown key dotted", edit(t, "[storage]\n", "[storage]\nfoo.bar = 1\n"), `line 14: unknown key "storage.foo.bar"`},
		{"unknown table", edit(t, "[storage]", "[storge]"), `line 13: unknown table "storge"`},
		{"unknown provider key", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nclient_secret = \"x\""), `line 34: unknown key "providers.example.client_secret"`},
		{"unknown principal key", edit(t, `roles      = ["operator"]`, `roles = ["operator"]`+"\nrole = 1"), `line 29: unknown key "principals.role"`},
		{"upper-case key", edit(t, "listen    =", "LISTEN ="), `line 2: unknown key "server.LISTEN" (keys are lower case, as documented)`},
		{"upper-case table", edit(t, "[storage]", "[Storage]"), `line 13: unknown key "Storage" (keys are lower case, as documented)`},
		{"syntax error", edit(t, `listen    = "127.0.0.1:8443"`, `listen = 127.0.0.1:8443`), `line 2: syntax error: `},
		{"unterminated string", edit(t, `token_label = "vaultd"`, `token_label = "vaultd`), `line 9: syntax error: basic strings cannot have new lines`},
		{"duplicate table", base + "\n[server]\n", `line 36: key "server": table server already exists`},
		{"duplicate provider", base + "\n[providers.example]\n", `line 36: key "providers.example": table example already exists`},
		{"duplicate key", edit(t, "[storage]\n", "[storage]\npath = \"a\"\n"), `line 15: key "path": key path is already defined`},
		{"type string", edit(t, `listen    = "127.0.0.1:8443"`, `listen = 8443`), `line 2: key "server.listen": expected a string, not integer`},
		{"type int", edit(t, "[hsm]\n", "[hsm]\nmax_sessions = \"8\"\n"), `line 8: key "hsm.max_sessions": expected an integer, not string`},
		{"type bool", edit(t, "[server]\n", "[server]\nhttp3 = \"yes\"\n"), `line 2: key "server.http3": expected a boolean (true or false), not string`},
		{"type array", edit(t, `roles   = ["app"]`, `roles = "app"`), `line 23: key "principals.roles": expected an array of strings, not string`},
		{"type table", "server = 1\n", `line 1: key "server": expected a table, not integer`},
		{"duration int", edit(t, "[server]\n", "[server]\nrequest_timeout = 60\n"), `line 2: key "server.request_timeout": expected a duration string such as 30s, not integer`},
		{"duration int provider", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\ntimeout = 30"), `line 34: key "providers.example.timeout": expected a duration string such as 30s, not integer`},
		{"duration bad", edit(t, "[server]\n", "[server]\nshutdown_timeout = \"30x\"\n"), `line 2: key "server.shutdown_timeout": invalid duration: want a positive Go duration such as 30s, 5m or 1h`},
		{"duration zero", edit(t, "[storage]\n", "[storage]\nlock_timeout = \"0s\"\n"), `line 14: key "storage.lock_timeout": invalid duration`},
		{"duration negative", edit(t, `audience  = "vaultd"`, `audience = "vaultd"`+"\nmax_lifetime = \"-5m\""), `line 20: key "tenant_context.max_lifetime": invalid duration`},
		{"principals as table", strings.Replace(base, "[[principals]]\nsubject_cn", "[principals]\nsubject_cn", 1), `line 26: principals: write [[principals]] (an array of tables), not [principals]`},
		{"principals inline table", "principals = { subject_cn = \"a\", roles = [\"auditor\"] }\n", `line 1: principals: write [[principals]] or an array of inline tables`},
		{"integer overflow", edit(t, "[hsm]\n", "[hsm]\nmax_sessions = 99999999999999999999999\n"), `line 8: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), t.TempDir(), ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err != nil && !strings.Contains(err.Error(), "config <input>: "+tc.want) {
				t.Errorf("got  %q\nwant %q", err, "config <input>: "+tc.want)
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	type c struct {
		name string
		doc  string
		want []string // substrings of the message
	}
	cases := []c{
		{"config_version", "config_version = 2\n" + base, []string{"line 1: config_version: unsupported version"}},
		{"config_version zero", "config_version = 0\n" + base, []string{"config_version: unsupported version"}},
		// [server]
		{"listen missing", edit(t, `listen    = "127.0.0.1:8443"`, ""), []string{"server.listen: required"}},
		{"listen no port", edit(t, `listen    = "127.0.0.1:8443"`, `listen = "127.0.0.1"`), []string{"line 2: server.listen: not a host:port address"}},
		{"listen bad port", edit(t, `listen    = "127.0.0.1:8443"`, `listen = "127.0.0.1:https"`), []string{"server.listen: port must be a number"}},
		{"listen port range", edit(t, `listen    = "127.0.0.1:8443"`, `listen = "127.0.0.1:65536"`), []string{"server.listen: port must be a number from 0 to 65535"}},
		{"ops_listen bad", edit(t, "[server]\n", "[server]\nops_listen = \"localhost\"\n"), []string{"line 2: server.ops_listen: not a host:port"}},
		{"ops_listen same", edit(t, "[server]\n", "[server]\nops_listen = \"127.0.0.1:8443\"\n"), []string{"server.ops_listen: must differ from server.listen"}},
		{"max_body_bytes zero", edit(t, "[server]\n", "[server]\nmax_body_bytes = 0\n"), []string{"line 2: server.max_body_bytes: must be between 1 and"}},
		{"tls_cert missing", edit(t, `tls_cert  = "tls/server.crt"`, ""), []string{"server.tls_cert: required"}},
		{"tls_key missing", edit(t, `tls_key   = "tls/server.key"`, ""), []string{"server.tls_key: required"}},
		{"client_ca missing", edit(t, `client_ca = "tls/client-ca.crt"`, ""), []string{"server.client_ca: required"}},
		// [hsm]
		{"module missing", edit(t, `module      = "`+softhsmModule+`"`, ""), []string{"hsm.module: required"}},
		{"token_label missing", edit(t, `token_label = "vaultd"`, ""), []string{"hsm.token_label: required"}},
		{"token_label long", edit(t, `token_label = "vaultd"`, `token_label = "`+strings.Repeat("x", 33)+`"`), []string{"line 9: hsm.token_label: must be 1 to 32 printable bytes"}},
		{"kek_label missing", edit(t, `kek_label   = "vaultd-kek"`, ""), []string{"hsm.kek_label: required"}},
		{"pin_file empty", edit(t, `pin_file    = "hsm.pin"`, `pin_file = ""`), []string{"line 10: hsm.pin_file: must not be empty"}},
		{"max_sessions zero", edit(t, "[hsm]\n", "[hsm]\nmax_sessions = 0\n"), []string{"line 8: hsm.max_sessions: must be between 1 and 1024"}},
		{"max_sessions huge", edit(t, "[hsm]\n", "[hsm]\nmax_sessions = 100000\n"), []string{"hsm.max_sessions: must be between 1 and 1024"}},
		{"health_interval too short", edit(t, "[hsm]\n", "[hsm]\nhealth_interval = \"100ms\"\n"), []string{"line 8: hsm.health_interval: must be between 1s and 5m"}},
		{"health_interval too long", edit(t, "[hsm]\n", "[hsm]\nhealth_interval = \"1h\"\n"), []string{"hsm.health_interval: must be between 1s and 5m"}},
		// [storage], [audit]
		{"storage path missing", edit(t, `path = "data/vault.db"`, ""), []string{"storage.path: required"}},
		{"audit file empty", base + "[audit]\nfile = \"\"\n", []string{"line 36: audit.file: must not be empty"}},
		// [harden]
		{"mlock empty", base + "[harden]\nmlock = \"\"\n", []string{`line 36: harden.mlock: must not be empty (omit the key for the default)`}},
		{"seccomp empty", base + "[harden]\nseccomp = \"\"\n", []string{`line 36: harden.seccomp: must not be empty`}},
		// [tenant_context]
		{"tc jwks missing", edit(t, `jwks_file = "tc.jwks.json"`, ""), []string{"tenant_context.jwks_file: required"}},
		{"tc issuer missing", edit(t, `issuer    = "https://auth.example.internal"`, ""), []string{"tenant_context.issuer: required when [tenant_context] is present"}},
		{"tc audience missing", edit(t, `audience  = "vaultd"`, ""), []string{"tenant_context.audience: required when [tenant_context] is present"}},
		{"tc tenant_claim empty", edit(t, `audience  = "vaultd"`, `audience = "vaultd"`+"\ntenant_claim = \"\""), []string{"line 20: tenant_context.tenant_claim: must not be empty"}},
		// [[principals]]
		{"principal both", edit(t, `uri_san = "spiffe://example.internal/app/crm-sync"`, `uri_san = "spiffe://x/y"`+"\nsubject_cn = \"y\""), []string{"line 21: principals[0]: set exactly one of uri_san and subject_cn, not both"}},
		{"principal neither", edit(t, `subject_cn = "ops-admin"`, ""), []string{"line 26: principals[1]: set exactly one of uri_san and subject_cn"}},
		{"principal uri relative", edit(t, `uri_san = "spiffe://example.internal/app/crm-sync"`, `uri_san = "crm-sync"`), []string{"line 22: principals[0].uri_san: must be an absolute URI"}},
		{"bad tenant id", edit(t, `tenant  = ""`, `tenant = "../acme"`), []string{"line 24: principals[0].tenant: not a valid tenant id"}},
		{"duplicate uri_san", base + "[[principals]]\nuri_san = \"spiffe://example.internal/app/crm-sync\"\nroles = [\"auditor\"]\n", []string{"line 35: principals[2]: duplicate principal: same uri_san as principals[0]"}},
		{"duplicate subject_cn", base + "[[principals]]\nsubject_cn = \"ops-admin\"\nroles = [\"auditor\"]\n", []string{"principals[2]: duplicate principal: same subject_cn as principals[1]"}},
		// [providers.NAME]
		{"provider name", edit(t, "[providers.example]", `[providers."Bad Name"]`), []string{`line 30: providers.Bad Name: invalid provider name "Bad Name" (want 1 to 64 of a-z 0-9 _ -)`}},
		{"provider name upper", edit(t, "[providers.example]", `[providers.Example]`), []string{`providers.Example: invalid provider name "Example"`}},
		{"provider name long", edit(t, "[providers.example]", "[providers."+strings.Repeat("a", 65)+"]"), []string{`invalid provider name`}},
		{"token_url missing", edit(t, `token_url          = "https://oauth.example.com/token"`, ""), []string{"providers.example.token_url: required"}},
		{"token_url http", edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "http://oauth.example.com/token"`), []string{"line 31: providers.example.token_url: must use https (http is allowed only for 127.0.0.1, ::1 and localhost)"}},
		{"token_url relative", edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "/token"`), []string{"providers.example.token_url: must be an absolute https URL"}},
		{"token_url ftp", edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "ftp://oauth.example.com/token"`), []string{"providers.example.token_url: must be an absolute https URL"}},
		{"token_url userinfo", edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "https://u:p@oauth.example.com/token"`), []string{"providers.example.token_url: must not contain user info"}},
		{"api_base_url missing", edit(t, `api_base_url       = "https://api.example.com/v2"`, ""), []string{"providers.example.api_base_url: required"}},
		{"api_base_url query", edit(t, `api_base_url       = "https://api.example.com/v2"`, `api_base_url = "https://api.example.com/v2?x=1"`), []string{"line 32: providers.example.api_base_url: must not contain a query"}},
		{"api_base_url fragment", edit(t, `api_base_url       = "https://api.example.com/v2"`, `api_base_url = "https://api.example.com/v2#x"`), []string{"providers.example.api_base_url: must not contain a fragment"}},
		{"revocation_url http", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nrevocation_url = \"http://10.0.0.1/revoke\""), []string{"providers.example.revocation_url: must use https"}},
		{"revocation_url empty", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nrevocation_url = \"\""), []string{"providers.example.revocation_url: must not be empty"}},
		{"client_id missing", edit(t, `client_id          = "abc"`, ""), []string{"providers.example.client_id: required"}},
		{"client_secret_file missing", edit(t, `client_secret_file = "secrets/example"`, ""), []string{"providers.example.client_secret_file: required"}},
		{"auth_style empty", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nauth_style = \"\""), []string{`line 34: providers.example.auth_style: must not be empty (omit the key for the default)`}},
		{"scope space", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nscopes = [\"a\", \"b c\"]"), []string{"providers.example.scopes[1]: not an OAuth scope token"}},
		{"scope twice", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nscopes = [\"a\", \"a\"]"), []string{`providers.example.scopes[1]: listed twice`}},
		{"ca_file empty", edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nca_file = \"\""), []string{"providers.example.ca_file: must not be empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), t.TempDir(), ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err == nil {
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got  %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestDaemonFileChecks: what ModeDaemon (and ModeInit) look at on disk.
func TestDaemonFileChecks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prep     func(t *testing.T, dir string) string // returns the config text
		initFail bool                                  // ModeInit must fail too
		want     string
	}{
		{"tls_cert absent", func(t *testing.T, dir string) string {
			rm(t, dir, "tls/server.crt")
			return base
		}, false, "line 3: server.tls_cert: unusable file: open " + "DIR/tls/server.crt: no such file or directory"},
		{"tls_key absent", func(t *testing.T, dir string) string { rm(t, dir, "tls/server.key"); return base }, false, "server.tls_key: unusable file"},
		{"client_ca is a directory", func(t *testing.T, dir string) string {
			rm(t, dir, "tls/client-ca.crt")
			if err := os.Mkdir(filepath.Join(dir, "tls/client-ca.crt"), 0o700); err != nil {
				t.Fatal(err)
			}
			return base
		}, false, "server.client_ca: unusable file: open DIR/tls/client-ca.crt: not a regular file"},
		{"jwks absent", func(t *testing.T, dir string) string { rm(t, dir, "tc.jwks.json"); return base }, false, "tenant_context.jwks_file: unusable file"},
		{"secret absent", func(t *testing.T, dir string) string { rm(t, dir, "secrets/example"); return base }, false, "providers.example.client_secret_file: cannot use client secret file"},
		{"secret empty", func(t *testing.T, dir string) string {
			write(t, dir, "secrets/example", "\n")
			return base
		}, false, "providers.example.client_secret_file: cannot use client secret file: DIR/secrets/example: file is empty"},
		{"ca_file not PEM", func(t *testing.T, dir string) string {
			write(t, dir, "tls/provider.pem", "not a certificate")
			return edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nca_file = \"tls/provider.pem\"")
		}, false, "line 34: providers.example.ca_file: cannot use CA file: DIR/tls/provider.pem: no PEM certificate found"},
		{"audit dir absent", func(t *testing.T, dir string) string {
			return base + "[audit]\nfile = \"nodir/audit.jsonl\"\n"
		}, false, "line 36: audit.file: directory unusable"},
		{"module absent", func(t *testing.T, dir string) string {
			return edit(t, softhsmModule, "nosuch/libpkcs11.so")
		}, true, "hsm.module: unusable file"},
		{"pin file absent", func(t *testing.T, dir string) string { rm(t, dir, "hsm.pin"); return base }, true, "line 10: hsm.pin_file: unusable file"},
		{"no pin source", func(t *testing.T, dir string) string {
			return edit(t, `pin_file    = "hsm.pin"`, "")
		}, true, "hsm: no PIN source: set hsm.pin_file or provide the systemd credential hsm-pin"},
		{"storage dir absent", func(t *testing.T, dir string) string {
			return edit(t, `path = "data/vault.db"`, `path = "nodir/vault.db"`)
		}, true, "line 14: storage.path: directory unusable"},
		{"storage path is a directory", func(t *testing.T, dir string) string {
			return edit(t, `path = "data/vault.db"`, `path = "data"`)
		}, true, "storage.path: DIR/data is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(credentialsDirectoryEnv, "")
			dir := env(t)
			path := writeConfig(t, dir, tc.prep(t, dir))
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			_, err := Load(path, ModeDaemon)
			checkErrShape(t, err, path)
			if err != nil && !strings.Contains(err.Error(), want) {
				t.Errorf("got  %q\nwant it to contain %q", err, want)
			}
			_, err = Load(path, ModeInit)
			if tc.initFail {
				checkErrShape(t, err, path)
			} else if err != nil {
				t.Errorf("ModeInit: %v", err)
			}
			if _, err := Load(path, ModeSyntax); err != nil {
				t.Errorf("ModeSyntax must not look at files: %v", err)
			}
		})
	}
}

func TestNotAConfig(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "pin = 1234\n", "a = 1\n[b]\nc = 2\n"} {
		_, err := Parse([]byte(doc), "", ModeSyntax)
		checkErrShape(t, err, "<input>")
		if err != nil && err.Error() != "config <input>: not a vaultd config: it has none of the tables [server], [hsm], [storage]" {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "absent.toml")
	_, err := Load(p, ModeSyntax)
	checkErrShape(t, err, p)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("want fs.ErrNotExist, got %v", err)
	}
	if want := "config " + p + ": cannot read: no such file or directory"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestLoadTooLarge(t *testing.T) {
	dir := t.TempDir()
	p := writeConfig(t, dir, base+"#"+strings.Repeat("x", maxConfigBytes)+"\n")
	_, err := Load(p, ModeSyntax)
	checkErrShape(t, err, p)
}

func rm(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFullExample(t *testing.T) {
	cfg, err := Load("testdata/full.toml", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "testdata/full.toml" {
		t.Errorf("File = %q", cfg.File)
	}
	tc := &TenantContextConfig{
		JWKSFile: "/etc/vaultd/tenant-context.jwks.json", Issuer: "https://auth.example.internal", Audience: "vaultd",
		TenantClaim: "tenant_id", MaxLifetime: NewDuration(5 * time.Minute), ClockSkew: NewDuration(30 * time.Second),
	}
	want := Config{
		ConfigVersion: 1,
		Server: ServerConfig{
			Listen: "127.0.0.1:8443", HTTP3: true,
			TLSCert: "/etc/vaultd/tls/server.crt", TLSKey: "/etc/vaultd/tls/server.key", ClientCA: "/etc/vaultd/tls/client-ca.crt",
			OpsListen: "127.0.0.1:9090", RequestTimeout: NewDuration(time.Minute), MaxBodyBytes: 10 << 20,
			ShutdownTimeout: NewDuration(30 * time.Second),
		},
		HSM: HSMConfig{Module: softhsmModule, TokenLabel: "vaultd", PINFile: "/etc/vaultd/hsm.pin",
			KEKLabel: "vaultd-kek", MaxSessions: 8, WrapScheme: "aes-gcm", HealthInterval: NewDuration(10 * time.Second), file: "testdata/full.toml"},
		Storage: StorageConfig{Backend: BackendBBolt, Path: "/var/lib/vaultd/vault.db", LockTimeout: NewDuration(2 * time.Second),
			MaxConnections: 16, file: "testdata/full.toml"},
		Audit: AuditConfig{File: "/var/log/vaultd/audit.jsonl", VerifyOnStart: true, CheckpointInterval: NewDuration(time.Minute),
			Sync: SyncBatch, SyncInterval: NewDuration(10 * time.Millisecond),
			Retention: NewRetention(400 * 24 * time.Hour), ArchiveDir: "/var/lib/vaultd/audit-archive"},
		Harden: HardenConfig{Mlock: "required", Seccomp: "enforce", ExtraSyscalls: []string{},
			NoNewPrivs: true, Dumpable: false},
		TenantContext: tc,
		Principals: []Principal{
			{URISAN: "spiffe://example.internal/app/crm-sync", Roles: []string{"app"}},
			{URISAN: "spiffe://example.internal/app/acme-billing", Roles: []string{"app"}, Tenant: "acme"},
			{SubjectCN: "ops-admin", Roles: []string{"operator"}},
			{SubjectCN: "siem-reader", Roles: []string{"auditor"}},
		},
		Lifecycle: LifecycleConfig{
			IdleDisconnectAfter: NewDuration(90 * 24 * time.Hour), ReauthPurgeAfter: NewDuration(30 * 24 * time.Hour),
			RevocationRetryFor: NewDuration(7 * 24 * time.Hour), RevocationRetryInitial: NewDuration(30 * time.Second),
			ScoreThreshold: 60, SweepInterval: NewDuration(time.Hour),
		},
	}
	got := *cfg
	got.File, got.Dir, got.Providers, got.Connect, got.Webhooks, got.ix = "", "", nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(*cfg.TenantContext, *tc) {
		t.Errorf("tenant_context = %+v", *cfg.TenantContext)
	}
	if names := cfg.ProviderNames(); !reflect.DeepEqual(names, []string{"example"}) {
		t.Fatalf("providers = %v", names)
	}
	p := cfg.Providers["example"]
	if p.Name != "example" || p.TokenURL != "https://oauth.example.com/token" ||
		p.RevocationURL != "https://oauth.example.com/revoke" || p.APIBaseURL != "https://api.example.com/v2" ||
		p.ClientID != "abc" || p.ClientSecretFile != "/etc/vaultd/secrets/example" || p.AuthStyle != "basic" ||
		!reflect.DeepEqual(p.Scopes, []string{"contacts.read", "contacts.write"}) ||
		p.RefreshMargin.Duration() != time.Minute || p.DefaultTokenLifetime.Duration() != time.Hour ||
		p.Timeout.Duration() != 30*time.Second || p.CAFile != "/etc/vaultd/tls/example-ca.crt" ||
		!p.RefreshAhead || p.RefreshTokenMaxIdle.Duration() != 60*24*time.Hour {
		t.Errorf("provider = %+v", *p)
	}
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("webhooks = %v", cfg.Webhooks)
	}
	w := cfg.Webhooks[0]
	if w.URL != "https://app.example.com/hooks/vaultd" || w.Endpoint.Host != "app.example.com" ||
		w.SecretFile != "/etc/vaultd/secrets/webhook" || !reflect.DeepEqual(w.Tenants, []string{"acme"}) ||
		!reflect.DeepEqual(w.Events, []string{"integration.*", "tenant.offboarded"}) ||
		!reflect.DeepEqual(w.RetrySchedule, DefaultRetrySchedule()) || w.CAFile != "/etc/vaultd/tls/hooks-ca.crt" ||
		w.Key != WebhookKey(w.URL) || len(w.Key) != 12 || w.Secret.Len() != 0 || w.RootCAs != nil {
		t.Errorf("webhook = %+v", *w)
	}
	if p.TokenEndpoint.Host != "oauth.example.com" || p.APIBase.Path != "/v2" || p.RevocationEndpoint.Path != "/revoke" {
		t.Errorf("parsed URLs: %v %v %v", p.TokenEndpoint, p.APIBase, p.RevocationEndpoint)
	}
	if !p.ClientSecret.IsZero() || p.RootCAs != nil {
		t.Error("ModeSyntax must not read secrets or CA files")
	}
	if p.AuthorizationURL != "https://oauth.example.com/authorize" || p.AuthorizationEndpoint.Path != "/authorize" ||
		p.Grant != "authorization_code" || p.PKCE == nil || !*p.PKCE || p.ScopeSeparator != " " || p.Template != "google" ||
		!reflect.DeepEqual(p.AuthorizeParams, map[string]string{"access_type": "offline"}) {
		t.Errorf("provider connect keys = %+v", *p)
	}
	c := cfg.Connect
	if c == nil || c.Listen != "0.0.0.0:8444" || c.PublicURL != "https://vault.example.com:8444" ||
		c.RedirectURI != "https://vault.example.com:8444/oauth/callback" || c.PublicBase.String() != "https://vault.example.com:8444" ||
		c.TLSCert != "/etc/vaultd/tls/connect.crt" || c.TLSKey != "/etc/vaultd/tls/connect.key" ||
		c.SessionTTL.Duration() != 10*time.Minute || !reflect.DeepEqual(c.ReturnTo, []string{"https://app.example.com/"}) ||
		len(c.ReturnToPrefixes) != 1 || c.ReturnToPrefixes[0].String() != "https://app.example.com/" {
		t.Errorf("connect = %+v", c)
	}
}

// Every key the full example documents is one the schema knows and vice
// versa: the example is the operator reference, so it must not drift.
// Files edited on Windows keep working.
func TestFullExampleCRLF(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(strings.ReplaceAll(string(data), "\n", "\r\n")), "", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:8443" || cfg.Providers["example"].ClientID != "abc" {
		t.Errorf("%+v", cfg.Server)
	}
}

func TestFullExampleCoversSchema(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	ix, ierr := buildIndex("full", data)
	if ierr != nil {
		t.Fatal(ierr)
	}
	var missing []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "" || tag == "-" {
				continue
			}
			path := prefix + tag
			ft := f.Type
			switch {
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				walk(path+".", ft.Elem())
			case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Duration{}):
				walk(path+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(path+"[0].", ft.Elem())
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Pointer:
				walk(path+"[0].", ft.Elem().Elem())
			case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Pointer:
				walk(path+".example.", ft.Elem().Elem())
			default:
				if !ix.has(path) {
					missing = append(missing, path)
				}
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	// subject_cn is shown in principals[2]; uri_san and tenant in [0].
	var really []string
	for _, m := range missing {
		if m == "principals[0].subject_cn" && ix.has("principals[2].subject_cn") {
			continue
		}
		// dsn_file is refused with the example's bbolt backend: it is
		// shown as a comment.
		if m == "storage.dsn_file" && strings.Contains(string(data), "\n# dsn_file   = ") {
			continue
		}
		really = append(really, m)
	}
	if len(really) > 0 {
		t.Errorf("testdata/full.toml does not show: %v", really)
	}
}

func TestDefaults(t *testing.T) {
	doc := edit(t, "[tenant_context]\njwks_file = \"tc.jwks.json\"\nissuer    = \"https://auth.example.internal\"\naudience  = \"vaultd\"\n", "",
		`tenant  = ""`, `tenant = "acme"`)
	cfg, err := Parse([]byte(doc), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	if !s.HTTP3 || s.OpsListen != "" || s.RequestTimeout.Duration() != 60*time.Second ||
		s.MaxBodyBytes != 10<<20 || s.ShutdownTimeout.Duration() != 30*time.Second {
		t.Errorf("server defaults: %+v", s)
	}
	if cfg.HSM.MaxSessions != 8 || cfg.Storage.LockTimeout.Duration() != 2*time.Second || cfg.Storage.MaxConnections != 16 || cfg.Audit.File != "" {
		t.Errorf("hsm/storage/audit defaults: %+v %+v %+v", cfg.HSM, cfg.Storage, cfg.Audit)
	}
	h := cfg.Harden
	// Absent modes stay "": harden's parsers supply the defaults.
	if h.Mlock != "" || h.Seccomp != "" || len(h.ExtraSyscalls) != 0 || !h.NoNewPrivs || h.Dumpable {
		t.Errorf("harden defaults: %+v", h)
	}
	if cfg.TenantContext != nil {
		t.Errorf("absent [tenant_context] must stay nil: %+v", cfg.TenantContext)
	}
	p := cfg.Providers["example"]
	// An absent auth_style stays "": oauth.ParseAuthStyle supplies the default.
	if p.AuthStyle != "" || p.RefreshMargin.Duration() != 60*time.Second ||
		p.DefaultTokenLifetime.Duration() != time.Hour || p.Timeout.Duration() != 30*time.Second ||
		p.RevocationURL != "" || p.RevocationEndpoint != nil || p.CAFile != "" || len(p.Scopes) != 0 {
		t.Errorf("provider defaults: %+v", *p)
	}
	if cfg.ConfigVersion != 1 {
		t.Errorf("config_version = %d", cfg.ConfigVersion)
	}

	// Explicit values override every default.
	doc = base + `[harden]
mlock = "best-effort"
seccomp = "log"
extra_syscalls = ["ioctl"]
no_new_privs = false
dumpable = true
`
	doc = strings.Replace(doc, "[server]\n", "[server]\nhttp3 = false\nmax_body_bytes = 1024\nrequest_timeout = \"5s\"\n", 1)
	doc = strings.Replace(doc, `audience  = "vaultd"`, "audience = \"vaultd\"\ntenant_claim = \"org\"\nmax_lifetime = \"1m\"\nclock_skew = \"1s\"", 1)
	doc = strings.Replace(doc, `client_id          = "abc"`, "client_id = \"abc\"\nauth_style = \"body\"\nrefresh_margin = \"5m\"\ndefault_token_lifetime = \"2h\"\ntimeout = \"3s\"", 1)
	cfg, err = Parse([]byte(doc), "/srv/vaultd", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	h = cfg.Harden
	if h.Mlock != "best-effort" || h.Seccomp != "log" || !reflect.DeepEqual(h.ExtraSyscalls, []string{"ioctl"}) || h.NoNewPrivs || !h.Dumpable {
		t.Errorf("harden: %+v", h)
	}
	if cfg.Server.HTTP3 || cfg.Server.MaxBodyBytes != 1024 || cfg.Server.RequestTimeout.Duration() != 5*time.Second {
		t.Errorf("server: %+v", cfg.Server)
	}
	tc := cfg.TenantContext
	if tc.TenantClaim != "org" || tc.MaxLifetime.Duration() != time.Minute || tc.ClockSkew.Duration() != time.Second {
		t.Errorf("tenant_context: %+v", *tc)
	}
	p = cfg.Providers["example"]
	if p.AuthStyle != "body" || p.RefreshMargin.Duration() != 5*time.Minute ||
		p.DefaultTokenLifetime.Duration() != 2*time.Hour || p.Timeout.Duration() != 3*time.Second {
		t.Errorf("provider: %+v", *p)
	}
}

func TestLoopbackHTTPAllowed(t *testing.T) {
	for _, host := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:9000", "localhost"} {
		doc := edit(t,
			`token_url          = "https://oauth.example.com/token"`, `token_url = "http://`+host+`/token"`,
			`api_base_url       = "https://api.example.com/v2"`, `api_base_url = "http://`+host+`/api"`)
		cfg, err := Parse([]byte(doc), "", ModeSyntax)
		if err != nil {
			t.Errorf("%s: %v", host, err)
			continue
		}
		if cfg.Providers["example"].APIBase.Scheme != "http" {
			t.Errorf("%s: %v", host, cfg.Providers["example"].APIBase)
		}
	}
	// Names that merely start like loopback are not loopback.
	for _, host := range []string{"127.0.0.1.example.com", "localhost.example.com", "127.0.0.2", "[::2]"} {
		doc := edit(t, `token_url          = "https://oauth.example.com/token"`, `token_url = "http://`+host+`/token"`)
		if _, err := Parse([]byte(doc), "", ModeSyntax); err == nil || !strings.Contains(err.Error(), "must use https") {
			t.Errorf("%s: got %v", host, err)
		}
	}
}

func TestInlineTablesAndDottedKeys(t *testing.T) {
	// Same config in other TOML spellings: the schema, not the layout, matters.
	doc := edit(t,
		"[providers.example]\n", "[providers]\nexample = { token_url = \"https://oauth.example.com/token\", api_base_url = \"https://api.example.com/v2\", client_id = \"abc\", client_secret_file = \"secrets/example\", timeout = \"7s\" }\n",
		`token_url          = "https://oauth.example.com/token"`+"\n", "",
		`api_base_url       = "https://api.example.com/v2"`+"\n", "",
		`client_id          = "abc"`+"\n", "",
		`client_secret_file = "secrets/example"`+"\n", "",
	)
	doc = "storage.lock_timeout = \"9s\"\n" + strings.Replace(doc, "[storage]\npath = \"data/vault.db\"\n", "", 1)
	doc = strings.Replace(doc, "[tenant_context]", "[storage]\npath = \"data/vault.db\"\n\n[tenant_context]", 1)
	// storage is now defined twice (dotted key at the root, then a table): TOML forbids it.
	if _, err := Parse([]byte(doc), "", ModeSyntax); err == nil {
		t.Error("dotted key then table must be an error")
	}
	doc = strings.Replace(doc, "[storage]\npath = \"data/vault.db\"\n", "", 1)
	doc = strings.Replace(doc, "storage.lock_timeout = \"9s\"\n", "storage = { path = \"data/vault.db\", lock_timeout = \"9s\" }\n", 1)
	cfg, err := Parse([]byte(doc), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.LockTimeout.Duration() != 9*time.Second || cfg.Storage.Path != "/srv/data/vault.db" ||
		cfg.Providers["example"].Timeout.Duration() != 7*time.Second {
		t.Errorf("%+v %+v", cfg.Storage, *cfg.Providers["example"])
	}
	// A duration given as a number inside an inline table is caught with its line.
	bad := strings.Replace(doc, `timeout = "7s"`, `timeout = 7`, 1)
	_, err = Parse([]byte(bad), "/srv", ModeSyntax)
	checkErrShape(t, err, "<input>")
	if err != nil && !strings.Contains(err.Error(), `key "providers.example.timeout": expected a duration string`) {
		t.Errorf("got %v", err)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := env(t)
	doc := edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\nca_file = \"./tls/../tls/provider.pem\"") +
		"[audit]\nfile = \"log/audit.jsonl\"\n"
	cfg, err := Load(writeConfig(t, dir, doc), ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(dir, p) }
	p := cfg.Providers["example"]
	for _, c := range [][2]string{
		{cfg.Server.TLSCert, j("tls/server.crt")},
		{cfg.Server.TLSKey, j("tls/server.key")},
		{cfg.Server.ClientCA, j("tls/client-ca.crt")},
		{cfg.HSM.PINFile, j("hsm.pin")},
		{cfg.HSM.Module, softhsmModule},
		{cfg.Storage.Path, j("data/vault.db")},
		{cfg.Audit.File, j("log/audit.jsonl")},
		{cfg.TenantContext.JWKSFile, j("tc.jwks.json")},
		{p.ClientSecretFile, j("secrets/example")},
		{p.CAFile, j("tls/provider.pem")},
		{cfg.Dir, dir},
		{p.ClientSecret.Reveal(), "client-secret"},
	} {
		if c[0] != c[1] {
			t.Errorf("got %q, want %q", c[0], c[1])
		}
	}
	if p.RootCAs == nil {
		t.Error("ca_file not loaded")
	}

	// Load with a relative config path resolves against the file's directory,
	// not the working directory.
	t.Chdir(filepath.Dir(dir))
	cfg, err = Load(filepath.Join(filepath.Base(dir), "vaultd.toml"), ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Path != j("data/vault.db") {
		t.Errorf("storage.path = %q", cfg.Storage.Path)
	}

	// Parse resolves against baseDir.
	cfg, err = Parse([]byte(base), "/opt/vaultd/etc", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.TLSCert != "/opt/vaultd/etc/tls/server.crt" || cfg.HSM.PINFile != "/opt/vaultd/etc/hsm.pin" {
		t.Errorf("Parse baseDir: %q %q", cfg.Server.TLSCert, cfg.HSM.PINFile)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1s": time.Second, "1h30m": 90 * time.Minute, "250ms": 250 * time.Millisecond} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Duration() != want {
			t.Errorf("%q: %v %v", in, d, err)
		}
		if b, _ := d.MarshalText(); string(b) != want.String() {
			t.Errorf("MarshalText %q", b)
		}
	}
	// Whole days; zero decodes (the validator refuses it where a key does not say 0 = off).
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1d": 24 * time.Hour, "0": 0, "0s": 0, "0d": 0} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Duration() != want {
			t.Errorf("%q: %v %v", in, d, err)
		}
	}
	if b, _ := NewDuration(90 * 24 * time.Hour).MarshalText(); string(b) != "90d" {
		t.Errorf("MarshalText 90d = %q", b)
	}
	for _, in := range []string{"", "-1s", "5", "1x", "forever", "d", "-1d", "+1d", "1.5d", " 1d", "1d12h", "100001d", "99999999999d"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %v", in, d)
		}
	}
}

func TestModeString(t *testing.T) {
	if ModeDaemon.String() != "daemon" || ModeInit.String() != "init" || ModeSyntax.String() != "syntax" || Mode(9).String() != "unknown" {
		t.Error("Mode.String")
	}
	var zero Mode
	if zero != ModeDaemon {
		t.Error("the zero Mode must check the most")
	}
}
