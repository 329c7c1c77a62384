package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

// [lifecycle] is optional: absent, every key has its default.
func TestLifecycleDefaults(t *testing.T) {
	cfg, err := Parse([]byte(base), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	want := LifecycleConfig{
		ReauthPurgeAfter: NewDuration(30 * day), RevocationRetryFor: NewDuration(7 * day),
		RevocationRetryInitial: NewDuration(30 * time.Second), ScoreThreshold: 60, SweepInterval: NewDuration(time.Hour),
	}
	if !reflect.DeepEqual(cfg.Lifecycle, want) {
		t.Errorf("lifecycle = %+v, want %+v", cfg.Lifecycle, want)
	}
	p := cfg.Providers["example"]
	if p.RefreshAhead || !p.RefreshTokenMaxIdle.IsZero() {
		t.Errorf("provider lifecycle defaults: %v %v", p.RefreshAhead, p.RefreshTokenMaxIdle)
	}
	if cfg.Webhooks != nil {
		t.Errorf("webhooks = %v", cfg.Webhooks)
	}
}

// Written values win; "0" turns off the keys that say so; the floors let
// a test run the sweep in seconds.
func TestLifecycleValues(t *testing.T) {
	doc := base + `
[lifecycle]
idle_disconnect_after = "2s"
reauth_purge_after = "0"
revocation_retry_for = "5s"
revocation_retry_initial = "1s"
score_threshold = 0
sweep_interval = "1s"
`
	doc = strings.Replace(doc, `client_id          = "abc"`, "client_id = \"abc\"\nrefresh_ahead = true\nrefresh_token_max_idle = \"45d\"", 1)
	cfg, err := Parse([]byte(doc), "/srv", ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Lifecycle
	if l.IdleDisconnectAfter.Duration() != 2*time.Second || !l.ReauthPurgeAfter.IsZero() ||
		l.RevocationRetryFor.Duration() != 5*time.Second || l.RevocationRetryInitial.Duration() != time.Second ||
		l.ScoreThreshold != 0 || l.SweepInterval.Duration() != time.Second {
		t.Errorf("lifecycle = %+v", l)
	}
	p := cfg.Providers["example"]
	if !p.RefreshAhead || p.RefreshTokenMaxIdle.Duration() != 45*day {
		t.Errorf("provider: %v %v", p.RefreshAhead, p.RefreshTokenMaxIdle)
	}
	// "0" where a key documents it, in every spelling.
	for _, z := range []string{"0", "0s", "0d"} {
		cfg, err := Parse([]byte(base+"[lifecycle]\nidle_disconnect_after = \""+z+"\"\nreauth_purge_after = \""+z+"\"\n"), "/srv", ModeSyntax)
		if err != nil {
			t.Fatalf("%q: %v", z, err)
		}
		if !cfg.Lifecycle.IdleDisconnectAfter.IsZero() || !cfg.Lifecycle.ReauthPurgeAfter.IsZero() {
			t.Errorf("%q: %+v", z, cfg.Lifecycle)
		}
	}
}

func TestLifecycleRefusals(t *testing.T) {
	lc := func(body string) string { return base + "[lifecycle]\n" + body + "\n" } // body starts on line 36
	prov := func(line string) string {
		return edit(t, `client_id          = "abc"`, `client_id = "abc"`+"\n"+line) // line 34
	}
	for _, tc := range []struct {
		name, doc, want string // want: the whole message after "config <input>: "
	}{
		{"idle too short", lc(`idle_disconnect_after = "500ms"`), `line 36: lifecycle.idle_disconnect_after: must be "0" (off) or between 1s and 3650d`},
		{"idle too long", lc(`idle_disconnect_after = "4000d"`), `line 36: lifecycle.idle_disconnect_after: must be "0" (off) or between 1s and 3650d`},
		{"idle negative", lc(`idle_disconnect_after = "-1d"`), `line 36: key "lifecycle.idle_disconnect_after": invalid duration`},
		{"idle integer", lc(`idle_disconnect_after = 0`), `line 36: key "lifecycle.idle_disconnect_after": expected a duration string such as 30s, not integer`},
		{"purge too short", lc("score_threshold = 1\nreauth_purge_after = \"10ms\""), `line 37: lifecycle.reauth_purge_after: must be "0" (off) or between 1s and 3650d`},
		{"retry_for zero", lc(`revocation_retry_for = "0"`), `line 36: key "lifecycle.revocation_retry_for": invalid duration`},
		{"retry_for too long", lc(`revocation_retry_for = "366d"`), `line 36: lifecycle.revocation_retry_for: must be between 1s and 365d`},
		{"retry_initial zero", lc(`revocation_retry_initial = "0s"`), `line 36: key "lifecycle.revocation_retry_initial": invalid duration`},
		{"retry_initial too short", lc(`revocation_retry_initial = "100ms"`), `line 36: lifecycle.revocation_retry_initial: must be between 1s and 1h`},
		{"retry_initial too long", lc(`revocation_retry_initial = "2h"`), `line 36: lifecycle.revocation_retry_initial: must be between 1s and 1h`},
		{"retry_initial above retry_for", lc("revocation_retry_for = \"10s\"\nrevocation_retry_initial = \"20s\""), `line 37: lifecycle.revocation_retry_initial: must not exceed lifecycle.revocation_retry_for`},
		{"retry_initial default above retry_for", lc(`revocation_retry_for = "10s"`), `line 35: lifecycle.revocation_retry_initial: must not exceed`},
		{"threshold negative", lc(`score_threshold = -1`), `line 36: lifecycle.score_threshold: must be between 0 and 100`},
		{"threshold above 100", lc(`score_threshold = 101`), `line 36: lifecycle.score_threshold: must be between 0 and 100`},
		{"threshold string", lc(`score_threshold = "60"`), `line 36: key "lifecycle.score_threshold": expected an integer, not string`},
		{"sweep zero", lc(`sweep_interval = "0"`), `line 36: key "lifecycle.sweep_interval": invalid duration`},
		{"sweep too short", lc(`sweep_interval = "999ms"`), `line 36: lifecycle.sweep_interval: must be between 1s and 24h`},
		{"sweep too long", lc(`sweep_interval = "2d"`), `line 36: lifecycle.sweep_interval: must be between 1s and 24h`},
		{"unknown key", lc(`sweep = "1h"`), `line 36: unknown key "lifecycle.sweep"`},
		{"refresh_ahead string", prov(`refresh_ahead = "yes"`), `line 34: key "providers.example.refresh_ahead": expected a boolean (true or false), not string`},
		{"max_idle negative", prov(`refresh_token_max_idle = "-60d"`), `line 34: key "providers.example.refresh_token_max_idle": invalid duration`},
		{"max_idle integer", prov(`refresh_token_max_idle = 60`), `line 34: key "providers.example.refresh_token_max_idle": expected a duration string such as 30s, not integer`},
		{"max_idle too short", prov(`refresh_token_max_idle = "10ms"`), `line 34: providers.example.refresh_token_max_idle: must be "0" (off) or between 1s and 3650d`},
		// A zero elsewhere is still refused where it is written (in an
		// inline table too), now by the validator rather than the decoder.
		{"zero provider timeout", prov(`timeout = "0d"`), `line 34: key "providers.example.timeout": invalid duration`},
		{"zero connect ttl", base + connectBase + "session_ttl = \"0\"\n", `line 39: key "connect.session_ttl": invalid duration`},
		{"zero inline", "storage = { path = \"x\", lock_timeout = \"0s\" }\n" + strings.Replace(base, "[storage]\npath = \"data/vault.db\"\n", "", 1),
			`line 1: key "storage.lock_timeout": invalid duration`},
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
