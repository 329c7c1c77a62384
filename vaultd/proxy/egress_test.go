package proxy

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestTargetAllowed(t *testing.T) {
	base := mustURL(t, "https://api.example.com:8443/v2")
	cases := []struct{ path, query, want string }{
		{"contacts/1", "", "https://api.example.com:8443/v2/contacts/1"},
		{"/contacts", "", "https://api.example.com:8443/v2/contacts"},
		{"a/b%20c", "", "https://api.example.com:8443/v2/a/b%20c"},
		{"search", "q=a/b", "https://api.example.com:8443/v2/search?q=a/b"},
		{"search", "q=a%2Fb&x=%2e%2e", "https://api.example.com:8443/v2/search?q=a%2Fb&x=%2e%2e"},
		{"", "", "https://api.example.com:8443/v2/"},
		{"/", "", "https://api.example.com:8443/v2/"},
		{"contacts/", "", "https://api.example.com:8443/v2/contacts/"},
		{"v1/users:batchGet", "", "https://api.example.com:8443/v2/v1/users:batchGet"},
		{"users/a%40b.com", "", "https://api.example.com:8443/v2/users/a%40b.com"},
		{"files/report.v2.pdf", "", "https://api.example.com:8443/v2/files/report.v2.pdf"},
		{".well-known/x", "", "https://api.example.com:8443/v2/.well-known/x"},
		{"a/b;v=1", "", "https://api.example.com:8443/v2/a/b;v=1"},
		{"100%25", "", "https://api.example.com:8443/v2/100%25"},
		{"contacts/Jose N", "", "https://api.example.com:8443/v2/contacts/Jose%20N"},
		{"a~b_c-d.e!$&'()*+,=", "", "https://api.example.com:8443/v2/a~b_c-d.e!$&'()*+,="},
		{"x", "a=1&b=%E2%82%AC", "https://api.example.com:8443/v2/x?a=1&b=%E2%82%AC"},
	}
	for _, c := range cases {
		u, err := Target(base, c.path, c.query)
		if err != nil {
			t.Errorf("Target(%q, %q): %v", c.path, c.query, err)
			continue
		}
		if got := u.String(); got != c.want {
			t.Errorf("Target(%q, %q) = %s, want %s", c.path, c.query, got, c.want)
		}
	}

	// Bases without a path or with a trailing slash.
	for _, b := range []string{"https://api.example.com", "https://api.example.com/", "https://api.example.com/v2/"} {
		u, err := Target(mustURL(t, b), "contacts/1", "")
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		want := strings.TrimSuffix(b, "/") + "/contacts/1"
		if u.String() != want {
			t.Errorf("%s: got %s want %s", b, u, want)
		}
	}
}

func TestTargetDenied(t *testing.T) {
	base := mustURL(t, "https://api.example.com/v2")
	cases := []struct{ name, path, query string }{
		{"dotdot", "../admin", ""},
		{"dotdot middle", "a/../../admin", ""},
		{"dot", "a/./b", ""},
		{"trailing dotdot", "a/..", ""},
		{"encoded dotdot lower", "%2e%2e/admin", ""},
		{"encoded dotdot upper", "%2E%2E/admin", ""},
		{"mixed dot", "%2E./admin", ""},
		{"mixed dot 2", ".%2e/admin", ""},
		{"encoded dot", "a/%2e/b", ""},
		{"double encoded dot", "%252e%252e/admin", ""},
		{"triple encoded dot", "%25252e%25252e/admin", ""},
		{"double encoded slash", "a%252fb", ""},
		{"too many layers", "%2525252525252e", ""},
		{"unicode dots", "\uff0e\uff0e/admin", ""},
		{"encoded unicode dots", "%EF%BC%8E%EF%BC%8E/admin", ""},
		{"one dot leader", "\u2024\u2024/x", ""},
		{"triple dot", ".../x", ""},
		{"dots and space", "..%20/x", ""},
		{"dotdot params", "..;x=1/admin", ""},
		{"encoded dotdot params", "%2e%2e;/admin", ""},
		{"empty param segment", "a/;x/b", ""},
		{"encoded semicolon dotdot", "..%3bx/admin", ""},
		{"encoded slash", "a%2fb", ""},
		{"encoded slash upper", "a%2Fb", ""},
		{"encoded backslash", "a%5cb", ""},
		{"encoded backslash upper", "..%5C..%5Cadmin", ""},
		{"backslash", `a\b`, ""},
		{"backslash dotdot", `..\admin`, ""},
		{"fullwidth slash", "a\uff0fb", ""},
		{"encoded fullwidth slash", "a%EF%BC%8Fb", ""},
		{"at", "a@evil.com", ""},
		{"at userinfo", "@evil.com/x", ""},
		{"network path", "//evil.com/x", ""},
		{"empty segment", "a//b", ""},
		{"triple slash", "///evil.com", ""},
		{"http", "http://evil.com/", ""},
		{"https", "https://evil.com/", ""},
		{"https leading slash", "/https://evil.com/", ""},
		{"scheme only", "javascript:alert(1)", ""},
		{"scheme no slashes", "http:evil.com", ""},
		{"mixed case scheme", "HtTpS://evil.com", ""},
		{"file", "file:///etc/passwd", ""},
		{"control", "a\x01b", ""},
		{"newline", "a\nHost: evil", ""},
		{"crlf encoded", "a%0d%0aHost:%20evil", ""},
		{"nul", "a\x00b", ""},
		{"encoded nul", "a%00b", ""},
		{"encoded del", "a%7fb", ""},
		{"double encoded nul", "a%2500b", ""},
		{"tab", "a\tb", ""},
		{"invalid pct", "a%zzb", ""},
		{"short pct", "a%2", ""},
		{"trailing pct", "a%", ""},
		{"question in path", "a?b", ""},
		{"fragment in path", "a#b", ""},
		{"overlong path", strings.Repeat("a/", maxPathLen), ""},
		{"overlong query", "a", strings.Repeat("q", maxQueryLen+1)},
		{"query control", "a", "q=\x00"},
		{"query newline", "a", "q=1\r\nHost: evil"},
		{"query space", "a", "q=a b"},
		{"query invalid pct", "a", "q=%zz"},
		{"query trailing pct", "a", "q=%"},
		{"query fragment", "a", "q=1#frag"},
		{"query non-ascii", "a", "q=\xe2\x82\xac"},
		// Regression: U+2025 (two dot leader) and overlong UTF-8 for "."
		// passed; servers that normalise Unicode or decode leniently read
		// them as "..". A look-alike list is never complete, so no
		// non-ASCII byte passes in any decoding layer of the path.
		{"two dot leader", "\u2025/admin", ""},
		{"encoded two dot leader", "%E2%80%A5/admin", ""},
		{"encoded two dot leader lower", "a/%e2%80%a5/admin", ""},
		{"overlong dots", "%C0%AE%C0%AE/admin", ""},
		{"overlong dots lower", "%c0%ae%c0%ae/admin", ""},
		{"overlong dot and dot", "%C0%AE./admin", ""},
		{"overlong slash", "a%C0%AFb", ""},
		{"overlong backslash", "..%C1%9C..%C1%9Cadmin", ""},
		{"three byte overlong dot", "%E0%80%AE%E0%80%AE/x", ""},
		{"double encoded overlong dots", "%25C0%25AE%25C0%25AE/admin", ""},
		{"double encoded two dot leader", "%25E2%2580%25A5/admin", ""},
		{"invalid utf8", "a%FFb", ""},
		{"lone continuation byte", "a%80", ""},
		{"raw latin1 byte", "caf\xe9", ""},
		{"raw utf8", "contacts/José", ""},
		{"encoded utf8", "contacts/Jos%C3%A9", ""},
		{"halfwidth ideographic full stop", "\uff61\uff61/x", ""},
		{"raw overlong in execute path", "\xc0\xae\xc0\xae/admin", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := Target(base, c.path, c.query)
			if !errors.Is(err, ErrEgressDenied) {
				t.Fatalf("Target(%q, %q) = %v, %v; want ErrEgressDenied", c.path, c.query, u, err)
			}
			// The reason is short and never echoes the input.
			r := SafeReason(err)
			if r == "" || r == "invalid request" || (len(c.path) > 3 && strings.Contains(err.Error(), c.path)) {
				t.Fatalf("bad reason %q / error %q", r, err)
			}
		})
	}
}

func TestTargetInvalidBase(t *testing.T) {
	for _, b := range []string{"ftp://api.example.com", "https://user:pw@api.example.com", "https://api.example.com/v2?k=v",
		"https://api.example.com/v2#f", "api.example.com/v2", "/v2", "mailto:x@example.com"} {
		if _, err := Target(mustURL(t, b), "x", ""); !errors.Is(err, ErrInvalidBase) {
			t.Errorf("base %q: %v, want ErrInvalidBase", b, err)
		}
	}
	if _, err := Target(nil, "x", ""); !errors.Is(err, ErrInvalidBase) {
		t.Errorf("nil base: %v", err)
	}
}

// checkTargetInvariant is what the fuzzer asserts about every accepted
// target: same origin as base, under base's path, no dot segments, and
// stable when re-parsed from its string form.
func checkTargetInvariant(t testing.TB, base *url.URL, rawPath, rawQuery string, u *url.URL) {
	t.Helper()
	if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		t.Fatalf("origin changed: %q %q -> %s", rawPath, rawQuery, u)
	}
	prefix := strings.TrimSuffix(base.Path, "/") + "/"
	if !strings.HasPrefix(u.Path, prefix) || !strings.HasPrefix(u.EscapedPath(), strings.TrimSuffix(base.EscapedPath(), "/")+"/") {
		t.Fatalf("left base path: %q -> %s", rawPath, u)
	}
	if u.RawQuery != rawQuery {
		t.Fatalf("query changed: %q -> %q", rawQuery, u.RawQuery)
	}
	re, err := url.Parse(u.String())
	if err != nil {
		t.Fatalf("result does not re-parse: %v", err)
	}
	if re.Scheme != base.Scheme || re.Host != base.Host || re.EscapedPath() != u.EscapedPath() || re.RawQuery != u.RawQuery {
		t.Fatalf("re-parse differs: %s vs %s", re, u)
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			t.Fatalf("dot segment survived: %q -> %s", rawPath, u)
		}
	}
	// Even one more decoding layer must not climb out of base.
	if dec, err := url.PathUnescape(u.EscapedPath()); err == nil {
		if c := path.Clean(dec); !strings.HasPrefix(c+"/", prefix) {
			t.Fatalf("decoded path escapes: %q -> %q", rawPath, c)
		}
		if strings.Contains(dec, "\\") {
			t.Fatalf("decoded backslash: %q", rawPath)
		}
	}
	if strings.Contains(strings.ToLower(u.EscapedPath()), "%2f") || strings.Contains(strings.ToLower(u.EscapedPath()), "%5c") {
		t.Fatalf("encoded slash survived: %q", rawPath)
	}
	// No layer of decoding yields a non-ASCII byte (Unicode look-alikes,
	// overlong UTF-8).
	for p, i := u.EscapedPath(), 0; i <= maxDecodeRounds+1; i++ {
		for j := 0; j < len(p); j++ {
			if p[j] >= 0x80 {
				t.Fatalf("non-ASCII byte after %d decodings: %q -> %q", i, rawPath, p)
			}
		}
		next, err := url.PathUnescape(p)
		if err != nil || next == p {
			break
		}
		p = next
	}
}

func FuzzTarget(f *testing.F) {
	for _, s := range []struct{ p, q string }{
		{"contacts/1", ""}, {"/contacts", ""}, {"a/b%20c", ""}, {"search", "q=a/b"},
		{"../x", ""}, {"%2e%2e/x", ""}, {"%252e%252e/x", ""}, {"a%2fb", ""}, {"//evil.com", ""},
		{"http://evil.com", ""}, {"a@b", ""}, {"\uff0e\uff0e/x", ""}, {"..;/x", ""}, {"a%00", ""},
		{"x", "q=%zz"}, {"contacts/José", "a=1"}, {"", ""}, {"/", ""},
		{"\u2025/x", ""}, {"%E2%80%A5/x", ""}, {"%C0%AE%C0%AE/x", ""}, {"%25C0%25AE/x", ""}, {"a%FFb", ""},
	} {
		f.Add(s.p, s.q)
	}
	bases := []*url.URL{
		mustURL(f, "https://api.example.com/v2"),
		mustURL(f, "https://api.example.com:8443"),
		mustURL(f, "http://127.0.0.1:9/a/b/"),
	}
	f.Fuzz(func(t *testing.T, rawPath, rawQuery string) {
		for _, base := range bases {
			u, err := Target(base, rawPath, rawQuery)
			if err != nil {
				if !errors.Is(err, ErrEgressDenied) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				continue
			}
			checkTargetInvariant(t, base, rawPath, rawQuery, u)
		}
	})
}
