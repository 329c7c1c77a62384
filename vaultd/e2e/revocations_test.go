package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// listRevocations reads GET /v1/admin/revocations as the operator.
func listRevocations(t *testing.T, e *Env) (api.RevocationList, []byte) {
	t.Helper()
	r := do(t, e.HTTP(Operator), http.MethodGet, e.API+"/v1/admin/revocations", nil)
	wantStatus(t, r, http.StatusOK)
	var l api.RevocationList
	must(t, json.Unmarshal(r.Body, &l))
	return l, r.Body
}

// A revocation the provider refuses at disconnect is queued, listed for
// the operator (never with its token), retried by the daemon's loop and
// removed once the provider confirms, with a revocation.retry event.
func TestRevocationRetriedUntilConfirmed(t *testing.T) {
	e := New(t, Options{ExtraConfig: "\n[lifecycle]\nrevocation_retry_initial = \"1s\"\n"})
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")

	// The refresh token's revocation fails; the access token's is held at
	// the provider (after it is revoked), so the queue can be read while
	// the disconnect is still running and before any retry can answer.
	entered, release := e.Provider.Hold(oauthtest.HoldRevoke)
	defer release()
	e.Provider.SetNextRevokeError("temporarily_unavailable", http.StatusServiceUnavailable)
	deleted := make(chan apiResp, 1)
	go func() {
		deleted <- deleteNoFatal(e.HTTP(AppAcme), e.API+"/v1/integrations/crm")
	}()
	<-entered

	l, body := listRevocations(t, e)
	if len(l.Revocations) != 1 {
		t.Fatalf("pending revocations: %s", body)
	}
	p := l.Revocations[0]
	if p.TenantID != "acme" || p.IntegrationID != "crm" || p.Provider != ProviderName || p.Hint != "refresh_token" ||
		p.Attempts != 0 || p.LastError != "temporarily_unavailable" || p.ID == "" || p.CreatedAt.IsZero() || p.NextAttemptAt.Before(p.CreatedAt) {
		t.Fatalf("pending revocation: %s", body)
	}
	for _, s := range []string{tok.RefreshToken.Reveal(), tok.AccessToken.Reveal(), e.Provider.ClientSecret().Reveal()} {
		if bytes.Contains(body, []byte(s)) {
			t.Fatal("the revocation list shows a secret")
		}
	}
	// Apps may not read it.
	wantError(t, do(t, e.HTTP(AppAcme), http.MethodGet, e.API+"/v1/admin/revocations", nil), http.StatusForbidden, "forbidden")

	release()
	if r := <-deleted; r.Status != http.StatusOK {
		t.Fatalf("disconnect: %d %s", r.Status, r.Body)
	}
	// The daemon's loop retries it (a set-up wait, bounded).
	waitFor(t, func() bool {
		l, _ := listRevocations(t, e)
		return len(l.Revocations) == 0
	})
	if !e.Provider.IsRevoked(tok.RefreshToken) || !e.Provider.IsRevoked(tok.AccessToken) {
		t.Fatal("tokens not revoked at the provider after the retry")
	}
	if n := auditCount(t, e, evIs("crm", "revocation.retry", "success")); n != 1 {
		t.Fatalf("revocation.retry success events: %d, want 1", n)
	}
	if n := auditCount(t, e, evIs("crm", "token.revoke", "failure")); n != 1 {
		t.Fatalf("token.revoke failure events: %d, want 1", n)
	}
	waitFor(t, func() bool { return obMetric(t, e, "vaultd_revocations_pending ") == 0 })
}

// deleteNoFatal sends a DELETE from another goroutine (no t.Fatal there).
func deleteNoFatal(c *http.Client, url string) apiResp {
	req, err := http.NewRequest(http.MethodDelete, url, nil)
	if err != nil {
		return apiResp{Status: -1, Body: []byte(err.Error())}
	}
	resp, err := c.Do(req)
	if err != nil {
		return apiResp{Status: -1, Body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return apiResp{Status: resp.StatusCode, Header: resp.Header, Body: b.Bytes()}
}
