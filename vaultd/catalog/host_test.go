package catalog

import (
	"errors"
	"strings"
	"testing"
)

var sfHosts = []string{"*.my.salesforce.com", "*.salesforce.com"}

// hostileHosts: names that must never match the Salesforce patterns.
var hostileHosts = []string{
	"salesforce.com", "my.salesforce.com.evil.com", "salesforce.com.evil.com", "x.my.salesforce.com.evil",
	"evil.com#.salesforce.com", "evil.com/.salesforce.com", "evil.com?.salesforce.com", "user@acme.salesforce.com",
	"acme.salesforce.com.", "ACME.salesforce.com", "acme.salesforce.com:443", "acme..salesforce.com",
	".salesforce.com", "acme.salesforce.co", "acmesalesforce.com", "-acme.salesforce.com", "acme-.salesforce.com",
	"ａｃｍｅ.salesforce.com", "acme.salesforce.com\x00", "", "*.salesforce.com", "acme.xn--salesforce.com",
	"127.0.0.1", "[::1]",
}

func TestMatchHost(t *testing.T) {
	for _, h := range []string{"acme.my.salesforce.com", "acme.salesforce.com", "a.b.c.salesforce.com", "acme--dev.sandbox.my.salesforce.com", "xn--caf-dma.salesforce.com"} {
		if !MatchHost(sfHosts, h) {
			t.Errorf("%q does not match", h)
		}
	}
	for _, h := range hostileHosts {
		if MatchHost(sfHosts, h) {
			t.Errorf("%q matches", h)
		}
	}
	if !MatchHost([]string{"salesforce.com"}, "salesforce.com") || MatchHost([]string{"salesforce.com"}, "a.salesforce.com") {
		t.Error("exact patterns")
	}
	// Malformed patterns never match.
	for _, p := range []string{"*.", "*", "**.salesforce.com", "*.SALESFORCE.com", "salesforce.com.", "*salesforce.com"} {
		if MatchHost([]string{p}, "acme.salesforce.com") || MatchHost([]string{p}, "salesforce.com") {
			t.Errorf("pattern %q matched", p)
		}
	}
}

func TestAPIBaseFromToken(t *testing.T) {
	rule := HostRule{Field: "instance_url", AllowedHosts: sfHosts}
	const base = "https://{api_host}/services/data"
	for in, want := range map[string]string{
		"https://acme.my.salesforce.com":              "https://acme.my.salesforce.com/services/data",
		"https://acme.my.salesforce.com/":             "https://acme.my.salesforce.com/services/data",
		"https://ACME.My.Salesforce.com":              "https://acme.my.salesforce.com/services/data",
		"https://na1.salesforce.com:443":              "https://na1.salesforce.com/services/data",
		"HTTPS://acme.my.salesforce.com/":             "https://acme.my.salesforce.com/services/data",
		"https://acme--uat.sandbox.my.salesforce.com": "https://acme--uat.sandbox.my.salesforce.com/services/data",
	} {
		got, err := APIBaseFromToken(rule, base, in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	refused := []string{
		"", "acme.my.salesforce.com", "http://acme.my.salesforce.com", "https://evil.com#.salesforce.com",
		"https://evil.com?.salesforce.com", "https://evil.com/.salesforce.com", "https://salesforce.com.evil.com",
		"https://x.my.salesforce.com.evil", "https://acme.my.salesforce.com@evil.com", "https://evil.com@acme.my.salesforce.com",
		"https://user:pw@acme.my.salesforce.com", "https://acme.my.salesforce.com:8443", "https://acme.my.salesforce.com:",
		"https://acme.my.salesforce.com./", "https://acme.my.salesforce.com/services", "https://acme.my.salesforce.com?x=1",
		"https://acme.my.salesforce.com#x", "https://ａｃｍｅ.my.salesforce.com", "https://acme.my.salesforce.com%2eevil.com",
		"https://acme.my.salesforce.com\\@evil.com", "https://[::1]", "https://127.0.0.1", "https://salesforce.com",
		"//acme.my.salesforce.com", "https:acme.my.salesforce.com", "https://acme.my.salesforce.com\n",
		"javascript:alert(1)//acme.my.salesforce.com", "https://" + strings.Repeat("a.", 1100) + "salesforce.com",
	}
	for _, in := range refused {
		got, err := APIBaseFromToken(rule, base, in)
		if err == nil || !errors.Is(err, ErrAPIHost) {
			t.Errorf("%q accepted: %q", in, got)
			continue
		}
		if len(in) > 12 && strings.Contains(err.Error(), in) {
			t.Errorf("error echoes the value: %v", err)
		}
	}
	for _, b := range []string{"https://api.salesforce.com/services/data", "https://{api_host}x/y", "http://{api_host}/"} {
		if _, err := APIBaseFromToken(rule, b, "https://acme.my.salesforce.com"); err == nil {
			t.Errorf("api_base_url %q accepted", b)
		}
	}
}
