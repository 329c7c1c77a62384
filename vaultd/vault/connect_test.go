package vault

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// The connect flow at the service level, with an injected clock (session
// expiry, the retention sweep), the fake provider's real endpoints, and
// the PKCE verifier seen where only a test can see it: in the exchange.

const (
	testRedirect = "https://vaultd.test/oauth/callback"
	testReturnTo = "https://app.example.com/done"
	testTTL      = 10 * time.Minute
)

// s256 is RFC 7636's S256 transformation, the test's own.
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestS256Vector pins the test's own S256 to RFC 7636 Appendix B, so the
// verifier check below compares against the standard.
func TestS256Vector(t *testing.T) {
	t.Parallel()
	if got := s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"); got != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Fatalf("S256 of the RFC 7636 verifier = %s", got)
	}
}

// connectFixture is a fixture with a "conn" provider on the fake
// provider (authorization code with PKCE), a "cc" client-credentials one,
// [connect] on, and the exchange's verifiers recorded.
type connectFixture struct {
	*fixture
	prov *oauthtest.Provider

	mu        sync.Mutex
	verifiers []string
	exchanges atomic.Int64
}

func newConnectFixture(t *testing.T) *connectFixture {
	t.Helper()
	fp := oauthtest.New(t, oauthtest.Config{RedirectURIs: []string{testRedirect}, RequirePKCE: true})
	cf := &connectFixture{prov: fp}
	cf.fixture = newFixture(t, func(o *Options) {
		api, _ := url.Parse(fp.APIBaseURL())
		ep := fp.Endpoint()
		o.Providers["conn"] = &Provider{
			Name: "conn", Endpoint: ep, APIBase: api, APIBaseURL: fp.APIBaseURL(), Scopes: []string{"contacts.read", "contacts.write"},
			RefreshMargin: time.Minute, DefaultLifetime: time.Hour,
			AuthorizationURL: fp.AuthorizationURL(), PKCE: true,
		}
		o.Providers["cc"] = &Provider{
			Name: "cc", Endpoint: ep, APIBase: api, APIBaseURL: fp.APIBaseURL(), Scopes: []string{"reports.read"},
			RefreshMargin: time.Minute, DefaultLifetime: time.Hour, Grant: GrantClientCredentials,
		}
		prefix, _ := url.Parse("https://app.example.com/")
		o.Connect = &ConnectSettings{
			RedirectURI: testRedirect, LinkPrefix: "https://vaultd.test/connect/",
			SessionTTL: testTTL, ReturnTo: []*url.URL{prefix},
		}
		o.Exchange = func(ctx context.Context, ep oauth.Endpoint, code secret.String, redirectURI string, verifier secret.String) (oauth.Token, error) {
			cf.exchanges.Add(1)
			cf.mu.Lock()
			cf.verifiers = append(cf.verifiers, verifier.Reveal())
			cf.mu.Unlock()
			return oauth.Exchange(ctx, ep, code, redirectURI, verifier)
		}
		o.ClientCredentials = oauth.ClientCredentials
	})
	return cf
}

// start creates a session for acme and returns it and its link secret.
func (cf *connectFixture) start(t *testing.T, integ string) (ConnectSession, string) {
	t.Helper()
	cs, err := cf.svc.CreateConnectSession(t.Context(), Caller{Principal: "app"}, "acme", ConnectRequest{
		IntegrationID: integ, Provider: "conn", Scopes: []string{"contacts.read"}, ReturnTo: testReturnTo,
	})
	if err != nil {
		t.Fatal(err)
	}
	link, ok := strings.CutPrefix(cs.URL, "https://vaultd.test/connect/")
	if !ok || len(link) != linkSecretLen {
		t.Fatalf("link %q", cs.URL)
	}
	return cs, link
}

// open opens the link and has the user approve (or deny) at the provider;
// it answers the callback's raw query and the browser's cookie.
func (cf *connectFixture) open(t *testing.T, link string, approve bool) (lo LinkOpened, rawQuery string) {
	t.Helper()
	lo, err := cf.svc.OpenConnectLink(t.Context(), "rid-open", link)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := cf.prov.Authorize(lo.Location, approve)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cb)
	if err != nil {
		t.Fatal(err)
	}
	return lo, u.RawQuery
}

func cookieOf(lo LinkOpened) func(string) (string, bool) {
	return func(id string) (string, bool) {
		if id != lo.SessionID {
			return "", false
		}
		return lo.Cookie.Reveal(), true
	}
}

func (cf *connectFixture) status(t *testing.T, id string) string {
	t.Helper()
	cs, err := cf.svc.GetConnectSession(t.Context(), "acme", id)
	if err != nil {
		t.Fatal(err)
	}
	return cs.Status
}

// TestConnectFlowPKCE: the verifier vaultd sends in the exchange is the
// one whose S256 went in the authorization request, and no secret of the
// flow (link, state, cookie, code, verifier, tokens) is in a stored record
// or the audit trail.
func TestConnectFlowPKCE(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	ctx := t.Context()
	cs, link := cf.start(t, "crm")
	lo, raw := cf.open(t, link, true)
	loc, _ := url.Parse(lo.Location)
	challenge, state := loc.Query().Get("code_challenge"), loc.Query().Get("state")
	if loc.Query().Get("code_challenge_method") != "S256" || challenge == "" || state == "" {
		t.Fatalf("authorization request %s", lo.Location)
	}
	res, err := cf.svc.ConnectCallback(ctx, "rid-cb", raw, cookieOf(lo))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.ConnectCompleted || res.SessionID != cs.ID {
		t.Fatalf("callback %+v", res)
	}
	if len(cf.verifiers) != 1 || s256(cf.verifiers[0]) != challenge || len(cf.verifiers[0]) < 43 {
		t.Fatalf("the exchange's verifier does not match the challenge")
	}
	u, _ := url.Parse(res.Location)
	if q := u.Query(); len(q) != 2 || q.Get("connect_session") != cs.ID || q.Get("status") != "completed" {
		t.Fatalf("return_to %s", res.Location)
	}
	lease, err := cf.svc.AccessToken(ctx, Caller{Principal: "app"}, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	if !cf.prov.AccessTokenValid(lease.Token) {
		t.Fatal("the stored token is not the exchanged one")
	}
	code, _ := url.ParseQuery(raw)
	secrets := []string{link, state, lo.Cookie.Reveal(), code.Get("code"), cf.verifiers[0], lease.Token.Reveal(),
		oauthtest.AccessTokenPrefix, oauthtest.RefreshTokenPrefix, oauthtest.CodePrefix}

	// Every stored record, as the store holds it.
	var dump strings.Builder
	sessions, err := cf.store.ListConnectSessions(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	in, err := cf.store.GetIntegration(ctx, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{sessions, in} {
		b, _ := json.Marshal(v)
		dump.Write(b)
	}
	if in.ConnectSession != cs.ID {
		t.Fatalf("integration's connect_session %q", in.ConnectSession)
	}
	err = cf.audit.Query(ctx, audit.Filter{Limit: 10000}, func(line []byte) error {
		dump.Write(line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(dump.String(), s) {
			t.Errorf("a stored record or audit event carries a secret of the flow (%.14s...)", s)
		}
	}
	acts := auditActions(t, cf.fixture)
	for _, a := range []string{"connect.start/success", "connect.open/success", "connect.callback/success", "token.store/success"} {
		if acts[a] != 1 {
			t.Errorf("audit %s: %d", a, acts[a])
		}
	}
}

// TestConnectExpiry: expiry runs on the service's clock. A link opened
// after the TTL is refused; a callback after the TTL is refused before the
// code is spent; the session then reads "expired".
func TestConnectExpiry(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	ctx := t.Context()

	cs, link := cf.start(t, "late-link")
	if cs.ExpiresAt != cf.clk.Now().Add(testTTL) {
		t.Fatalf("expires_at %v", cs.ExpiresAt)
	}
	cf.clk.Add(testTTL - time.Second)
	if got := cf.status(t, cs.ID); got != storage.ConnectPending {
		t.Fatalf("a second before expiry: %s", got)
	}
	cf.clk.Add(time.Second)
	if got := cf.status(t, cs.ID); got != storage.ConnectExpired {
		t.Fatalf("at expiry: %s", got)
	}
	if _, err := cf.svc.OpenConnectLink(ctx, "rid", link); !errors.Is(err, ErrConnectExpired) {
		t.Fatalf("expired link: %v", err)
	}

	cs2, link2 := cf.start(t, "late-callback")
	lo, raw := cf.open(t, link2, true)
	cf.clk.Add(testTTL)
	before := auditActions(t, cf.fixture)["connect.fail/denied"]
	if _, err := cf.svc.ConnectCallback(ctx, "rid", raw, cookieOf(lo)); !errors.Is(err, ErrConnectExpired) {
		t.Fatalf("callback after expiry: %v", err)
	}
	if cf.exchanges.Load() != 0 || cf.prov.CodeExchangeCount() != 0 {
		t.Fatal("an expired session's code was exchanged")
	}
	if got := auditActions(t, cf.fixture)["connect.fail/denied"]; got != before+1 {
		t.Fatalf("%d denied connect.fail events, want %d", got, before+1)
	}
	if got := cf.status(t, cs2.ID); got != storage.ConnectExpired {
		t.Fatalf("after a late callback: %s", got)
	}
	if _, err := cf.svc.GetIntegration(ctx, "acme", "late-callback"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("late callback stored an integration: %v", err)
	}
}

// TestConnectRaces: one link opened by many browsers at once has one
// winner; one state called back many times at once is exchanged once.
func TestConnectRaces(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	ctx := t.Context()
	const n = 16

	_, link := cf.start(t, "race-link")
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cf.svc.OpenConnectLink(ctx, "rid", link)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrConnectLinkUsed), errors.Is(err, ErrConnectLinkInvalid):
			default:
				t.Errorf("open: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d browsers opened one link", wins.Load())
	}

	cs, link2 := cf.start(t, "race-callback")
	lo, raw := cf.open(t, link2, true)
	wins.Store(0)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cf.svc.ConnectCallback(ctx, "rid", raw, cookieOf(lo))
			if err == nil && res.Status == storage.ConnectCompleted {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || cf.prov.CodeExchangeCount() != 1 {
		t.Fatalf("%d completions and %d code exchanges for one state", wins.Load(), cf.prov.CodeExchangeCount())
	}
	if got := cf.status(t, cs.ID); got != storage.ConnectCompleted {
		t.Fatalf("session %s", got)
	}
}

// TestConnectPrune: finished and expired sessions go after the retention,
// on the service's clock; newer ones stay.
func TestConnectPrune(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	ctx := t.Context()
	done, link := cf.start(t, "done")
	lo, raw := cf.open(t, link, true)
	if _, err := cf.svc.ConnectCallback(ctx, "rid", raw, cookieOf(lo)); err != nil {
		t.Fatal(err)
	}
	stale, _ := cf.start(t, "stale")
	cf.clk.Add(testTTL + ConnectSessionRetention - time.Minute)
	fresh, _ := cf.start(t, "fresh")
	if n, err := cf.svc.PruneConnectSessions(ctx, 100); err != nil || n != 1 {
		t.Fatalf("prune before the stale one's retention: %d %v", n, err)
	}
	cf.clk.Add(2 * time.Minute)
	if n, err := cf.svc.PruneConnectSessions(ctx, 100); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	for _, id := range []string{done.ID, stale.ID} {
		if _, err := cf.svc.GetConnectSession(ctx, "acme", id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("pruned session %s: %v", id, err)
		}
	}
	if got := cf.status(t, fresh.ID); got != storage.ConnectPending {
		t.Fatalf("fresh session %s", got)
	}
	// The integration the finished session stored is not the sweep's.
	if _, err := cf.svc.GetIntegration(ctx, "acme", "done"); err != nil {
		t.Fatal(err)
	}
}

// TestClientCredentialsExpiredStorm: on the service's clock the token is
// past its expiry; many callers at once make exactly one grant call.
func TestClientCredentialsExpiredStorm(t *testing.T) {
	t.Parallel()
	cf := newConnectFixture(t)
	ctx := t.Context()
	c := Caller{Principal: "app"}
	md, err := cf.svc.ObtainClientCredentials(ctx, c, "acme", "svc", "cc", StoreExtras{})
	if err != nil {
		t.Fatal(err)
	}
	if md.Grant != GrantClientCredentials || cf.prov.ClientCredentialsCount() != 1 {
		t.Fatalf("metadata %+v, %d grant calls", md, cf.prov.ClientCredentialsCount())
	}
	cf.clk.Add(2 * time.Hour) // well past the token's hour
	const n = 200
	toks := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := cf.svc.AccessToken(ctx, c, "acme", "svc")
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
				return
			}
			toks[i] = l.Token.Reveal()
		}()
	}
	wg.Wait()
	if got := cf.prov.ClientCredentialsCount(); got != 2 {
		t.Fatalf("%d grant calls, want 1 to connect and exactly 1 renewal", got)
	}
	for _, tok := range toks {
		if tok != toks[0] || !cf.prov.AccessTokenValid(secret.NewString(tok)) {
			t.Fatal("a caller got another token than the renewed one")
		}
	}
	// A refused client: reauthorization_required, no retry storm.
	cf.clk.Add(2 * time.Hour)
	cf.prov.SetNextTokenError("invalid_client", 401)
	if _, err := cf.svc.AccessToken(ctx, c, "acme", "svc"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("invalid_client: %v", err)
	}
	if _, err := cf.svc.AccessToken(ctx, c, "acme", "svc"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("after invalid_client: %v", err)
	}
	if got := cf.prov.ClientCredentialsCount(); got != 3 {
		t.Fatalf("%d grant calls after a refused client, want 3", got)
	}
}
