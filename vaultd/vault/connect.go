package vault

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// The connect flow: vaultd runs the OAuth authorization-code flow itself,
// so no application ever holds a token, a client secret or an
// authorization code.
//
//  1. An application creates a session over the mTLS API
//     (CreateConnectSession): tenant, integration id, provider, scopes and
//     return_to are fixed then; the answer is a one-time link whose secret
//     is stored only as a SHA-256 digest.
//  2. A browser opens the link (OpenConnectLink): the link is consumed, a
//     fresh state (256 bits) and PKCE verifier are made, the state's digest
//     and the digest of a browser-binding cookie are stored, and the
//     browser is sent to the provider.
//  3. The provider sends the browser back (ConnectCallback): the state must
//     name a pending session AND come with that browser's cookie; it is
//     consumed before the code is exchanged, so a replay finds nothing; the
//     token is stored with the session's completion in one transaction.
//
// Every step is a compare-and-swap on the session, so two browsers racing
// on one link or one state cannot both win.

// Sentinel errors of the browser side; the connect listener shows each as
// its own page.
var (
	// ErrConnectDisabled: no [connect] section, or the provider has no
	// authorization-code flow any more.
	ErrConnectDisabled = errors.New("vault: connect flow is not enabled")
	// ErrConnectLinkInvalid: a link or state vaultd never issued, or one
	// already used up.
	ErrConnectLinkInvalid = errors.New("vault: connect link is not valid")
	// ErrConnectLinkUsed: the link was opened before.
	ErrConnectLinkUsed = errors.New("vault: connect link was already used")
	// ErrConnectExpired: the session's time ran out.
	ErrConnectExpired = errors.New("vault: connect session expired")
	// ErrConnectDenied: a callback for a pending session from a browser
	// that did not open its link, or a mismatched issuer.
	ErrConnectDenied = errors.New("vault: connect callback refused")
	// ErrConnectFinished: the session already completed or failed.
	ErrConnectFinished = errors.New("vault: connect session already finished")
)

// ConnectSettings is the [connect] section as the service uses it.
type ConnectSettings struct {
	// RedirectURI is public_url + "/oauth/callback", registered with every
	// provider, compared by them exactly.
	RedirectURI string
	// LinkPrefix is public_url + "/connect/".
	LinkPrefix string
	SessionTTL time.Duration
	// ReturnTo are the allowed return_to prefixes.
	ReturnTo []*url.URL
}

// SetConnect swaps the connect settings (SIGHUP reload); nil turns the flow
// off for new sessions and links.
func (s *Service) SetConnect(c *ConnectSettings) { s.connect.Store(c) }

// ConnectEnabled reports whether a [connect] section is configured.
func (s *Service) ConnectEnabled() bool { return s.connect.Load() != nil }

// ConnectRequest is a POST /v1/connect/sessions body.
type ConnectRequest struct {
	IntegrationID string
	Provider      string
	Scopes        []string
	ReturnTo      string
	Params        map[string]string
	Client        *OAuthClient
}

// ConnectSession is what the API tells about a session. URL is set only in
// the answer that created it.
type ConnectSession struct {
	ID            string
	IntegrationID string
	Provider      string
	Status        string
	Error         string
	ExpiresAt     time.Time
	URL           string
}

// connectIDEncoding makes session ids of lowercase letters and digits.
var connectIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("%w: random: %w", ErrUnavailable, err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// linkSecretLen is the length of a link secret or a binding cookie: 32
// random bytes, base64url.
const linkSecretLen = 43

// validLinkSecret checks the syntax of a link secret (or cookie value)
// before it is hashed and looked up.
func validLinkSecret(s string) bool {
	if len(s) != linkSecretLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// CreateConnectSession starts a connect flow for the caller's tenant. The
// session and its connect.start event commit together.
func (s *Service) CreateConnectSession(ctx context.Context, c Caller, tenantID string, req ConnectRequest, opts ...WriteOption) (ConnectSession, error) {
	cfg := s.connect.Load()
	if cfg == nil {
		return ConnectSession{}, badRequest("the connect flow is not enabled on this vaultd")
	}
	if !storage.ValidID(req.IntegrationID) {
		return ConnectSession{}, badRequest("invalid integration_id")
	}
	p, ok := s.Provider(req.Provider)
	if !ok {
		return ConnectSession{}, badRequest("unknown provider")
	}
	if p.grant() != GrantAuthorizationCode || p.AuthorizationURL == "" {
		return ConnectSession{}, badRequest("this provider has no authorization_url: it cannot be connected through a browser")
	}
	scopes, err := requestedScopes(p, req.Scopes)
	if err != nil {
		return ConnectSession{}, err
	}
	returnTo, ok := allowedReturnTo(req.ReturnTo, cfg.ReturnTo)
	if !ok {
		return ConnectSession{}, badRequest("return_to is not within the configured return_to prefixes")
	}
	if err := checkParams(p, req.Params); err != nil {
		return ConnectSession{}, err
	}
	if err := validClient(req.Client); err != nil {
		return ConnectSession{}, err
	}
	t, err := s.tenant(ctx, tenantID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return ConnectSession{}, badRequest("the caller's tenant does not exist")
		}
		return ConnectSession{}, err
	}
	idb := make([]byte, 15)
	if _, err := rand.Read(idb); err != nil {
		return ConnectSession{}, fmt.Errorf("%w: random: %w", ErrUnavailable, err)
	}
	id := "cs-" + connectIDEncoding.EncodeToString(idb)
	link, err := randomToken(32)
	if err != nil {
		return ConnectSession{}, err
	}
	now := s.now().UTC()
	cs := storage.ConnectSession{
		ID: id, TenantID: tenantID, IntegrationID: req.IntegrationID, Provider: p.Name,
		Scopes: scopes, ReturnTo: returnTo, Params: cloneParams(req.Params),
		Actor: c.Principal, OnBehalfOf: c.OnBehalfOf, Status: storage.ConnectPending,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(cfg.SessionTTL),
		LinkHash: digest(link),
	}
	if cs.Client, err = s.sealClient(ctx, t, id, req.Client); err != nil {
		return ConnectSession{}, err
	}
	ev := c.success(audit.ActionConnectStart, tenantID, req.IntegrationID,
		fmt.Sprintf("connect_session=%s provider=%s", id, p.Name), opts)
	_, err = s.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		var rec storage.AuditRecord
		var err error
		cs, rec, err = s.store.CreateConnectSession(ctx, cs, build)
		return rec, err
	})
	if err != nil {
		return ConnectSession{}, s.storeErr(err)
	}
	out := s.sessionView(cs)
	out.URL = cfg.LinkPrefix + link
	return out, nil
}

// GetConnectSession answers a session of the caller's tenant; another
// tenant's answers ErrNotFound, like a missing one.
func (s *Service) GetConnectSession(ctx context.Context, tenantID, id string) (ConnectSession, error) {
	if !storage.ValidID(tenantID) || !storage.ValidID(id) {
		return ConnectSession{}, ErrNotFound
	}
	if _, err := s.tenant(ctx, tenantID); err != nil {
		return ConnectSession{}, err // a disabled tenant's: ErrTenantDisabled
	}
	cs, err := s.store.GetConnectSession(ctx, tenantID, id)
	if err != nil {
		return ConnectSession{}, s.storeErr(err)
	}
	return s.sessionView(cs), nil
}

func (s *Service) sessionView(cs storage.ConnectSession) ConnectSession {
	return ConnectSession{
		ID: cs.ID, IntegrationID: cs.IntegrationID, Provider: cs.Provider,
		Status: s.sessionStatus(cs), Error: cs.Error, ExpiresAt: cs.ExpiresAt.UTC(),
	}
}

// sessionStatus is the stored status, or expired for a pending session
// past its time (nothing needs to write that down).
func (s *Service) sessionStatus(cs storage.ConnectSession) string {
	if cs.Status == storage.ConnectPending && !s.now().Before(cs.ExpiresAt) {
		return storage.ConnectExpired
	}
	return cs.Status
}

func cloneParams(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// allowedReturnTo parses raw and checks it against the prefixes after
// parsing, never by string prefix: scheme, host and port equal (default
// ports made explicit), and the path inside the prefix's path at a segment
// boundary. A path a browser would rewrite (dot segments, encoded
// slashes or dots, backslashes) is refused, since the browser, not vaultd,
// would decide where it leads. It returns the URL as it will be used.
func allowedReturnTo(raw string, prefixes []*url.URL) (string, bool) {
	if raw == "" || len(raw) > 2048 || strings.ContainsAny(raw, "\\\x00\t\r\n ") {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") {
		return "", false
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", false
	}
	// Encoded slashes, backslashes and dots anywhere in what was sent:
	// EscapedPath re-encodes, so the raw text is what must be judged.
	low := strings.ToLower(raw)
	if strings.Contains(low, "%2f") || strings.Contains(low, "%5c") || strings.Contains(low, "%2e") {
		return "", false
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	if c := path.Clean(p); c != p && c+"/" != p {
		return "", false
	}
	for _, pre := range prefixes {
		if !sameOrigin(u, pre) {
			continue
		}
		pp := pre.Path
		if pp == "" {
			pp = "/"
		}
		if p == pp || strings.HasPrefix(p, strings.TrimSuffix(pp, "/")+"/") {
			return u.String(), true
		}
	}
	return "", false
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) &&
		strings.EqualFold(strings.TrimSuffix(a.Hostname(), "."), strings.TrimSuffix(b.Hostname(), ".")) &&
		portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// originOf is scheme://host[:port] of raw ("" if it does not parse).
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return strings.ToLower(u.Scheme) + "://" + host + portSuffix(u)
}

func portSuffix(u *url.URL) string {
	if p := portOf(u); p != "" && !(strings.EqualFold(u.Scheme, "https") && p == "443") && !(strings.EqualFold(u.Scheme, "http") && p == "80") {
		return ":" + p
	}
	return ""
}

// sessionCaller is the caller the events of a session's browser steps
// name: the application principal that created it (the link is its
// capability), with the browser request's id.
func sessionCaller(cs storage.ConnectSession, requestID string) Caller {
	return Caller{Principal: cs.Actor, OnBehalfOf: cs.OnBehalfOf, RequestID: requestID}
}

// ConnectSessionRetention is how long a finished or expired session is
// kept (for GET /v1/connect/sessions/{id}) before the sweep deletes it.
const ConnectSessionRetention = 24 * time.Hour

// PruneConnectSessions deletes sessions that finished or expired more than
// ConnectSessionRetention ago, so sessions do not accumulate forever. The
// session's own events (connect.start ... token.store or connect.fail)
// stay in the audit trail; the deletion has no event of its own. It
// returns how many it deleted; at most max per call (bounded work).
func (s *Service) PruneConnectSessions(ctx context.Context, max int) (int, error) {
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return 0, s.storeErr(err)
	}
	cutoff := s.now().Add(-ConnectSessionRetention)
	n := 0
	for _, t := range tenants {
		sessions, err := s.store.ListConnectSessions(ctx, t.ID)
		if err != nil {
			return n, s.storeErr(err)
		}
		for _, cs := range sessions {
			if n >= max {
				return n, nil
			}
			end := cs.ExpiresAt
			if cs.Status != storage.ConnectPending && cs.UpdatedAt.Before(end) {
				end = cs.UpdatedAt
			}
			if !end.Before(cutoff) {
				continue
			}
			if _, err := s.store.DeleteConnectSession(ctx, t.ID, cs.ID, nil); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return n, s.storeErr(err)
			}
			n++
		}
	}
	return n, nil
}
