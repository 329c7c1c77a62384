package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

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
	f.Add([]byte("storage = { path = \"x\", max_connections = 1001 }\n" + strings.Replace(base, "[storage]\npath = \"data/vault.db\"\n", "", 1)))
	f.Add([]byte(strings.Replace(base, "[storage]\n", "[storage]\nmax_connections = 2\n", 1)))
	f.Add([]byte("[[principals]]\nuri_san = \"a:b\"\nroles = [\"app\", \"app\"]\n[[principals]]\n"))
	f.Add([]byte(base + connectBase))
	f.Add([]byte(base + "[connect]\nlisten = \":1\"\npublic_url = \"https://a:1/\"\nreturn_to = [\"https://b\", \"https://b/\"]\n"))
	f.Add([]byte(base + "[providers.z]\ntemplate = \"zendesk\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n" +
		"authorize_params = { State = \"x\" }\n[providers.z.authorize_params]\nprompt = \"consent\"\n"))
	f.Add([]byte(base + "[lifecycle]\nidle_disconnect_after = \"0\"\nreauth_purge_after = \"0d\"\nsweep_interval = \"1s\"\n"))
	f.Add([]byte(base + "[[webhooks]]\nurl = \"http://127.0.0.1:1/h\"\nsecret_file = \"s\"\nevents = [\"integration.*\"]\nretry_schedule = [\"1s\", 2]\n"))
	f.Add([]byte("webhooks = [{ url = \"https://a\", secret_file = \"s\", tenants = [\"t\"] }]\n" + base))
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
		if cfg.Server.Listen == "" || cfg.HSM.Module == "" || cfg.Storage.Path == "" || cfg.HSM.MaxSessions < 1 ||
			cfg.Storage.MaxConnections < MinMaxConnections || cfg.Storage.MaxConnections > MaxMaxConnections {
			t.Fatalf("required keys missing in accepted config: %+v", cfg)
		}
		for _, d := range []Duration{cfg.Server.RequestTimeout, cfg.Server.ShutdownTimeout, cfg.Storage.LockTimeout} {
			if d.Duration() <= 0 {
				t.Fatalf("non-positive duration accepted")
			}
		}
		for name, p := range cfg.Providers {
			// Without a template the file must name the endpoints itself.
			if p == nil || p.Name != name || p.Template == "" && (p.TokenEndpoint == nil || p.APIBase == nil) ||
				p.Timeout.Duration() <= 0 || p.RefreshMargin.Duration() <= 0 || p.DefaultTokenLifetime.Duration() <= 0 {
				t.Fatalf("provider %q accepted with bad values: %+v", name, p)
			}
		}
		for name, p := range cfg.Providers {
			for _, u := range []string{p.TokenURL, p.APIBaseURL, p.RevocationURL, p.AuthorizationURL} {
				if strings.ContainsAny(u, "{}") {
					t.Fatalf("provider %q accepted with a placeholder URL", name)
				}
			}
			for k := range p.AuthorizeParams {
				switch strings.ToLower(k) {
				case "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method":
					t.Fatalf("provider %q accepted authorize_params %q", name, k)
				}
			}
		}
		if c := cfg.Connect; c != nil {
			if c.PublicBase == nil || c.PublicBase.Scheme != "https" || c.PublicBase.User != nil || c.PublicBase.Path != "" ||
				c.RedirectURI != c.PublicBase.String()+CallbackPath || c.TLSCert == "" || c.TLSKey == "" ||
				c.SessionTTL.Duration() < time.Minute || c.SessionTTL.Duration() > 24*time.Hour ||
				len(c.ReturnTo) == 0 || len(c.ReturnToPrefixes) != len(c.ReturnTo) || c.Listen == cfg.Server.Listen {
				t.Fatalf("connect accepted with bad values: %+v", c)
			}
			for _, u := range c.ReturnToPrefixes {
				if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
					t.Fatalf("return_to prefix accepted with bad values: %v", u)
				}
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
		l := cfg.Lifecycle
		if l.ScoreThreshold < 0 || l.ScoreThreshold > 100 || l.SweepInterval.Duration() < time.Second ||
			l.RevocationRetryInitial.Duration() < time.Second || l.RevocationRetryInitial.Duration() > l.RevocationRetryFor.Duration() ||
			l.IdleDisconnectAfter.Duration() < 0 || l.ReauthPurgeAfter.Duration() < 0 {
			t.Fatalf("lifecycle accepted with bad values: %+v", l)
		}
		if len(cfg.Webhooks) > MaxWebhooks {
			t.Fatalf("%d webhooks accepted", len(cfg.Webhooks))
		}
		keys := map[string]bool{}
		for _, w := range cfg.Webhooks {
			if w == nil || w.Endpoint == nil || w.Endpoint.User != nil || w.Endpoint.Fragment != "" || w.SecretFile == "" ||
				len(w.Key) != 12 || keys[w.Key] || len(w.Events) == 0 || len(w.RetrySchedule) == 0 || len(w.RetrySchedule) > 20 {
				t.Fatalf("webhook accepted with bad values: %+v", w)
			}
			keys[w.Key] = true
			for _, tn := range w.Tenants {
				if !ids.Valid(tn) {
					t.Fatalf("webhook accepted with tenant %q", tn)
				}
			}
			for _, d := range w.RetrySchedule {
				if d.Duration() < time.Second || d.Duration() > 24*time.Hour {
					t.Fatalf("webhook accepted with retry delay %v", d)
				}
			}
			for _, p := range w.Events {
				if !validEventPattern(p, EventTypes()) {
					t.Fatalf("webhook accepted with event pattern %q", p)
				}
			}
		}
	})
}

// FuzzDuration: a duration either decodes to a non-negative span that
// reads back as the same span, or is refused without echoing its input.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"30s", "1h30m", "90d", "0", "0d", "-1d", "1.5d", "100000d", "100001d", "d", "+1d", "1d12h", "9223372036s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			if !errors.Is(err, errBadDuration) {
				t.Fatalf("%q: unexpected error %v", s, err)
			}
			return
		}
		if d.Duration() < 0 {
			t.Fatalf("%q: negative %v", s, d.Duration())
		}
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Fatalf("%q -> %q -> %v, %v", s, b, back, err)
		}
	})
}

// FuzzWebhookSecret: a secret either decodes to 24-64 bytes or is refused
// with one of the fixed errors (which never carry the input).
func FuzzWebhookSecret(f *testing.F) {
	for _, s := range []string{"whsec_" + strings.Repeat("AAAA", 8), "whsec_" + strings.Repeat("A", 43), "whsec_", "whsec_====", "x", "whsec_" + strings.Repeat("A", 88)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseWebhookSecret(s)
		if err != nil {
			if err != ErrWebhookSecretPrefix && err != ErrWebhookSecretBase64 && err != ErrWebhookSecretLength {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if k.Len() < 24 || k.Len() > 64 || !strings.HasPrefix(s, "whsec_") {
			t.Fatalf("%q accepted as %d bytes", s, k.Len())
		}
	})
}
