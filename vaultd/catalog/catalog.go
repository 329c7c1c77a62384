// Package catalog is vaultd's built-in catalog of OAuth provider templates:
// endpoints, client authentication style, PKCE, scope separator, extra
// authorization parameters and quirks of well-known providers, so that a
// [providers.NAME] table with template = "google" needs only its client
// credentials. The data is one versioned JSON file, catalog.json, embedded
// in the binary and parsed once into immutable values; every accessor hands
// out deep copies.
//
// A template's URLs may hold {name} placeholders of parameters the template
// declares (a Zendesk subdomain, an Entra directory tenant), each with a
// strict anchored pattern; ValidateParams checks per-connection values and
// Expand fills them in. api_base_url may instead start with
// "https://{api_host}" when the API host comes from the token response
// (Salesforce's instance_url): APIBaseFromToken accepts only a host that one
// of the template's allowed host patterns matches.
//
// Host patterns are either an exact lower-case DNS name or "*." followed by
// one: "*.salesforce.com" matches a name that ends in ".salesforce.com" with
// one or more whole labels before it (acme.my.salesforce.com), never the bare
// "salesforce.com" (list it on its own when it is wanted).
package catalog

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

//go:embed catalog.json
var embedded []byte

// Grants a template (and a configured provider) can use.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantClientCredentials = "client_credentials"
)

// Client authentication styles at the token endpoint (oauth's vocabulary).
const (
	AuthStyleBasic = "basic"
	AuthStyleBody  = "body"
)

// APIHost is the placeholder an api_base_url starts with ("https://{api_host}")
// when the API host comes from the token response (Template.APIHostFromToken).
const APIHost = "{api_host}"

// Errors. Messages name a parameter or a field, never a value.
var (
	// ErrParam: a per-connection parameter is missing, unknown or does not
	// match its pattern.
	ErrParam = errors.New("catalog: invalid parameter")
	// ErrPlaceholder: a URL holds a placeholder with no value, or a
	// malformed one.
	ErrPlaceholder = errors.New("catalog: bad placeholder")
	// ErrAPIHost: an API host from a token response was refused.
	ErrAPIHost = errors.New("catalog: API host refused")
	// ErrCatalog: the catalog data is invalid.
	ErrCatalog = errors.New("catalog: invalid catalog")
)

// Param is a parameter a template's URLs need per connection.
type Param struct {
	Name        string `json:"name"`
	Pattern     string `json:"pattern"` // an anchored Go regexp (^...$)
	Description string `json:"description"`

	re *regexp.Regexp // compiled Pattern; nil in a Param built elsewhere
}

// HostRule says that the API host comes from a token-response field, and
// which hosts it may be.
type HostRule struct {
	Field        string   `json:"field"`
	AllowedHosts []string `json:"allowed_hosts"`
}

// Template is one provider of the catalog.
type Template struct {
	Name             string            `json:"name"`
	DisplayName      string            `json:"display_name"`
	Docs             []string          `json:"docs"` // the provider's documentation the facts come from
	AuthorizationURL string            `json:"authorization_url,omitempty"`
	TokenURL         string            `json:"token_url"`
	RevocationURL    string            `json:"revocation_url,omitempty"` // "" = no RFC 7009 endpoint
	APIBaseURL       string            `json:"api_base_url"`
	AuthStyle        string            `json:"auth_style"`
	PKCE             bool              `json:"pkce"`
	ScopeSeparator   string            `json:"scope_separator"`
	AuthorizeParams  map[string]string `json:"authorize_params,omitempty"`
	// DefaultScopes are asked for when the configuration lists none: those a
	// useful connection needs, a refresh token's scope among them.
	DefaultScopes    []string  `json:"default_scopes,omitempty"`
	Grant            string    `json:"grant"`
	Params           []Param   `json:"params,omitempty"` // sorted by name
	APIHostFromToken *HostRule `json:"api_host_from_token,omitempty"`
	// ResponseFields are token-response members kept besides the tokens.
	ResponseFields []string `json:"response_fields,omitempty"`
	// RefreshTokenExpires and AccessTokenExpires: nil when it depends (on
	// the app's settings or kind) or is not documented.
	RefreshTokenExpires *bool  `json:"refresh_token_expires,omitempty"`
	AccessTokenExpires  *bool  `json:"access_token_expires,omitempty"`
	Notes               string `json:"notes"`
}

// catalog is the parsed, validated catalog.json.
type catalog struct {
	version   int
	templates []Template // sorted by name
}

// data is the embedded catalog. It is immutable after init (accessors copy),
// and a test proves catalog.json valid, so a panic here is a build defect.
var data = mustParse(embedded)

func mustParse(b []byte) *catalog {
	c, err := parse(b)
	if err != nil {
		panic(err)
	}
	return c
}

// Version is the catalog format version of the embedded data.
func Version() int { return data.version }

// All returns every template, sorted by name; the slices and maps are
// the caller's.
func All() []Template {
	out := make([]Template, len(data.templates))
	for i, t := range data.templates {
		out[i] = t.clone()
	}
	return out
}

// Lookup returns the template called name (a copy).
func Lookup(name string) (Template, bool) {
	i, ok := slices.BinarySearchFunc(data.templates, name, func(t Template, n string) int { return strings.Compare(t.Name, n) })
	if !ok {
		return Template{}, false
	}
	return data.templates[i].clone(), true
}

func (t Template) clone() Template {
	t.Docs = slices.Clone(t.Docs)
	t.AuthorizeParams = maps.Clone(t.AuthorizeParams)
	t.DefaultScopes = slices.Clone(t.DefaultScopes)
	t.Params = slices.Clone(t.Params)
	if t.APIHostFromToken != nil {
		r := *t.APIHostFromToken
		r.AllowedHosts = slices.Clone(r.AllowedHosts)
		t.APIHostFromToken = &r
	}
	t.ResponseFields = slices.Clone(t.ResponseFields)
	if t.RefreshTokenExpires != nil {
		b := *t.RefreshTokenExpires
		t.RefreshTokenExpires = &b
	}
	if t.AccessTokenExpires != nil {
		b := *t.AccessTokenExpires
		t.AccessTokenExpires = &b
	}
	return t
}

// Bounds of a parameter value: a DNS name fits, and so does a GUID.
const maxParamValue = 253

// ValidateParams checks per-connection params against t's declared params:
// every declared param present, none unknown, each matching its pattern.
// Errors (ErrParam) name the param, never echo the value.
func (t Template) ValidateParams(params map[string]string) error {
	for _, p := range t.Params {
		v, ok := params[p.Name]
		if !ok || v == "" {
			return fmt.Errorf("%w: %s is required (%s)", ErrParam, p.Name, p.Description)
		}
		re, err := p.compiled()
		if err != nil {
			return fmt.Errorf("%w: %s has an unusable pattern", ErrParam, p.Name)
		}
		if len(v) > maxParamValue || !re.MatchString(v) {
			return fmt.Errorf("%w: %s does not match its pattern %s", ErrParam, p.Name, p.Pattern)
		}
	}
	if len(params) > len(t.Params) {
		for _, n := range slices.Sorted(maps.Keys(params)) {
			if !slices.ContainsFunc(t.Params, func(p Param) bool { return p.Name == n }) {
				return fmt.Errorf("%w: unknown parameter %s", ErrParam, bounded(n))
			}
		}
	}
	return nil
}

// compiled is p's pattern, wrapped so that it matches the whole value even
// if an alternation slipped past the ^...$ check.
func (p Param) compiled() (*regexp.Regexp, error) {
	if p.re != nil {
		return p.re, nil
	}
	return compilePattern(p.Pattern)
}

func compilePattern(pattern string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(pattern, "^") || !strings.HasSuffix(pattern, "$") || strings.HasSuffix(pattern, `\$`) {
		return nil, errors.New("pattern is not anchored (^...$)")
	}
	return regexp.Compile(`^(?:` + pattern + `)$`)
}

// bounded renders a name from outside for a message: quoted and short.
func bounded(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

// paramNameRE is the syntax of a placeholder name.
var paramNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Expand fills the {name} placeholders of s from params (already
// validated). An unknown or malformed placeholder is an error; so is a value
// with a character that could change the URL's structure (anything but
// A-Z a-z 0-9 - . _ ~), a second wall behind the params' patterns.
func Expand(s string, params map[string]string) (string, error) {
	if !strings.ContainsAny(s, "{}") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexAny(s, "{}")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if s[i] == '}' {
			return "", fmt.Errorf("%w: unbalanced }", ErrPlaceholder)
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%w: unbalanced {", ErrPlaceholder)
		}
		name := s[i+1 : i+j]
		if !paramNameRE.MatchString(name) {
			return "", fmt.Errorf("%w: malformed placeholder", ErrPlaceholder)
		}
		v, ok := params[name]
		if !ok {
			return "", fmt.Errorf("%w: no value for {%s}", ErrPlaceholder, name)
		}
		if v == "" || len(v) > maxParamValue || strings.IndexFunc(v, notUnreserved) >= 0 {
			return "", fmt.Errorf("%w: the value of {%s} has characters a URL part cannot hold", ErrPlaceholder, name)
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// notUnreserved: RFC 3986 unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~".
func notUnreserved(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == '~')
}

// Placeholders returns the placeholder names in s, in order of appearance,
// each once; malformed braces are ignored (Expand refuses them).
func Placeholders(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return out
		}
		if n := s[i+1 : i+j]; paramNameRE.MatchString(n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
		s = s[i+j+1:]
	}
}

// ParseGrant reads a grant as written in a config file or the catalog; ""
// is GrantAuthorizationCode. The error's text is the bare reason.
func ParseGrant(s string) (string, error) {
	switch s {
	case "", GrantAuthorizationCode:
		return GrantAuthorizationCode, nil
	case GrantClientCredentials:
		return GrantClientCredentials, nil
	}
	return "", fmt.Errorf("not allowed (want %q or %q)", GrantAuthorizationCode, GrantClientCredentials)
}
