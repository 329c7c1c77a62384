package vault

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/catalog"
)

// Abuse of the connect flow: floods, replays, hostile token responses and
// racing callers, each bounded or refused without losing what matters.

// events returns the stored events of action.
func (f *fixture) events(t *testing.T, action string) []audit.Event {
	t.Helper()
	var out []audit.Event
	err := f.store.ScanAudit(t.Context(), 0, func(r storage.AuditRecord) (bool, error) {
		ev, err := audit.ParseEvent(r.Data)
		if err != nil {
			return false, err
		}
		if ev.Action == action {
			out = append(out, ev)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConnectCallbackFloodBounded: anyone can send callbacks naming no
// session; they are refused, and only a bounded number per second reach
// the audit trail, the next one saying how many were left out.
func TestConnectCallbackFloodBounded(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	noCookie := func(string) (string, bool) { return "", false }
	for i := range 1000 {
		q := "code=x&state=unknown" + strings.Repeat("a", i%7)
		if i%2 == 0 {
			q = "garbage"
		}
		if _, err := cf.svc.ConnectCallback(t.Context(), "rid", q, noCookie); !errors.Is(err, ErrConnectLinkInvalid) {
			t.Fatalf("callback %d: %v", i, err)
		}
	}
	if n := len(cf.events(t, audit.ActionConnectFail)); n != anonDenialsPerSecond {
		t.Fatalf("%d connect.fail events for 1000 refused callbacks in one second, want %d", n, anonDenialsPerSecond)
	}
	cf.clk.Add(time.Second)
	if _, err := cf.svc.ConnectCallback(t.Context(), "rid", "garbage", noCookie); !errors.Is(err, ErrConnectLinkInvalid) {
		t.Fatal(err)
	}
	evs := cf.events(t, audit.ActionConnectFail)
	last := evs[len(evs)-1]
	if last.Outcome != audit.OutcomeDenied || last.Actor != BrowserActor || !strings.Contains(last.Detail, "990 more") {
		t.Fatalf("the next event after the flood: %+v", last)
	}
}

// TestConnectReplayNamesSession: a replayed callback is refused as
// "finished", audited against the session's tenant (so the tenant's
// auditor sees it), at most maxSessionDenials times.
func TestConnectReplayNamesSession(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	cs, link := cf.start(t, "crm")
	lo, q := cf.open(t, link, true)
	if _, err := cf.svc.ConnectCallback(t.Context(), "rid", q, cookieOf(lo)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := cf.svc.ConnectCallback(t.Context(), "rid", q, cookieOf(lo)); !errors.Is(err, ErrConnectFinished) {
			t.Fatalf("replay: %v", err)
		}
	}
	if cf.exchanges.Load() != 1 {
		t.Fatalf("%d code exchanges", cf.exchanges.Load())
	}
	denied := 0
	for _, ev := range cf.events(t, audit.ActionConnectFail) {
		if ev.Outcome == audit.OutcomeDenied && ev.TenantID == "acme" && strings.Contains(ev.Detail, cs.ID) {
			denied++
		}
	}
	if denied != maxSessionDenials {
		t.Fatalf("%d denied events for 10 replays, want %d", denied, maxSessionDenials)
	}
}

// TestConnectHostileAPIHostRevoked: a token response naming an API host
// outside the template's patterns fails the session, stores nothing, and
// the tokens the provider issued are revoked, not left live.
func TestConnectHostileAPIHostRevoked(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	p, _ := cf.svc.Provider("conn")
	q := *p
	q.APIHostFromToken = &catalog.HostRule{Field: "instance_url", AllowedHosts: []string{"*.my.salesforce.com"}}
	q.APIBaseURL = "https://" + catalog.APIHost + "/services/data"
	q.APIBase = nil
	q.Endpoint.ResponseFields = []string{"instance_url"}
	q.Endpoint.RevocationURL = cf.prov.RevocationURL()
	ps := Providers{"conn": &q}
	cf.svc.SetProviders(ps)
	cf.prov.SetExtraTokenFields(map[string]string{"instance_url": "https://acme.my.salesforce.com.evil.example"})

	cs, link := cf.start(t, "crm")
	lo, rq := cf.open(t, link, true)
	res, err := cf.svc.ConnectCallback(t.Context(), "rid", rq, cookieOf(lo))
	if err != nil || res.Status != storage.ConnectFailed || !strings.Contains(res.Location, "status=failed") {
		t.Fatalf("callback: %+v, %v", res, err)
	}
	if _, err := cf.svc.GetIntegration(t.Context(), "acme", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an integration was stored: %v", err)
	}
	if got := cf.status(t, cs.ID); got != storage.ConnectFailed {
		t.Fatalf("session %s", got)
	}
	cf.fp.mu.Lock()
	revoked := append([]string(nil), cf.fp.revoked...)
	cf.fp.mu.Unlock()
	if len(revoked) != 2 || !strings.HasPrefix(revoked[0], "refresh_token=") || !strings.HasPrefix(revoked[1], "access_token=") {
		t.Fatalf("revoked %d tokens, want the refresh then the access token", len(revoked))
	}
}

// TestConnectProviderErrorSanitized: the provider's error parameter comes
// from a URL anyone can edit; only a code-shaped word reaches the audit
// detail and return_to.
func TestConnectProviderErrorSanitized(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	_, link := cf.start(t, "crm")
	lo, q := cf.open(t, link, true)
	state := ""
	for _, kv := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(kv, "state="); ok {
			state = v
		}
	}
	forged := "error=server_error+connect_session%3Dcs-other+error%3Dnone&state=" + state
	res, err := cf.svc.ConnectCallback(t.Context(), "rid", forged, cookieOf(lo))
	if err != nil || res.Status != storage.ConnectFailed || !strings.Contains(res.Location, "error=server_error") {
		t.Fatalf("callback: %+v, %v", res, err)
	}
	for _, ev := range cf.events(t, audit.ActionConnectFail) {
		if strings.Contains(ev.Detail, "cs-other") || strings.Contains(ev.Detail, "error=none") {
			t.Fatalf("provider text in the audit detail: %q", ev.Detail)
		}
	}
}

// TestClientCredentialsRacingStores: concurrent PUTs of one
// client-credentials integration make one token call; the others answer
// the token the first stored.
func TestClientCredentialsRacingStores(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cf.svc.ObtainClientCredentials(context.WithoutCancel(t.Context()), Caller{Principal: "app"}, "acme", "svc", "cc", StoreExtras{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := cf.prov.ClientCredentialsCount(); n != 1 {
		t.Fatalf("%d token calls for 10 racing stores, want 1", n)
	}
}
