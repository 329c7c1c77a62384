package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// protocolParams are the authorization-request parameters vaultd sets
// itself: authorize_params may not name them (in any case).
var protocolParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

// Bounds of authorize_params (a typo guard; real ones have a handful).
const (
	maxAuthorizeParams     = 32
	maxAuthorizeParamName  = 64
	maxAuthorizeParamValue = 256
)

var templateNameRE = providerNameRE

// providerEndpoints checks a provider's URLs and connect keys. Without a
// template, token_url and api_base_url are required as before; with one,
// every URL and auth_style may be left to the template. URLs written in the
// file never hold {placeholders}: those are the catalog's.
func (v *validator) providerEndpoints(key string, p *Provider) error {
	if v.ix.has(key+".template") && !templateNameRE.MatchString(p.Template) {
		return v.fail(key+".template", "not a template name (1 to 64 of a-z 0-9 _ -; list them with `vaultctl providers catalog`)")
	}
	templ := p.Template != ""
	for _, f := range []struct {
		name string
		raw  string
	}{{"token_url", p.TokenURL}, {"api_base_url", p.APIBaseURL}, {"revocation_url", p.RevocationURL}, {"authorization_url", p.AuthorizationURL}} {
		if strings.ContainsAny(f.raw, "{}") {
			return v.fail(key+"."+f.name, "must not contain { or }: placeholders belong to catalog templates, "+
				"write the provider's actual URL")
		}
		if v.ix.has(key+"."+f.name) && f.raw == "" {
			if templ {
				return v.fail(key+"."+f.name, "must not be empty (omit the key to take the template's)")
			}
			return v.fail(key+"."+f.name, "must not be empty (omit the key when the provider has no such endpoint)")
		}
	}
	var err error
	if p.TokenEndpoint, err = v.endpoint(key+".token_url", p.TokenURL, !templ, true); err != nil {
		return err
	}
	if p.APIBase, err = v.endpoint(key+".api_base_url", p.APIBaseURL, !templ, false); err != nil {
		return err
	}
	if p.RevocationEndpoint, err = v.endpoint(key+".revocation_url", p.RevocationURL, false, true); err != nil {
		return err
	}
	if p.AuthorizationEndpoint, err = v.endpoint(key+".authorization_url", p.AuthorizationURL, false, true); err != nil {
		return err
	}
	// grant is read by internal/settings (with the template's default);
	// only an explicit "" is refused here, as for auth_style.
	if p.Grant == "" && v.ix.has(key+".grant") {
		return v.fail(key+".grant", "must not be empty (omit the key for the default)")
	}
	if v.ix.has(key + ".issuer") {
		u, err := url.Parse(p.Issuer)
		if p.Issuer == "" || len(p.Issuer) > 2048 || err != nil || u.Scheme != "https" || u.Host == "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.IndexFunc(p.Issuer, isSpaceOrControl) >= 0 {
			return v.fail(key+".issuer", "must be an https URL without query or fragment (the provider's issuer identifier, RFC 9207)")
		}
	}
	if v.ix.has(key+".scope_separator") && p.ScopeSeparator != " " && p.ScopeSeparator != "," {
		return v.fail(key+".scope_separator", `must be " " or ","`)
	}
	return v.authorizeParams(key+".authorize_params", p.AuthorizeParams)
}

// authorizeParams checks extra static authorization-request parameters:
// printable ASCII names and values, bounded, none of the protocol's own.
// Values are never echoed (one may be a login hint).
func (v *validator) authorizeParams(key string, m map[string]string) error {
	if len(m) > maxAuthorizeParams {
		return v.fail(key, "at most %d parameters", maxAuthorizeParams)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		k := key + "." + n
		if n == "" || len(n) > maxAuthorizeParamName || !printableASCII(n, false) {
			return v.fail(key, "parameter name %s: want 1 to %d printable ASCII characters without spaces", quote(n), maxAuthorizeParamName)
		}
		if slices.Contains(protocolParams, strings.ToLower(n)) {
			return v.fail(k, "%s is set by vaultd itself and cannot be an authorize_params entry", n)
		}
		if val := m[n]; len(val) > maxAuthorizeParamValue || !printableASCII(val, true) {
			return v.fail(k, "value must be at most %d printable ASCII characters", maxAuthorizeParamValue)
		}
	}
	return nil
}

func printableASCII(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == ' ' && !spaces {
			return false
		}
	}
	return true
}

// Bounds of [connect] session_ttl. The floor is low because a short
// session only hurts the person connecting (and lets tests see expiry on
// the real binary); links stay single use whatever it is.
const (
	minSessionTTL = time.Second
	maxSessionTTL = 24 * time.Hour
)

var upperRE = regexp.MustCompile(`[A-Z]`)

// connect checks [connect]: the browser-facing listener of the connect flow.
func (v *validator) connect() error {
	c := v.cfg.Connect
	if c == nil {
		return nil
	}
	s := &v.cfg.Server
	if err := v.hostPort("connect.listen", c.Listen, true); err != nil {
		return err
	}
	if c.Listen == s.Listen {
		return v.fail("connect.listen", "must differ from server.listen (the connect listener has no client certificates)")
	}
	if s.OpsListen != "" && c.Listen == s.OpsListen {
		return v.fail("connect.listen", "must differ from server.ops_listen")
	}
	if err := v.publicURL(c); err != nil {
		return err
	}
	if c.SessionTTL.IsZero() {
		c.SessionTTL = NewDuration(DefaultSessionTTL)
	}
	if d := c.SessionTTL.Duration(); d < minSessionTTL || d > maxSessionTTL {
		return v.fail("connect.session_ttl", "must be between 1s and 24h")
	}
	if err := v.returnTo(c); err != nil {
		return err
	}
	hasCert, hasKey := v.ix.has("connect.tls_cert"), v.ix.has("connect.tls_key")
	if hasCert != hasKey {
		return v.fail("connect", "set both tls_cert and tls_key, or neither (to use [server]'s)")
	}
	if !hasCert {
		// [server]'s paths, already resolved and checked.
		c.TLSCert, c.TLSKey = s.TLSCert, s.TLSKey
		return nil
	}
	for _, f := range []struct {
		key string
		p   *string
	}{{"connect.tls_cert", &c.TLSCert}, {"connect.tls_key", &c.TLSKey}} {
		if err := v.path(f.key, f.p, true); err != nil {
			return err
		}
		if v.mode == ModeDaemon {
			if err := v.readable(f.key, *f.p); err != nil {
				return err
			}
		}
	}
	return nil
}

// publicURL checks public_url: the https origin browsers and providers see.
// The binding cookie is Secure, so https is required even on loopback.
func (v *validator) publicURL(c *ConnectConfig) error {
	const key = "connect.public_url"
	raw := c.PublicURL
	if raw == "" {
		return v.fail(key, "required (the https origin browsers and providers reach the connect listener at)")
	}
	u, err := parseOrigin(raw)
	if err != nil {
		return v.fail(key, "%s", err.Error())
	}
	if u.Scheme != "https" {
		return v.fail(key, "must use https (the connect flow's cookie is Secure)")
	}
	if u.Path != "" && u.Path != "/" {
		return v.fail(key, "must have no path other than /: the callback is public_url + %s", CallbackPath)
	}
	c.RedirectURI = strings.TrimSuffix(raw, "/") + CallbackPath
	u.Path = ""
	c.PublicBase = u
	return nil
}

// returnTo checks the allowed return_to prefixes.
func (v *validator) returnTo(c *ConnectConfig) error {
	if len(c.ReturnTo) == 0 {
		return v.fail("connect.return_to", "required: list the URL prefixes a connect flow may return the browser to")
	}
	seen := map[string]int{}
	c.ReturnToPrefixes = make([]*url.URL, 0, len(c.ReturnTo))
	for i, raw := range c.ReturnTo {
		key := fmt.Sprintf("connect.return_to[%d]", i)
		if raw == "" {
			return v.fail(key, "must not be empty")
		}
		u, err := parseOrigin(raw)
		if err != nil {
			return v.fail(key, "%s", err.Error())
		}
		switch u.Scheme {
		case "https":
		case "http":
			if !isLoopbackHost(u.Hostname()) {
				return v.fail(key, "must use https (http is allowed only for 127.0.0.1, ::1 and localhost)")
			}
		}
		if u.Path == "" {
			u.Path = "/"
		}
		norm := u.String()
		if j, dup := seen[norm]; dup {
			return v.fail(key, "same prefix as connect.return_to[%d]", j)
		}
		seen[norm] = i
		c.ReturnToPrefixes = append(c.ReturnToPrefixes, u)
	}
	return nil
}

// parseOrigin parses an absolute http(s) URL with a lower-case host, a
// valid port if any, and no user info, query or fragment. Its errors never
// quote the URL.
func parseOrigin(raw string) (*url.URL, error) {
	if strings.IndexFunc(raw, isSpaceOrControl) >= 0 || strings.ContainsAny(raw, "\\{}") {
		return nil, fmt.Errorf("must be an absolute https URL")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("must be an absolute https URL")
	}
	if u.User != nil || strings.Contains(raw, "@") {
		return nil, fmt.Errorf("must not contain user info")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, fmt.Errorf("must not contain a query")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("must not contain a fragment")
	}
	if upperRE.MatchString(u.Host) {
		return nil, fmt.Errorf("write the host in lower case (as browsers send it)")
	}
	if h, port, err := net.SplitHostPort(u.Host); err == nil {
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 || port != strconv.FormatUint(n, 10) || h == "" {
			return nil, fmt.Errorf("port must be a number from 1 to 65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, fmt.Errorf("port must be a number from 1 to 65535")
	}
	return u, nil
}
