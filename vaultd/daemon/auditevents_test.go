package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/config"
)

const diffBase = `[server]
listen = "127.0.0.1:8443"
tls_cert = "a"
tls_key = "b"
client_ca = "c"
[hsm]
module = "/m.so"
token_label = "t"
pin_file = "p"
kek_label = "k"
[storage]
path = "/db"
[[principals]]
subject_cn = "ops-admin"
roles = ["operator"]
[[principals]]
uri_san = "spiffe://example.internal/app/crm"
roles = ["app"]
tenant = "acme"
[providers.google]
token_url = "https://oauth.example.com/token"
api_base_url = "https://api.example.com"
client_id = "abc"
client_secret_file = "s"
[providers.github]
token_url = "https://gh.example.com/token"
api_base_url = "https://api.gh.example.com"
client_id = "def"
client_secret_file = "s"
`

func parseCfg(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc), "/etc/vaultd", config.ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// edited applies old->new pairs to diffBase, failing if old is absent.
func edited(t *testing.T, pairs ...string) string {
	t.Helper()
	s := diffBase
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("test bug: %q not in diffBase", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func TestReloadDiff(t *testing.T) {
	old := parseCfg(t, diffBase)
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"nothing", diffBase, "no changes"},
		{"unrelated key", edited(t, `[storage]`, "[audit]\nsync = \"always\"\n[storage]"), "no changes"},
		{"principal added", diffBase + "[[principals]]\nsubject_cn = \"siem\"\nroles = [\"auditor\"]\n",
			"principals +subject_cn=siem (auditor)"},
		{"principal removed", edited(t, "[[principals]]\nsubject_cn = \"ops-admin\"\nroles = [\"operator\"]\n", ""),
			"principals -subject_cn=ops-admin"},
		{"roles changed", edited(t, `roles = ["operator"]`, `roles = ["auditor", "operator"]`),
			"principals ~subject_cn=ops-admin (operator -> auditor,operator)"},
		{"tenant changed", edited(t, `tenant = "acme"`, `tenant = "globex"`),
			"principals ~uri_san=spiffe://example.internal/app/crm (app tenant=acme -> app tenant=globex)"},
		{"providers", edited(t, "[providers.github]", "[providers.gitlab]", `client_id = "abc"`, `client_id = "abc2"`),
			"providers +gitlab, -github, ~google"},
		{"webhook added", diffBase + "[[webhooks]]\nurl = \"https://hooks.example.com/h\"\nsecret_file = \"w\"\n",
			"webhooks +" + config.WebhookKey("https://hooks.example.com/h")},
		{"all three", edited(t, `roles = ["app"]`, `roles = ["app", "auditor"]`, "[providers.github]", "[providers.zz]"),
			"principals ~uri_san=spiffe://example.internal/app/crm (app tenant=acme -> app,auditor tenant=acme); providers +zz, -github"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reloadDiff(old, parseCfg(t, tc.doc)); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	// Many names: counts instead, within the event's detail bound.
	var b strings.Builder
	b.WriteString(diffBase)
	for i := range 40 {
		fmt.Fprintf(&b, "[[principals]]\nuri_san = \"spiffe://example.internal/app/service-with-a-long-name-%02d\"\nroles = [\"app\"]\ntenant = \"acme\"\n", i)
	}
	got := reloadDiff(old, parseCfg(t, b.String()))
	if got != "principals added=40 removed=0 changed=0; providers added=0 removed=0 changed=0; webhooks added=0 removed=0 changed=0" {
		t.Errorf("long diff: %q", got)
	}
}

// A rotated client secret is a change of its provider, and never shown.
func TestReloadDiffSecrets(t *testing.T) {
	old, cur := parseCfg(t, diffBase), parseCfg(t, diffBase)
	old.Providers["google"].ClientSecret = secret.NewString("s3cr3t-one")
	cur.Providers["google"].ClientSecret = secret.NewString("s3cr3t-two")
	got := reloadDiff(old, cur)
	if got != "providers ~google" || strings.Contains(got, "s3cr3t") {
		t.Fatalf("got %q", got)
	}
	cur.Providers["google"].ClientSecret = secret.NewString("s3cr3t-one")
	if got := reloadDiff(old, cur); got != "no changes" {
		t.Fatalf("same secret: %q", got)
	}
	hook := "[[webhooks]]\nurl = \"https://hooks.example.com/h\"\nsecret_file = \"w\"\n"
	old, cur = parseCfg(t, diffBase+hook), parseCfg(t, diffBase+hook)
	old.Webhooks[0].Secret = secret.NewBytes([]byte("key-one-key-one-key-one-"))
	cur.Webhooks[0].Secret = secret.NewBytes([]byte("key-two-key-two-key-two-"))
	if got := reloadDiff(old, cur); got != "webhooks ~"+old.Webhooks[0].Key || strings.Contains(got, "key-") {
		t.Fatalf("webhook secret: %q", got)
	}
}

func TestReloadRefusedDetail(t *testing.T) {
	_, err := config.Parse([]byte(edited(t, `listen = "127.0.0.1:8443"`, `listen = "s3cr3t"`)), "/", config.ModeSyntax)
	if err == nil {
		t.Fatal("want a config error")
	}
	if got := reloadRefusedDetail(err); got != "refused: invalid config at line 2 server.listen" {
		t.Errorf("config error: %q", got)
	}
	if got := reloadRefusedDetail(fmt.Errorf("server certificate: %w", errors.New("token=s3cr3t"))); got != "refused" {
		t.Errorf("other error: %q", got)
	}
	if got := reloadRefusedDetail(fmt.Errorf("%w: disk", errReloadUnaudited)); got != "refused: not audited" {
		t.Errorf("unaudited: %q", got)
	}
}
