package notify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/vaultd/audit"
)

func TestMapTypes(t *testing.T) {
	at := audit.NewTimestamp(time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC))
	ev := func(action, outcome, detail string) audit.Event {
		return audit.Event{Time: at, TenantID: "acme", IntegrationID: "crm", Action: action, Outcome: outcome, Detail: detail}
	}
	for _, c := range []struct {
		name                  string
		ev                    audit.Event
		typ, status, provider string
		reason                string
	}{
		{"store", ev(audit.ActionTokenStore, audit.OutcomeSuccess, "provider=example"), TypeIntegrationConnected, "active", "example", "token stored"},
		{"connect", ev(audit.ActionTokenStore, audit.OutcomeSuccess, "provider=example connect_session=cs1"), TypeIntegrationConnected, "active", "example", "connect flow completed"},
		{"cc", ev(audit.ActionTokenStore, audit.OutcomeSuccess, "provider=sf grant=client_credentials"), TypeIntegrationConnected, "active", "sf", "token stored"},
		{"degraded", ev(audit.ActionTokenRefresh, audit.OutcomeFailure, "degraded: unreachable"), TypeIntegrationDegraded, "degraded", "", "unreachable"},
		{"degraded odd", ev(audit.ActionTokenRefresh, audit.OutcomeFailure, "degraded: Bearer abc.def"), TypeIntegrationDegraded, "degraded", "", "refresh failed"},
		{"reauth", ev(audit.ActionTokenRefresh, audit.OutcomeFailure, "reauthorization_required: invalid_grant"), TypeIntegrationReauthorizationRequired, "reauthorization_required", "", "invalid_grant"},
		{"recovered", ev(audit.ActionTokenRefresh, audit.OutcomeSuccess, "recovered; scope drift"), TypeIntegrationRecovered, "active", "", "refresh succeeded"},
		{"delete", ev(audit.ActionIntegrationDelete, audit.OutcomeSuccess, "revoked_at_provider=true"), TypeIntegrationDisconnected, "disconnected", "", "deleted; revoked at the provider"},
		{"drift", ev(audit.ActionScopeDrift, audit.OutcomeSuccess, "unexpected scopes: admin"), TypeIntegrationScopeDrift, "active", "", "unexpected scopes granted"},
		{"flagged", ev(audit.ActionIntegrationFlagged, audit.OutcomeSuccess, "score=42 threshold=60"), TypeIntegrationFlagged, "flagged", "", "health score below threshold (score 42)"},
		{"disable", ev(audit.ActionTenantDisable, audit.OutcomeSuccess, ""), TypeTenantDisabled, "disabled", "", "disabled by an operator"},
		{"offboard", ev(audit.ActionTenantOffboard, audit.OutcomeSuccess, "integrations=3"), TypeTenantOffboarded, "offboarded", "", "tenant offboarded"},
		{"rotate", ev(audit.ActionKeyRotate, audit.OutcomeSuccess, "dek_version=2 kek_version=1"), TypeKeyRotated, "", "", "data key rotated"},
		{"rewrap", ev(audit.ActionKeyRotate, audit.OutcomeSuccess, "rewrap deks=2 kek_version=3"), TypeKeyRotated, "", "", "data keys rewrapped under the current key encryption key"},
		{"rewrap upgrade", ev(audit.ActionKeyRotate, audit.OutcomeSuccess, "rewrap deks=0 kek_version=3 tenant key deks=1"), TypeKeyRotated, "", "", "data keys rewrapped under the current key encryption key"},
		{"tenant key", ev(audit.ActionKeyRotate, audit.OutcomeSuccess, "tenant key deks=2 kek_version=3"), TypeKeyRotated, "", "", "data keys wrapped under the tenant key"},
		{"delete pending", ev(audit.ActionIntegrationDelete, audit.OutcomeSuccess, "revoked_at_provider=false"), TypeIntegrationDisconnected, "disconnected", "", "deleted; revocation pending"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, ok := Map(c.ev)
			if !ok {
				t.Fatal("no notification")
			}
			if b.Type != c.typ || b.Data.Status != c.status || b.Data.Provider != c.provider || b.Data.Reason != c.reason {
				t.Errorf("got %+v", b)
			}
			if b.Data.TenantID != "acme" || b.Data.IntegrationID != "crm" {
				t.Errorf("ids: %+v", b.Data)
			}
			if b.Timestamp != "2026-03-04T05:06:07.123456Z" {
				t.Errorf("timestamp %q", b.Timestamp)
			}
			if _, err := time.Parse(time.RFC3339, b.Timestamp); err != nil {
				t.Errorf("timestamp not RFC 3339: %v", err)
			}
			var m struct {
				Type, Timestamp string
				Data            map[string]string
			}
			if err := json.Unmarshal(b.Marshal(), &m); err != nil {
				t.Fatal(err)
			}
			if len(m.Data) != 5 || m.Type != c.typ {
				t.Errorf("body %s", b.Marshal())
			}
		})
	}
}

func TestMapIgnores(t *testing.T) {
	for _, ev := range []audit.Event{
		{Action: audit.ActionTokenStore, Outcome: audit.OutcomeFailure},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeSuccess, Detail: ""},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeSuccess, Detail: "scope drift"},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeSuccess, Detail: "not recovered yet"},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeFailure, Detail: "invalid_client"},
		{Action: audit.ActionIntegrationDelete, Outcome: audit.OutcomeFailure},
		{Action: audit.ActionTenantDisable, Outcome: audit.OutcomeDenied},
		{Action: audit.ActionTenantEnable, Outcome: audit.OutcomeSuccess},
		{Action: audit.ActionKeyRotate, Outcome: audit.OutcomeFailure},
		{Action: audit.ActionKeyRotate, Outcome: audit.OutcomeSuccess, Detail: "rewrap deks=0 kek_version=2"},
		{Action: audit.ActionIntegrationSweep, Outcome: audit.OutcomeSuccess, Detail: "idle_disconnect last_used: 91d ago"},
		{Action: audit.ActionProxyRequest, Outcome: audit.OutcomeSuccess},
		{Action: audit.ActionWebhookDeadLetter, Outcome: audit.OutcomeFailure},
		{Action: audit.ActionWebhookRedeliver, Outcome: audit.OutcomeSuccess},
	} {
		if b, ok := Map(ev); ok {
			t.Errorf("%s/%s %q mapped to %s", ev.Action, ev.Outcome, ev.Detail, b.Type)
		}
	}
}

// A detail is free text: nothing of it but a provider name and an error
// code of the fixed shape reaches a body.
func TestMapNeverCopiesDetail(t *testing.T) {
	const leak = "ya29.SECRET-token"
	for _, ev := range []audit.Event{
		{Action: audit.ActionTokenStore, Outcome: audit.OutcomeSuccess, Detail: "provider=" + leak + "!x " + leak},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeFailure, Detail: "degraded: " + leak},
		{Action: audit.ActionTokenRefresh, Outcome: audit.OutcomeFailure, Detail: "reauthorization_required: " + leak},
		{Action: audit.ActionScopeDrift, Outcome: audit.OutcomeSuccess, Detail: "unexpected scopes: " + leak},
		{Action: audit.ActionIntegrationFlagged, Outcome: audit.OutcomeSuccess, Detail: leak + " score=9"},
		{Action: audit.ActionIntegrationDelete, Outcome: audit.OutcomeSuccess, Detail: leak},
		{Action: audit.ActionTokenStore, Outcome: audit.OutcomeSuccess, TenantID: "ac me\"", IntegrationID: leak + "/x"},
	} {
		b, ok := Map(ev)
		if !ok {
			t.Fatalf("%s not mapped", ev.Action)
		}
		if body := string(b.Marshal()); strings.Contains(body, "SECRET") {
			t.Errorf("%s: body carries detail text: %s", ev.Action, body)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pats []string
		typ  string
		want bool
	}{
		{nil, TypeKeyRotated, true},
		{[]string{"*"}, TypeTenantDisabled, true},
		{[]string{"integration.*"}, TypeIntegrationDegraded, true},
		{[]string{"integration.*"}, TypeTenantDisabled, false},
		{[]string{"integration.*"}, "integrationX", false},
		{[]string{"tenant.disabled"}, TypeTenantDisabled, true},
		{[]string{"tenant.disabled"}, TypeTenantOffboarded, false},
		{[]string{"key.rotated", "tenant.*"}, TypeTenantOffboarded, true},
	} {
		if got := Match(c.pats, c.typ); got != c.want {
			t.Errorf("Match(%q, %s) = %v", c.pats, c.typ, got)
		}
	}
}

// FuzzMap: any event maps to nothing or to a body whose every field is
// from a fixed set or of a safe shape.
func FuzzMap(f *testing.F) {
	for _, s := range [][3]string{
		{audit.ActionTokenStore, audit.OutcomeSuccess, "provider=example connect_session=x"},
		{audit.ActionTokenRefresh, audit.OutcomeFailure, "degraded: timeout"},
		{audit.ActionTokenRefresh, audit.OutcomeFailure, "reauthorization_required: invalid_grant"},
		{audit.ActionTokenRefresh, audit.OutcomeSuccess, "recovered"},
		{audit.ActionIntegrationFlagged, audit.OutcomeSuccess, "score=100"},
		{audit.ActionKeyRotate, audit.OutcomeSuccess, "rewrap deks=2 kek_version=3"},
	} {
		f.Add(s[0], s[1], s[2], "acme", "crm")
	}
	f.Fuzz(func(t *testing.T, action, outcome, detail, tenant, integration string) {
		b, ok := Map(audit.Event{Action: action, Outcome: outcome, Detail: detail, TenantID: tenant, IntegrationID: integration})
		if !ok {
			return
		}
		known := false
		for _, typ := range Types {
			known = known || typ == b.Type
		}
		if !known {
			t.Fatalf("type %q", b.Type)
		}
		for _, v := range []string{b.Data.TenantID, b.Data.IntegrationID, b.Data.Provider} {
			if v != "" && !idRE.MatchString(v) {
				t.Fatalf("unsafe id %q", v)
			}
		}
		if strings.ContainsAny(b.Data.Reason, "\"\\<>\n") || len(b.Data.Reason) > 80 {
			t.Fatalf("reason %q", b.Data.Reason)
		}
		if !json.Valid(b.Marshal()) {
			t.Fatal("invalid JSON")
		}
	})
}
