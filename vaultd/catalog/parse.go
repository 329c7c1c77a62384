package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// CurrentVersion is the catalog format this package reads.
const CurrentVersion = 1

// Bounds that keep the catalog (and the checks of config values against the
// same rules) small and printable.
const (
	maxDataBytes      = 1 << 20
	maxAuthorizeParam = 256
	maxAuthorizeCount = 32
	maxNotes          = 1024
)

// ProtocolParams are the authorization-request parameters vaultd itself
// sets; neither a template nor a config file may set them as
// authorize_params.
var ProtocolParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

var templateNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// file is catalog.json as written.
type file struct {
	Version   int            `json:"version"`
	Providers []fileTemplate `json:"providers"`
}

type fileTemplate struct {
	Name                string               `json:"name"`
	DisplayName         string               `json:"display_name"`
	Docs                []string             `json:"docs"`
	AuthorizationURL    string               `json:"authorization_url"`
	TokenURL            string               `json:"token_url"`
	RevocationURL       string               `json:"revocation_url"`
	APIBaseURL          string               `json:"api_base_url"`
	AuthStyle           string               `json:"auth_style"`
	PKCE                *bool                `json:"pkce"`
	ScopeSeparator      string               `json:"scope_separator"`
	AuthorizeParams     map[string]string    `json:"authorize_params"`
	DefaultScopes       []string             `json:"default_scopes"`
	Grant               string               `json:"grant"`
	Params              map[string]fileParam `json:"params"`
	APIHostFromToken    *HostRule            `json:"api_host_from_token"`
	ResponseFields      []string             `json:"response_fields"`
	RefreshTokenExpires *bool                `json:"refresh_token_expires"`
	AccessTokenExpires  *bool                `json:"access_token_expires"`
	Notes               string               `json:"notes"`
}

type fileParam struct {
	Pattern     string `json:"pattern"`
	Description string `json:"description"`
}

// secretFields are token-response members that are (or carry) credentials:
// never kept as an extra response field.
var secretFields = []string{"access_token", "refresh_token", "id_token", "code", "client_secret"}

// parse reads and validates a catalog document strictly: unknown members,
// trailing data and every rule of the package doc are errors (ErrCatalog).
func parse(b []byte) (*catalog, error) {
	if len(b) > maxDataBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrCatalog, maxDataBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCatalog, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the document", ErrCatalog)
	}
	if f.Version != CurrentVersion {
		return nil, fmt.Errorf("%w: version %d (this vaultd reads %d)", ErrCatalog, f.Version, CurrentVersion)
	}
	c := &catalog{version: f.Version}
	seen := map[string]bool{}
	for i, ft := range f.Providers {
		t, err := ft.template()
		if err != nil {
			return nil, fmt.Errorf("%w: providers[%d] (%s): %w", ErrCatalog, i, bounded(ft.Name), err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: providers[%d]: name %s listed twice", ErrCatalog, i, t.Name)
		}
		seen[t.Name] = true
		c.templates = append(c.templates, t)
	}
	slices.SortFunc(c.templates, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return c, nil
}

func (ft *fileTemplate) template() (Template, error) {
	t := Template{
		Name: ft.Name, DisplayName: ft.DisplayName, Docs: ft.Docs,
		AuthorizationURL: ft.AuthorizationURL, TokenURL: ft.TokenURL, RevocationURL: ft.RevocationURL, APIBaseURL: ft.APIBaseURL,
		AuthStyle: ft.AuthStyle, ScopeSeparator: ft.ScopeSeparator, AuthorizeParams: ft.AuthorizeParams,
		DefaultScopes: ft.DefaultScopes, APIHostFromToken: ft.APIHostFromToken, ResponseFields: ft.ResponseFields,
		RefreshTokenExpires: ft.RefreshTokenExpires, AccessTokenExpires: ft.AccessTokenExpires, Notes: ft.Notes,
	}
	if !templateNameRE.MatchString(t.Name) {
		return t, fmt.Errorf("name: want 1 to 64 of a-z 0-9 _ -")
	}
	if !printable(t.DisplayName, 80, true) {
		return t, fmt.Errorf("display_name: want 1 to 80 printable characters")
	}
	if !printable(t.Notes, maxNotes, true) {
		return t, fmt.Errorf("notes: want 1 to %d printable characters", maxNotes)
	}
	if len(t.Docs) == 0 {
		return t, fmt.Errorf("docs: list at least one documentation URL")
	}
	for i, d := range t.Docs {
		if err := checkURL(d, nil, true); err != nil {
			return t, fmt.Errorf("docs[%d]: %w", i, err)
		}
	}
	var err error
	if t.Grant, err = ParseGrant(ft.Grant); err != nil {
		return t, fmt.Errorf("grant: %w", err)
	}
	if ft.PKCE == nil {
		return t, fmt.Errorf("pkce: required (true unless the provider rejects PKCE parameters)")
	}
	t.PKCE = *ft.PKCE
	if t.AuthStyle != AuthStyleBasic && t.AuthStyle != AuthStyleBody {
		return t, fmt.Errorf("auth_style: want %q or %q", AuthStyleBasic, AuthStyleBody)
	}
	if t.ScopeSeparator != " " && t.ScopeSeparator != "," {
		return t, fmt.Errorf(`scope_separator: want " " or ","`)
	}
	if err := CheckAuthorizeParams(t.AuthorizeParams); err != nil {
		return t, fmt.Errorf("authorize_params: %w", err)
	}
	for i, s := range t.DefaultScopes {
		if !ValidScope(s) || slices.Contains(t.DefaultScopes[:i], s) {
			return t, fmt.Errorf("default_scopes[%d]: not a scope token, or listed twice", i)
		}
	}

	// Params, then the URLs that use them.
	declared := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(ft.Params)) {
		fp := ft.Params[n]
		if !paramNameRE.MatchString(n) || n == strings.Trim(APIHost, "{}") {
			return t, fmt.Errorf("params: name %s: want a-z, then up to 31 of a-z 0-9 _ (and not api_host)", bounded(n))
		}
		re, err := compilePattern(fp.Pattern)
		if err != nil {
			return t, fmt.Errorf("params.%s.pattern: %w", n, err)
		}
		if !printable(fp.Description, 200, true) {
			return t, fmt.Errorf("params.%s.description: want 1 to 200 printable characters", n)
		}
		declared[n] = true
		t.Params = append(t.Params, Param{Name: n, Pattern: fp.Pattern, Description: fp.Description, re: re})
	}
	used := map[string]bool{}
	for _, u := range []struct {
		key, val       string
		required, host bool
	}{
		{"authorization_url", t.AuthorizationURL, t.Grant == GrantAuthorizationCode, false},
		{"token_url", t.TokenURL, true, false},
		{"revocation_url", t.RevocationURL, false, false},
		{"api_base_url", t.APIBaseURL, true, true},
	} {
		if u.val == "" {
			if u.required {
				return t, fmt.Errorf("%s: required", u.key)
			}
			continue
		}
		val := u.val
		if u.host && t.APIHostFromToken != nil {
			rest, ok := strings.CutPrefix(val, "https://"+APIHost)
			if !ok || rest != "" && rest[0] != '/' {
				return t, fmt.Errorf("api_base_url: with api_host_from_token it must start with https://%s", APIHost)
			}
			val = "https://api-host.invalid" + rest
		}
		for _, n := range Placeholders(val) {
			if !declared[n] {
				return t, fmt.Errorf("%s: placeholder {%s} is not a declared param", u.key, n)
			}
			used[n] = true
		}
		if err := checkURL(val, declared, !u.host); err != nil {
			return t, fmt.Errorf("%s: %w", u.key, err)
		}
	}
	if t.Grant == GrantClientCredentials && t.AuthorizationURL != "" {
		return t, fmt.Errorf("authorization_url: a client_credentials template has none")
	}
	for n := range declared {
		if !used[n] {
			return t, fmt.Errorf("params.%s: declared but used in no URL", n)
		}
	}
	if r := t.APIHostFromToken; r != nil {
		if !paramNameRE.MatchString(r.Field) || slices.Contains(secretFields, r.Field) {
			return t, fmt.Errorf("api_host_from_token.field: want a token-response member name that is not a credential")
		}
		if !slices.Contains(t.ResponseFields, r.Field) {
			return t, fmt.Errorf("api_host_from_token.field: list %s in response_fields too", r.Field)
		}
		if len(r.AllowedHosts) == 0 {
			return t, fmt.Errorf("api_host_from_token.allowed_hosts: list at least one host pattern")
		}
		for i, h := range r.AllowedHosts {
			if !validHostPattern(h) {
				return t, fmt.Errorf("api_host_from_token.allowed_hosts[%d]: want a lower-case DNS name or *. and one with two labels or more", i)
			}
		}
	} else if strings.Contains(t.APIBaseURL, APIHost) {
		return t, fmt.Errorf("api_base_url: %s needs api_host_from_token", APIHost)
	}
	for i, f := range t.ResponseFields {
		if !paramNameRE.MatchString(f) || slices.Contains(secretFields, f) || slices.Contains(t.ResponseFields[:i], f) {
			return t, fmt.Errorf("response_fields[%d]: want a token-response member name, not a credential, listed once", i)
		}
	}
	return t, nil
}

// checkURL checks an absolute https URL of the catalog, after filling its
// declared placeholders with a stand-in; allowQuery says whether a query
// may follow. No user info, no fragment.
func checkURL(raw string, declared map[string]bool, allowQuery bool) error {
	if raw == "" || len(raw) > maxTokenURL || strings.IndexFunc(raw, func(r rune) bool { return r <= 0x20 || r >= 0x7f }) >= 0 {
		return fmt.Errorf("want an https URL of printable ASCII")
	}
	filled := raw
	for n := range declared {
		filled = strings.ReplaceAll(filled, "{"+n+"}", "x0")
	}
	if strings.ContainsAny(filled, "{}") {
		return fmt.Errorf("malformed or undeclared placeholder")
	}
	u, err := url.Parse(filled)
	if err != nil || u.Scheme != "https" || u.Opaque != "" || u.Host == "" || !strings.HasPrefix(raw, "https://") {
		return fmt.Errorf("want an absolute https URL")
	}
	if u.User != nil || strings.Contains(filled, "@") {
		return fmt.Errorf("must not hold user info")
	}
	if u.Fragment != "" || strings.Contains(filled, "#") {
		return fmt.Errorf("must not hold a fragment")
	}
	if !allowQuery && (u.RawQuery != "" || u.ForceQuery) {
		return fmt.Errorf("must not hold a query")
	}
	if u.Port() != "" || !validHost(u.Hostname()) {
		return fmt.Errorf("host must be a lower-case DNS name without a port")
	}
	return nil
}

// CheckAuthorizeParams applies the rules for extra authorization-request
// parameters: at most 32; names of 1-64 and values of 0-256 printable ASCII
// bytes; no protocol parameter (ProtocolParams, in any case). Errors name
// the parameter, never its value.
func CheckAuthorizeParams(m map[string]string) error {
	if len(m) > maxAuthorizeCount {
		return fmt.Errorf("at most %d parameters", maxAuthorizeCount)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !printable(k, 64, false) || strings.Contains(k, " ") {
			return fmt.Errorf("name %s: want 1 to 64 printable ASCII characters without spaces", bounded(k))
		}
		if slices.Contains(ProtocolParams, strings.ToLower(k)) {
			return fmt.Errorf("%s is set by vaultd itself", k)
		}
		if v := m[k]; v != "" && !printable(v, maxAuthorizeParam, true) {
			return fmt.Errorf("%s: the value must be at most %d printable ASCII characters", k, maxAuthorizeParam)
		}
	}
	return nil
}

// printable: 1 to max bytes of printable ASCII (space allowed when spaces).
func printable(s string, max int, spaces bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == ' ' && !spaces {
			return false
		}
	}
	return true
}

// ValidScope: RFC 6749 scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func ValidScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
