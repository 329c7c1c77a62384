package catalog

import (
	"fmt"
	"net/url"
	"strings"
)

// maxTokenURL bounds a URL taken from a token response.
const maxTokenURL = 2048

// MatchHost reports whether host (a lower-case DNS name, no port, no
// trailing dot) matches one of the patterns: an exact name, or "*.suffix"
// for one or more whole labels before ".suffix" (never suffix itself). A
// host or pattern that is not such a name never matches.
func MatchHost(patterns []string, host string) bool {
	if !validHost(host) {
		return false
	}
	for _, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if validHost(suffix) && len(host) > len(suffix)+1 && strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if validHost(p) && host == p {
			return true
		}
	}
	return false
}

// validHostPattern reports whether p is a pattern MatchHost can match with.
func validHostPattern(p string) bool {
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		return validHost(suffix) && strings.Contains(suffix, ".")
	}
	return validHost(p)
}

// validHost: a lower-case LDH DNS name of at most 253 bytes, no empty
// label (so no trailing dot), labels of 1-63 bytes not starting or ending
// with a hyphen. IP literals, ports, userinfo, upper case and non-ASCII
// (IDNA must arrive as xn-- labels) are all refused.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// A name whose last label is all digits reads as an IPv4 address to
	// some resolvers.
	last := h[strings.LastIndexByte(h, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// APIBaseFromToken builds an integration's API base from a token-response
// field value (rule.Field's, an https URL such as Salesforce's
// instance_url): https, no userinfo, no port other than 443, no path beyond
// "/", no query or fragment, and a host (ASCII, folded to lower case) that
// rule.AllowedHosts matches. apiBaseURL is the provider's api_base_url,
// which must start with "https://{api_host}"; the result is it with the
// host in place ("https://acme.my.salesforce.com/services/data"). Any other
// placeholder in apiBaseURL is left for Expand. Errors (ErrAPIHost) never
// echo the value.
func APIBaseFromToken(rule HostRule, apiBaseURL, value string) (string, error) {
	rest, ok := strings.CutPrefix(apiBaseURL, "https://"+APIHost)
	if !ok || rest != "" && rest[0] != '/' {
		return "", fmt.Errorf("%w: api_base_url does not start with https://%s", ErrAPIHost, APIHost)
	}
	host, err := hostFromURL(value)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %s", ErrAPIHost, rule.Field, err.Error())
	}
	if !MatchHost(rule.AllowedHosts, host) {
		return "", fmt.Errorf("%w: %s: host is not one of %s", ErrAPIHost, rule.Field, strings.Join(rule.AllowedHosts, ", "))
	}
	return "https://" + host + rest, nil
}

// hostFromURL returns the lower-case host of an https origin URL; its
// errors describe the problem, not the value.
func hostFromURL(value string) (string, error) {
	if value == "" || len(value) > maxTokenURL {
		return "", fmt.Errorf("not a URL of 1 to %d bytes", maxTokenURL)
	}
	for i := 0; i < len(value); i++ {
		// Non-ASCII (IDNA look-alikes) and whitespace or controls, which
		// url.Parse would partly tolerate, are refused outright; so are
		// the delimiters of userinfo, fragments and escapes.
		if c := value[i]; c <= 0x20 || c >= 0x7f || c == '@' || c == '#' || c == '\\' || c == '%' {
			return "", fmt.Errorf("not a plain https URL")
		}
	}
	u, err := url.Parse(value)
	if err != nil || u.Scheme != "https" || u.Opaque != "" || u.Host == "" {
		return "", fmt.Errorf("not an absolute https URL")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("has user info, a query or a fragment")
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("has a path")
	}
	host := u.Host
	if h, port, found := strings.Cut(u.Host, ":"); found {
		if port != "443" {
			return "", fmt.Errorf("names a port other than 443")
		}
		host = h
	}
	host = strings.ToLower(host)
	if !validHost(host) {
		return "", fmt.Errorf("host is not a DNS name")
	}
	return host, nil
}
