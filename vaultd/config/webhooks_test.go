package config

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// hook is a minimal [[webhooks]] entry after base: [[webhooks]] on line
// 35, url 36, secret_file 37; extra lines start at 38.
func hook(extra ...string) string {
	s := base + "[[webhooks]]\nurl = \"https://hooks.example.com/vaultd\"\nsecret_file = \"secrets/webhook\"\n"
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}

func TestWebhookDefaults(t *testing.T) {
	cfg, err := Parse([]byte(hook()), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("webhooks = %v", cfg.Webhooks)
	}
	w := cfg.Webhooks[0]
	sum := sha256.Sum256([]byte("https://hooks.example.com/vaultd"))
	if w.Key != hex.EncodeToString(sum[:])[:12] || w.Endpoint.String() != "https://hooks.example.com/vaultd" ||
		w.SecretFile != "/srv/secrets/webhook" || len(w.Tenants) != 0 || !reflect.DeepEqual(w.Events, []string{"*"}) ||
		w.CAFile != "" || w.RootCAs != nil || w.Secret.Len() != 0 {
		t.Errorf("webhook = %+v", *w)
	}
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
	if len(w.RetrySchedule) != len(want) {
		t.Fatalf("retry_schedule = %v", w.RetrySchedule)
	}
	for i, d := range w.RetrySchedule {
		if d.Duration() != want[i] {
			t.Errorf("retry_schedule[%d] = %v, want %v", i, d, want[i])
		}
	}
}

func TestWebhookValues(t *testing.T) {
	doc := hook(`tenants = ["acme", "globex"]`, `events = ["integration.*", "tenant.offboarded", "key.rotated"]`,
		`retry_schedule = ["1s", "2s"]`, `ca_file = "tls/hooks.pem"`) +
		"[[webhooks]]\nurl = \"http://127.0.0.1:9999/relay?x=1\"\nsecret_file = \"/etc/other\"\nevents = [\"*\"]\n"
	cfg, err := Parse([]byte(doc), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	w, w2 := cfg.Webhooks[0], cfg.Webhooks[1]
	if !reflect.DeepEqual(w.Tenants, []string{"acme", "globex"}) || len(w.RetrySchedule) != 2 ||
		w.RetrySchedule[1].Duration() != 2*time.Second || w.CAFile != "/srv/tls/hooks.pem" {
		t.Errorf("webhook = %+v", *w)
	}
	if w2.Endpoint.Scheme != "http" || w2.Endpoint.RawQuery != "x=1" || w2.Key == w.Key || w2.Key != WebhookKey(w2.URL) {
		t.Errorf("webhook 2 = %+v", *w2)
	}
	for _, c := range []struct {
		typ, tenant string
		want        bool
	}{
		{"integration.connected", "acme", true},
		{"integration.flagged", "globex", true},
		{"integration.connected", "initech", false}, // not one of its tenants
		{"tenant.offboarded", "acme", true},
		{"tenant.disabled", "acme", false}, // not one of its patterns
		{"key.rotated", "", true},          // no tenant: every entry whose events match
	} {
		if got := w.Wants(c.typ, c.tenant); got != c.want {
			t.Errorf("Wants(%q, %q) = %v", c.typ, c.tenant, got)
		}
	}
	if !w2.Wants("tenant.disabled", "initech") {
		t.Error(`"*" must match every type and tenant`)
	}
	// The same entry written as an inline array of tables.
	inline := "webhooks = [{ url = \"https://hooks.example.com/vaultd\", secret_file = \"s\", retry_schedule = [\"3s\"] }]\n" + base
	cfg, err = Parse([]byte(inline), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Webhooks) != 1 || cfg.Webhooks[0].RetrySchedule[0].Duration() != 3*time.Second {
		t.Errorf("inline webhooks = %+v", cfg.Webhooks)
	}
}

func TestWebhookRefusals(t *testing.T) {
	known := strings.Join(EventTypes(), ", ")
	var many strings.Builder
	many.WriteString(base)
	for i := range MaxWebhooks + 1 {
		fmt.Fprintf(&many, "[[webhooks]]\nurl = \"https://h%d.example.com/\"\nsecret_file = \"s\"\n", i)
	}
	for _, tc := range []struct {
		name, doc, want string // want: the whole message after "config <input>: "
	}{
		{"url missing", base + "[[webhooks]]\nsecret_file = \"s\"\n", `line 35: webhooks[0].url: required`},
		{"url http", strings.Replace(hook(), "https://hooks", "http://hooks", 1), `line 36: webhooks[0].url: must use https (http is allowed only for 127.0.0.1, ::1 and localhost)`},
		{"url relative", strings.Replace(hook(), "https://hooks.example.com/vaultd", "/vaultd", 1), `line 36: webhooks[0].url: must be an absolute https URL`},
		{"url scheme", strings.Replace(hook(), "https://hooks", "ftp://hooks", 1), `line 36: webhooks[0].url: must be an absolute https URL`},
		{"url userinfo", strings.Replace(hook(), "https://hooks", "https://u:p@hooks", 1), `line 36: webhooks[0].url: must not contain user info (the key belongs in secret_file)`},
		{"url fragment", strings.Replace(hook(), "/vaultd\"", "/vaultd#x\"", 1), `line 36: webhooks[0].url: must not contain a fragment`},
		{"url twice", hook() + "[[webhooks]]\nurl = \"https://hooks.example.com/vaultd\"\nsecret_file = \"t\"\n", `line 39: webhooks[1].url: same url as webhooks[0]`},
		{"too many", many.String(), `line 83: webhooks[16]: at most 16 webhooks`},
		{"secret_file missing", strings.Replace(hook(), "secret_file = \"secrets/webhook\"\n", "", 1), `line 35: webhooks[0].secret_file: required`},
		{"tenant invalid", hook(`tenants = ["acme", "../x"]`), `line 38: webhooks[0].tenants[1]: not a valid tenant id`},
		{"tenant twice", hook(`tenants = ["acme", "acme"]`), `line 38: webhooks[0].tenants[1]: listed twice`},
		{"events empty", hook(`events = []`), `line 38: webhooks[0].events: must not be empty (omit the key, or write ["*"], for every event)`},
		{"event unknown", hook(`events = ["integration.created"]`), `line 38: webhooks[0].events[0]: unknown event type "integration.created": want one of ` + known + `, a prefix such as integration.*, or *`},
		{"event unknown prefix", hook(`events = ["webhook.*"]`), `line 38: webhooks[0].events[0]: unknown event type "webhook.*"`},
		{"event partial wildcard", hook(`events = ["integration.conn*"]`), `line 38: webhooks[0].events[0]: unknown event type`},
		{"event bare prefix", hook(`events = ["integration"]`), `line 38: webhooks[0].events[0]: unknown event type`},
		{"event double wildcard", hook(`events = ["*.*"]`), `line 38: webhooks[0].events[0]: unknown event type`},
		{"event twice", hook(`events = ["key.rotated", "key.rotated"]`), `line 38: webhooks[0].events[1]: listed twice`},
		{"retry empty", hook(`retry_schedule = []`), `line 38: webhooks[0].retry_schedule: must list 1 to 20 delays`},
		{"retry too many", hook(`retry_schedule = [` + strings.Repeat(`"1s", `, 21) + `]`), `line 38: webhooks[0].retry_schedule: must list 1 to 20 delays`},
		{"retry too short", hook(`retry_schedule = ["5s", "500ms"]`), `line 38: webhooks[0].retry_schedule[1]: must be between 1s and 24h`},
		{"retry zero", hook(`retry_schedule = ["0"]`), `line 38: webhooks[0].retry_schedule[0]: must be between 1s and 24h`},
		{"retry too long", hook(`retry_schedule = ["2d"]`), `line 38: webhooks[0].retry_schedule[0]: must be between 1s and 24h`},
		{"retry negative", hook(`retry_schedule = ["-5s"]`), `line 38: key "webhooks.retry_schedule": invalid duration`},
		{"retry integer", hook(`retry_schedule = ["5s", 30]`), `line 38: key "webhooks[0].retry_schedule[1]": expected a duration string such as 30s, not integer`},
		{"retry not array", hook(`retry_schedule = "5s"`), `line 38: key "webhooks[0].retry_schedule": expected an array of duration strings, not value`},
		{"ca_file empty", hook(`ca_file = ""`), `line 38: webhooks[0].ca_file: must not be empty (omit the key to use the system roots)`},
		{"unknown key", hook(`secret = "whsec_x"`), `line 38: unknown key "webhooks.secret"`},
		{"as a table", base + "[webhooks]\nurl = \"https://a\"\n", `line 35: webhooks: write [[webhooks]] (an array of tables), not [webhooks]`},
		{"as an inline table", "webhooks = { url = \"https://a\" }\n" + base, `line 1: webhooks: write [[webhooks]] or an array of inline tables, not a single table`},
		{"lifecycle typo", base + "[lifecycle]\nscore_threshold = 200\n", `line 36: lifecycle.score_threshold: must be between 0 and 100`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "/srv", ModeSyntax)
			checkErrShape(t, err, "<input>")
			if err != nil && !strings.Contains(err.Error(), "config <input>: "+tc.want) {
				t.Errorf("got  %q\nwant %q", err, "config <input>: "+tc.want)
			}
		})
	}
}

func whsec(n int) string {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(i + 1)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(k)
}

// In daemon mode the secret file is read and decoded; its content never
// appears in an error.
func TestWebhookSecretFile(t *testing.T) {
	dir := env(t)
	write(t, dir, "secrets/webhook", whsec(32)+"\n")
	cfg, err := Load(writeConfig(t, dir, hook()), ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Webhooks[0]
	if w.Secret.Len() != 32 || w.Secret.Reveal()[0] != 1 || w.Secret.Reveal()[31] != 32 {
		t.Fatalf("secret not decoded: %d bytes", w.Secret.Len())
	}
	if s := fmt.Sprintf("%v %+v %s", w.Secret, *w, w.Secret); strings.Contains(s, "AQID") || !strings.Contains(s, "[REDACTED]") {
		t.Errorf("secret printed: %s", s)
	}
	// ModeInit does not read it.
	cfg, err = Load(writeConfig(t, dir, hook()), ModeInit)
	if err != nil || cfg.Webhooks[0].Secret.Len() != 0 {
		t.Fatalf("init mode: %v", err)
	}
	// Unpadded base64 is accepted too.
	write(t, dir, "secrets/webhook", strings.TrimRight(whsec(31), "="))
	if cfg, err := Load(writeConfig(t, dir, hook()), ModeDaemon); err != nil || cfg.Webhooks[0].Secret.Len() != 31 {
		t.Fatalf("unpadded: %v", err)
	}

	for _, tc := range []struct {
		name, content string
		want          error
	}{
		{"no prefix", strings.TrimPrefix(whsec(32), "whsec_"), ErrWebhookSecretPrefix},
		{"wrong prefix", "whsk_" + strings.TrimPrefix(whsec(32), "whsec_"), ErrWebhookSecretPrefix},
		{"not base64", "whsec_s3cr3t!!s3cr3t!!s3cr3t!!s3cr3t!!", ErrWebhookSecretBase64},
		{"url-safe alphabet", "whsec_" + base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xff\xfe", 16))), ErrWebhookSecretBase64},
		{"too short", whsec(23), ErrWebhookSecretLength},
		{"too long", whsec(65), ErrWebhookSecretLength},
		{"empty", "", ErrSecretEmpty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(t, dir, "secrets/webhook", tc.content)
			_, err := Load(writeConfig(t, dir, hook()), ModeDaemon)
			checkErrShape(t, err, filepath.Join(dir, "vaultd.toml"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "line 37: webhooks[0].secret_file: cannot use webhook secret file") {
				t.Errorf("got %v", err)
			}
			if body := strings.TrimPrefix(tc.content, "whsec_"); len(body) > 4 && strings.Contains(err.Error(), body[:8]) {
				t.Errorf("error quotes the secret: %v", err)
			}
		})
	}
	rm(t, dir, "secrets/webhook")
	_, err = Load(writeConfig(t, dir, hook()), ModeDaemon)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "line 37: webhooks[0].secret_file") {
		t.Errorf("missing file: %v", err)
	}

	// ca_file: loaded in daemon mode, like a provider's.
	write(t, dir, "secrets/webhook", whsec(32))
	cfg, err = Load(writeConfig(t, dir, hook(`ca_file = "tls/provider.pem"`)), ModeDaemon)
	if err != nil || cfg.Webhooks[0].RootCAs == nil {
		t.Fatalf("ca_file: %v", err)
	}
	write(t, dir, "tls/not-pem", "nothing")
	_, err = Load(writeConfig(t, dir, hook(`ca_file = "tls/not-pem"`)), ModeDaemon)
	if err == nil || !strings.Contains(err.Error(), "line 38: webhooks[0].ca_file: cannot use CA file") {
		t.Errorf("bad ca_file: %v", err)
	}
}

func TestParseWebhookSecret(t *testing.T) {
	for _, n := range []int{24, 32, 64} {
		k, err := ParseWebhookSecret(whsec(n))
		if err != nil || k.Len() != n {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func TestMatchEvent(t *testing.T) {
	for _, c := range []struct {
		p, typ string
		want   bool
	}{
		{"*", "key.rotated", true},
		{"integration.*", "integration.scope_drift", true},
		{"integration.*", "tenant.disabled", false},
		{"tenant.disabled", "tenant.disabled", true},
		{"tenant.disabled", "tenant.offboarded", false},
	} {
		if got := MatchEvent(c.p, c.typ); got != c.want {
			t.Errorf("MatchEvent(%q, %q) = %v", c.p, c.typ, got)
		}
	}
	// Every documented type is accepted as a pattern of its own.
	for _, typ := range EventTypes() {
		if _, err := Parse([]byte(hook(`events = ["`+typ+`"]`)), "/srv", ModeSyntax); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}
