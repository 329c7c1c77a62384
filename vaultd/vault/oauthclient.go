package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Grants a provider (and an integration) can use.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantClientCredentials = "client_credentials"
)

// Sealed field names of the connect flow; the AEAD binds each to its place
// (tenant, integration or session id, field), so a sealed client secret
// cannot be opened as a token nor moved to another integration.
const (
	fieldClient   = "oauth_client"
	fieldVerifier = "pkce_verifier"
)

// Bounds of a per-integration OAuth client ("bring your own app").
const (
	maxClientIDBytes     = 512
	maxClientSecretBytes = 4096
	maxParams            = 8
)

// OAuthClient is a per-integration OAuth client: vaultd seals it under the
// tenant's DEK like a token and uses it instead of the provider's client for
// that integration (code exchange, refresh, client credentials,
// revocation). It is never answered.
type OAuthClient struct {
	ClientID     string
	ClientSecret secret.String
}

// sealedClient is the plaintext inside Integration.Client and
// ConnectSession.Client; it exists only between open and use.
type sealedClient struct {
	ID     string `json:"client_id"`
	Secret string `json:"client_secret"`
}

func validClient(c *OAuthClient) error {
	if c == nil {
		return nil
	}
	if c.ClientID == "" || len(c.ClientID) > maxClientIDBytes || !printableASCII(c.ClientID) {
		return badRequest(fmt.Sprintf("client.client_id must be 1 to %d printable ASCII characters", maxClientIDBytes))
	}
	if c.ClientSecret.Len() > maxClientSecretBytes || !printableASCII(c.ClientSecret.Reveal()) {
		return badRequest(fmt.Sprintf("client.client_secret must be at most %d printable ASCII characters", maxClientSecretBytes))
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// sealClient seals c for the record named id (an integration or a connect
// session); nil c seals nothing.
func (s *Service) sealClient(ctx context.Context, t storage.Tenant, id string, c *OAuthClient) ([]byte, error) {
	if c == nil {
		return nil, nil
	}
	pt, err := json.Marshal(sealedClient{ID: c.ClientID, Secret: c.ClientSecret.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("%w: encode client: %w", ErrUnavailable, err)
	}
	defer secret.Zero(pt)
	ct, err := s.keys.SealField(ctx, t, id, fieldClient, pt)
	if err != nil {
		return nil, fmt.Errorf("%w: seal client: %w", ErrUnavailable, err)
	}
	return ct, nil
}

// sealClientWith seals c with seal (a held DEK's Sealer).
func sealClientWith(c *OAuthClient, seal func(field string, pt []byte) ([]byte, error)) ([]byte, error) {
	pt, err := json.Marshal(sealedClient{ID: c.ClientID, Secret: c.ClientSecret.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("%w: encode client: %w", ErrUnavailable, err)
	}
	defer secret.Zero(pt)
	ct, err := seal(fieldClient, pt)
	if err != nil {
		return nil, fmt.Errorf("%w: seal client: %w", ErrUnavailable, err)
	}
	return ct, nil
}

// openClient opens a sealed client of the record named id.
func (s *Service) openClient(ctx context.Context, t storage.Tenant, id string, ct []byte) (*OAuthClient, error) {
	if len(ct) == 0 {
		return nil, nil
	}
	b, err := s.keys.OpenField(ctx, t, id, fieldClient, ct)
	if err != nil {
		return nil, fmt.Errorf("%w: open client: %w", ErrUnavailable, err)
	}
	defer b.Wipe()
	var sc sealedClient
	if err := json.Unmarshal(b.Reveal(), &sc); err != nil {
		return nil, fmt.Errorf("%w: decode client: %w", ErrUnavailable, storage.ErrCorrupt)
	}
	return &OAuthClient{ClientID: sc.ID, ClientSecret: secret.NewString(sc.Secret)}, nil
}

// withClient is ep with c's credentials, when c is set.
func withClient(ep oauth.Endpoint, c *OAuthClient) oauth.Endpoint {
	if c != nil {
		ep.ClientID, ep.ClientSecret = c.ClientID, c.ClientSecret
	}
	return ep
}

// expandEndpoint fills a template's {param} placeholders in the token and
// revocation URLs with an integration's (validated) parameters.
func expandEndpoint(ep oauth.Endpoint, params map[string]string) (oauth.Endpoint, error) {
	var err error
	if ep.TokenURL, err = catalog.Expand(ep.TokenURL, params); err != nil {
		return oauth.Endpoint{}, fmt.Errorf("%w: token_url: %w", ErrUnavailable, err)
	}
	if ep.RevocationURL != "" {
		if ep.RevocationURL, err = catalog.Expand(ep.RevocationURL, params); err != nil {
			return oauth.Endpoint{}, fmt.Errorf("%w: revocation_url: %w", ErrUnavailable, err)
		}
	}
	return ep, nil
}

// forIntegration is p as one integration uses it: its parameters filled in
// and its own OAuth client, if it has one. The copy is the caller's.
func (s *Service) forIntegration(ctx context.Context, t storage.Tenant, in storage.Integration, p *Provider) (*Provider, error) {
	if len(in.Params) == 0 && len(in.Client) == 0 && !strings.Contains(p.Endpoint.TokenURL+p.Endpoint.RevocationURL, "{") {
		return p, nil
	}
	ep, err := expandEndpoint(p.Endpoint, in.Params)
	if err != nil {
		return nil, err
	}
	c, err := s.openClient(ctx, t, in.ID, in.Client)
	if err != nil {
		return nil, err
	}
	q := *p
	q.Endpoint = withClient(ep, c)
	return &q, nil
}

// checkParams validates per-connection parameters against what p's
// template declares: all of them, nothing else, each matching its pattern.
func checkParams(p *Provider, params map[string]string) error {
	if len(params) > maxParams {
		return badRequest("too many params")
	}
	if len(p.Params) == 0 {
		if len(params) > 0 {
			return badRequest("this provider takes no params")
		}
		return nil
	}
	if err := (catalog.Template{Name: p.Name, Params: p.Params}).ValidateParams(params); err != nil {
		// catalog's errors name the parameter, never its value.
		return badRequest("params: " + err.Error())
	}
	return nil
}

// apiBaseFor fixes an integration's API base when it is stored: the
// provider's, with the integration's parameters filled in, or a host taken
// from the token response when the provider's template says so (only one
// its allowed host patterns accept). "" means the provider's own
// api_base_url, unchanged.
func apiBaseFor(p *Provider, params map[string]string, tok oauth.Token) (string, error) {
	if p.APIHostFromToken != nil {
		v := tok.Fields[p.APIHostFromToken.Field]
		if v == "" {
			return "", fmt.Errorf("%w: the token response has no %s", errAPIHost, p.APIHostFromToken.Field)
		}
		base, err := catalog.APIBaseFromToken(*p.APIHostFromToken, p.APIBaseURL, v)
		if err != nil {
			return "", fmt.Errorf("%w: %w", errAPIHost, err)
		}
		return base, nil
	}
	if len(params) == 0 || !strings.Contains(p.APIBaseURL, "{") {
		return "", nil
	}
	base, err := catalog.Expand(p.APIBaseURL, params)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errAPIHost, err)
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%w: api base is not an https URL", errAPIHost)
	}
	return base, nil
}

// errAPIHost: the integration's API base could not be fixed (a hostile or
// missing host in the token response).
var errAPIHost = errors.New("vault: api host refused")

// requestedScopes is what a connect session or a client-credentials
// integration asks for: the caller's list (each within the provider's
// inventory) or, when empty, the whole inventory.
func requestedScopes(p *Provider, asked []string) ([]string, error) {
	if len(asked) == 0 {
		return slices.Clone(p.Scopes), nil
	}
	if len(asked) > 100 {
		return nil, badRequest("too many scopes")
	}
	out := make([]string, 0, len(asked))
	for _, sc := range asked {
		if !slices.Contains(p.Scopes, sc) {
			return nil, badRequest("a scope is outside the provider's scope inventory")
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}
