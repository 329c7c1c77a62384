package settings

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Provider is one [providers.NAME] table merged with its catalog template:
// the template's values where the file is silent, the file's where it
// speaks. Without a template every merged value is the file's (with its
// default), so a config from before templates means what it meant.
type Provider struct {
	*config.Provider // as written (ClientSecret and RootCAs loaded in daemon mode)

	Template         string // "" when none
	AuthorizationURL string // "" = no connect flow for this provider; may hold {param} placeholders
	// TokenURL, RevocationURL and APIBaseURL may hold {param} placeholders
	// (template providers only); APIBaseURL starts with
	// "https://{api_host}" when APIHostFromToken is set.
	TokenURL, RevocationURL, APIBaseURL string
	AuthStyle                           string            // oauth.AuthStyleBasic or oauth.AuthStyleBody
	Grant                               string            // catalog.GrantAuthorizationCode or catalog.GrantClientCredentials
	PKCE                                bool              // send an S256 code challenge
	ScopeSeparator                      string            // " " or ","
	AuthorizeParams                     map[string]string // the template's, overlaid by the file's; never nil
	Scopes                              []string          // the file's scopes, else the template's DefaultScopes
	// Params are the template's parameters the merged URLs still use (a URL
	// written in the file replaces the template's, and its placeholders).
	Params []catalog.Param
	// APIHostFromToken is the template's rule, kept only while APIBaseURL is
	// the template's.
	APIHostFromToken *catalog.HostRule
	ResponseFields   []string
}

// Providers returns every provider of cfg merged with its template, keyed
// by name. A refusal is a config error at the provider's key and line: an
// unknown template, an auth style or grant oauth and the catalog refuse,
// an authorization_url on a client_credentials provider.
func Providers(cfg *config.Config) (map[string]Provider, error) {
	out := make(map[string]Provider, len(cfg.Providers))
	for _, name := range cfg.ProviderNames() {
		p, err := provider(cfg, name)
		if err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

func provider(cfg *config.Config, name string) (Provider, error) {
	fp := cfg.Providers[name]
	key := "providers." + name
	var t catalog.Template
	if fp.Template != "" {
		var ok bool
		if t, ok = catalog.Lookup(fp.Template); !ok {
			return Provider{}, cfg.KeyError(key+".template", fmt.Errorf("no template %s in the built-in catalog (list them with `vaultctl providers catalog`)", strconv.Quote(fp.Template)))
		}
	}
	or := func(file, templ string) string {
		if file != "" {
			return file
		}
		return templ
	}
	p := Provider{
		Provider:         fp,
		Template:         fp.Template,
		AuthorizationURL: or(fp.AuthorizationURL, t.AuthorizationURL),
		TokenURL:         or(fp.TokenURL, t.TokenURL),
		RevocationURL:    or(fp.RevocationURL, t.RevocationURL),
		APIBaseURL:       or(fp.APIBaseURL, t.APIBaseURL),
		ScopeSeparator:   or(or(fp.ScopeSeparator, t.ScopeSeparator), " "),
		AuthorizeParams:  maps.Clone(t.AuthorizeParams),
		Scopes:           slices.Clone(fp.Scopes),
		ResponseFields:   t.ResponseFields,
		PKCE:             true,
	}
	var err error
	if p.AuthStyle, err = oauth.ParseAuthStyle(or(fp.AuthStyle, t.AuthStyle)); err != nil {
		return Provider{}, cfg.KeyError(key+".auth_style", err)
	}
	if p.Grant, err = catalog.ParseGrant(or(fp.Grant, t.Grant)); err != nil {
		return Provider{}, cfg.KeyError(key+".grant", err)
	}
	switch {
	case fp.PKCE != nil:
		p.PKCE = *fp.PKCE
	case fp.Template != "":
		p.PKCE = t.PKCE
	}
	if p.AuthorizeParams == nil {
		p.AuthorizeParams = map[string]string{}
	}
	for k, v := range fp.AuthorizeParams {
		if v == "" {
			// The way to drop a template's parameter (prompt = "").
			delete(p.AuthorizeParams, k)
			continue
		}
		p.AuthorizeParams[k] = v
	}
	// scopes = [] written in the file means "none", not "the defaults".
	if fp.Scopes == nil {
		p.Scopes = slices.Clone(t.DefaultScopes)
	}
	if p.Grant == catalog.GrantClientCredentials && p.AuthorizationURL != "" {
		if fp.AuthorizationURL != "" {
			return Provider{}, cfg.KeyError(key+".authorization_url", fmt.Errorf("a client_credentials provider has no authorization endpoint (remove the key or the grant)"))
		}
		// The template's endpoint is for its authorization_code flow.
		p.AuthorizationURL = ""
	}
	if rule := t.APIHostFromToken; rule != nil && fp.APIBaseURL == "" {
		p.APIHostFromToken = rule
	}
	// Keep the params the merged URLs still use: a URL from the file
	// replaced the template's and its placeholders.
	urls := p.AuthorizationURL + " " + p.TokenURL + " " + p.RevocationURL + " " + p.APIBaseURL
	for _, prm := range t.Params {
		if strings.Contains(urls, "{"+prm.Name+"}") {
			p.Params = append(p.Params, prm)
		}
	}
	return p, nil
}
