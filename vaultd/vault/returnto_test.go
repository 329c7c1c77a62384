package vault

import (
	"net/url"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

func mustURLs(t testing.TB, raws ...string) []*url.URL {
	t.Helper()
	out := make([]*url.URL, 0, len(raws))
	for _, r := range raws {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// TestAllowedReturnTo: return_to is compared after parsing, at segment
// boundaries, and anything a browser would rewrite is refused (no open
// redirect through prefix tricks).
func TestAllowedReturnTo(t *testing.T) {
	t.Parallel()
	prefixes := mustURLs(t, "https://app.example.com/connect/", "https://admin.example.com", "http://127.0.0.1:8080/cb")
	cases := []struct {
		raw  string
		want bool
	}{
		{"https://app.example.com/connect/done", true},
		{"https://app.example.com/connect/", true},
		{"https://app.example.com/connect/done?x=1", true},
		{"https://APP.example.com:443/connect/done", true},
		{"https://admin.example.com/", true},
		{"https://admin.example.com/anything/deep", true},
		{"http://127.0.0.1:8080/cb", true},
		{"http://127.0.0.1:8080/cb/x", true},
		{"http://127.0.0.1:8080/cbx", false}, // not a segment boundary
		{"https://app.example.com/connectx", false},
		{"https://app.example.com/connect", false}, // the prefix's path is /connect/
		{"https://app.example.com/other", false},
		{"https://app.example.com/connect/../admin", false},
		{"https://app.example.com/connect/%2e%2e/admin", false},
		{"https://app.example.com/connect/..%2fadmin", false},
		{"https://app.example.com/connect/x%2F..", false},
		{"https://app.example.com/connect\\..\\admin", false},
		{"https://app.example.com/connect/./x", false},
		{"https://app.example.com.evil.com/connect/x", false},
		{"https://evil.com/https://app.example.com/connect/", false},
		{"https://app.example.com@evil.com/connect/x", false},
		{"https://user@app.example.com/connect/x", false},
		{"https://app.example.com:444/connect/x", false},
		{"http://app.example.com/connect/x", false}, // scheme differs
		{"//app.example.com/connect/x", false},
		{"/connect/x", false},
		{"javascript:alert(1)//app.example.com/connect/", false},
		{"https://app.example.com/connect/x#frag", false},
		{"https://app.example.com/connect/x\n", false},
		{"", false},
		{"https://app.example.com/connect/" + strings.Repeat("a", 3000), false},
	}
	for _, c := range cases {
		got, ok := allowedReturnTo(c.raw, prefixes)
		if ok != c.want {
			t.Errorf("allowedReturnTo(%q) = %v; want %v", c.raw, ok, c.want)
		}
		if ok && got == "" {
			t.Errorf("allowedReturnTo(%q) allowed an empty URL", c.raw)
		}
	}
}

// FuzzAllowedReturnTo: whatever is allowed stays at an allowed origin once
// parsed again, with a path inside the prefix.
func FuzzAllowedReturnTo(f *testing.F) {
	for _, s := range []string{"https://app.example.com/connect/done", "https://app.example.com/connect/../x",
		"https://app.example.com%2F@evil.com/", "https://app.example.com/connect/%2e%2e/", "https://[::1]:443/connect/"} {
		f.Add(s)
	}
	prefixes := mustURLs(f, "https://app.example.com/connect/")
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := allowedReturnTo(raw, prefixes)
		if !ok {
			return
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("allowed %q does not parse again: %v", got, err)
		}
		if u.Scheme != "https" || !strings.EqualFold(u.Hostname(), "app.example.com") || u.User != nil {
			t.Fatalf("allowed %q leaves the origin", got)
		}
		if !strings.HasPrefix(u.Path, "/connect/") || strings.Contains(u.Path+"/", "/../") || strings.Contains(u.Path+"/", "/./") {
			t.Fatalf("allowed %q leaves the prefix path", got)
		}
	})
}

func TestReturnLocationCarriesNoSecrets(t *testing.T) {
	t.Parallel()
	cs := storage.ConnectSession{ID: "cs-abc", ReturnTo: "https://app.example.com/done?keep=1&status=forged&error=forged"}
	got := returnLocation(cs, storage.ConnectCompleted, "")
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("connect_session") != "cs-abc" || q.Get("status") != "completed" || q.Has("error") || q.Get("keep") != "1" {
		t.Fatalf("completed location %q", got)
	}
	if len(q) != 3 {
		t.Fatalf("unexpected parameters in %q", got)
	}
	got = returnLocation(cs, storage.ConnectFailed, "access_denied")
	u, _ = url.Parse(got)
	if q := u.Query(); q.Get("status") != "failed" || q.Get("error") != "access_denied" {
		t.Fatalf("failed location %q", got)
	}
}

func TestOAuthErrorCode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"access_denied": "access_denied", "invalid_grant": "invalid_grant", "": "server_error",
		"<script>": "server_error", "a b": "server_error", strings.Repeat("x", 65): "server_error",
	} {
		if got := oauthErrorCode(in); got != want {
			t.Errorf("oauthErrorCode(%q) = %q; want %q", in, got, want)
		}
	}
}
