package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// apOddToken is an access token with the bytes ("/+=") whose spellings
// differ between encoders; the fake provider's own tokens are hex.
const apOddToken = "e2eAT/Zm9v+YmFy=c2Vj/cmV0+LXRva2Vu/7f3a=="

// apSpellings are the forms in which an upstream may echo tok, built with
// the standard library's encoders: none may reach the caller or the log.
func apSpellings(tok string) map[string]string {
	lower := func(s string) string {
		b := []byte(s)
		for i := 0; i+2 < len(b); i++ {
			if b[i] == '%' {
				copy(b[i+1:i+3], bytes.ToLower(b[i+1:i+3]))
				i += 2
			}
		}
		return string(b)
	}
	sp := map[string]string{
		"raw":          tok,
		"query":        url.QueryEscape(tok),
		"query lower":  lower(url.QueryEscape(tok)),
		"path":         url.PathEscape(tok),
		"path lower":   lower(url.PathEscape(tok)),
		"json slash":   strings.ReplaceAll(tok, "/", `\/`),
		"json u":       strings.NewReplacer("/", `\u002f`, "+", `\u002b`).Replace(tok),
		"json u upper": strings.NewReplacer("/", `\u002F`, "+", `\u002B`).Replace(tok),
		"json u eq":    strings.NewReplacer("/", `\u002f`, "+", `\u002b`, "=", `\u003d`).Replace(tok),
		"form":         strings.ReplaceAll(tok, "+", " "),
		"hex":          hex.EncodeToString([]byte(tok)),
		"hex upper":    strings.ToUpper(hex.EncodeToString([]byte(tok))),
	}
	for _, pre := range []string{"", "Bearer ", "user:"} {
		for name, enc := range map[string]*base64.Encoding{"std": base64.StdEncoding, "url": base64.URLEncoding,
			"rawstd": base64.RawStdEncoding, "rawurl": base64.RawURLEncoding} {
			sp["base64 "+name+" of "+pre+"token"] = enc.EncodeToString([]byte(pre + tok))
		}
	}
	return sp
}

// apLeak names a spelling of tok found in s ("" if none).
func apLeak(s, tok string) string {
	for name, v := range apSpellings(tok) {
		if strings.Contains(s, v) {
			return name
		}
	}
	return ""
}

// apProviderConfig is a [providers.NAME] table whose API is apiBase; its
// token endpoint is a closed port (the tests never refresh).
func apProviderConfig(t *testing.T, name, apiBase string) string {
	t.Helper()
	sec := filepath.Join(t.TempDir(), name+"-secret")
	must(t, os.WriteFile(sec, []byte(name+"-client-secret\n"), 0o600))
	return fmt.Sprintf(`
[providers.%s]
token_url          = "http://127.0.0.1:%s/token"
api_base_url       = %q
client_id          = %q
client_secret_file = %q
scopes             = ["read"]
`, name, freePort(t), apiBase, name+"-client", sec)
}

// apStore stores tok as integration id of acme under provider.
func apStore(t *testing.T, e *Env, id, provider, tok string) {
	t.Helper()
	body := oauthtest.TokenResponseJSON(oauth.Token{AccessToken: secret.NewString(tok), TokenType: "Bearer", ExpiresIn: 86400})
	if _, err := e.Client(AppAcme).StoreToken(t.Context(), id, provider, body); err != nil {
		t.Fatalf("store %s: %v", id, err)
	}
}

// Regression (finding: redaction covered 4 spellings): an upstream that
// echoes the token base64-encoded (alone, or inside the base64 of "Bearer
// <token>" or "user:<token>"), with lower-case percent escapes, \u002f JSON
// escapes, "+" as a space or in hex got it back to the caller in clear,
// through both the proxy and the execute routes. Two upstreams: the fake
// provider (its hex tokens) and a reflector holding a token with "/+=".
func TestAdversarialReflectedTokenSpellings(t *testing.T) {
	reflector := httptest.NewServer(oauthtest.ReflectHandler())
	t.Cleanup(reflector.Close)
	e := New(t, Options{ExtraConfig: apProviderConfig(t, "reflector", reflector.URL+"/api")})
	e.CreateTenant("acme")
	hexTok := e.StoreToken(AppAcme, "crm").AccessToken.Reveal()
	apStore(t, e, "odd", "reflector", apOddToken)
	hc := e.HTTP(AppAcme)

	for _, it := range []struct{ id, tok string }{{"crm", hexTok}, {"odd", apOddToken}} {
		for _, enc := range append([]string{""}, oauthtest.ReflectEncodings()...) {
			q := url.Values{"enc": {enc}, "split": {"5"}}
			r := obProxy(t, e, hc, it.id, http.MethodGet, "reflect-token?"+q.Encode(), nil, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("proxy %s enc=%q: %d %q", it.id, enc, r.Status, r.Body)
			}
			apCheckAnswer(t, "proxy "+it.id+" enc="+enc, it.tok, r)
			if !bytes.Contains(r.Body, []byte("[REDACTED]")) {
				t.Errorf("proxy %s enc=%q: nothing redacted in %q", it.id, enc, r.Body)
			}

			r = obExecute(t, e, hc, it.id, map[string]any{"method": "GET", "path": "reflect-token",
				"query": map[string]string{"enc": enc, "split": "7"}})
			var er struct {
				Status     int               `json:"status"`
				Headers    map[string]string `json:"headers"`
				Body       string            `json:"body"`
				BodyBase64 string            `json:"body_base64"`
			}
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &er) != nil || er.Status != http.StatusOK {
				t.Fatalf("execute %s enc=%q: %d %q", it.id, enc, r.Status, r.Body)
			}
			apCheckAnswer(t, "execute "+it.id+" enc="+enc, it.tok, r)
			// What the caller decodes, too: the JSON escapes of vaultd's
			// own answer must not hide a spelling from the raw check.
			decoded, err := base64.StdEncoding.DecodeString(er.BodyBase64)
			must(t, err)
			all := er.Body + string(decoded)
			for k, v := range er.Headers {
				all += "\n" + k + ": " + v
			}
			if name := apLeak(all, it.tok); name != "" || !strings.Contains(er.Body, "[REDACTED]") {
				t.Errorf("execute %s enc=%q: spelling %q of the token in the decoded answer %q", it.id, enc, name, all)
			}
		}
	}
}

// apCheckAnswer fails if a spelling of tok is anywhere in r's headers or
// body as received.
func apCheckAnswer(t *testing.T, what, tok string, r obResult) {
	t.Helper()
	var sb strings.Builder
	for k, vv := range r.Header {
		fmt.Fprintf(&sb, "%s: %s\n", k, strings.Join(vv, ", "))
	}
	sb.Write(r.Body)
	if name := apLeak(sb.String(), tok); name != "" {
		t.Errorf("%s: spelling %q of the token reached the caller:\n%s", what, name, sb.String())
	}
}

// apRawUpstream is a TCP listener on 127.0.0.1 that reads each request's
// head and answers reply(path, Authorization value): not HTTP.
func apRawUpstream(t *testing.T, reply func(path, auth string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for { // ends when the listener is closed
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a safety bound only
				var head []byte
				buf := make([]byte, 4096)
				for len(head) < 1<<16 && !bytes.Contains(head, []byte("\r\n\r\n")) {
					n, err := c.Read(buf)
					head = append(head, buf[:n]...)
					if err != nil {
						return
					}
				}
				path, auth := "", ""
				for i, line := range strings.Split(string(head), "\r\n") {
					if f := strings.Fields(line); i == 0 && len(f) == 3 {
						path = f[1]
					}
					if v, ok := strings.CutPrefix(line, "Authorization: "); ok {
						auth = v
					}
				}
				_, _ = io.WriteString(c, reply(path, auth))
			}()
		}
	}()
	return ln.Addr().String()
}

// Regression (finding: access token written to vaultd's log): the proxy
// classified transport errors by their text ("tls:", "x509:") and logged
// the text of the "tls" class in full; an upstream answering bytes like
// "tls:" + the Authorization header it received put the token into the log.
func TestAdversarialTLSLookalikeReplyNotLogged(t *testing.T) {
	nospace := func(a string) string { return strings.ReplaceAll(a, " ", "") }
	replies := map[string]func(auth string) string{
		"/api/tls":          func(a string) string { return "tls:" + a + "\r\n\r\n" },
		"/api/tls-nospace":  func(a string) string { return "tls:" + nospace(a) + "\r\n\r\n" },
		"/api/x509-nospace": func(a string) string { return "x509:" + nospace(a) + "\n" },
		"/api/header":       func(a string) string { return "HTTP/1.1 200 OK\r\n tls:" + a + "\r\n\r\n" },
		"/api/base64":       func(a string) string { return "tls:" + base64.StdEncoding.EncodeToString([]byte(a)) + "\r\n\r\n" },
	}
	addr := apRawUpstream(t, func(path, auth string) string {
		if f, ok := replies[path]; ok {
			return f(auth)
		}
		return "tls: unknown path\r\n\r\n"
	})
	e := New(t, Options{ExtraConfig: apProviderConfig(t, "rawtcp", "http://"+addr+"/api")})
	e.CreateTenant("acme")
	apStore(t, e, "raw", "rawtcp", apOddToken)
	hc := e.HTTP(AppAcme)
	for path := range replies {
		rel := strings.TrimPrefix(path, "/api/")
		if r := obProxy(t, e, hc, "raw", http.MethodGet, rel, nil, nil); r.Status != http.StatusBadGateway || r.Code() != "upstream_unreachable" {
			t.Errorf("proxy %s: %d %s", rel, r.Status, r.Body)
		} else {
			apCheckAnswer(t, "proxy "+rel, apOddToken, r)
		}
		if r := obExecute(t, e, hc, "raw", map[string]any{"method": "GET", "path": rel}); r.Status != http.StatusBadGateway || r.Code() != "upstream_unreachable" {
			t.Errorf("execute %s: %d %s", rel, r.Status, r.Body)
		} else {
			apCheckAnswer(t, "execute "+rel, apOddToken, r)
		}
	}
	// The last failure's log line may be written just after its answer:
	// wait for it (bounded; nothing about timing is asserted).
	logs := e.Logs()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs, "upstream call failed") < 2*len(replies) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		logs = e.Logs()
	}
	if n := strings.Count(logs, "upstream call failed"); n < 2*len(replies) {
		t.Fatalf("%d upstream failures logged, want %d:\n%s", n, 2*len(replies), logs)
	}
	if name := apLeak(logs, apOddToken); name != "" {
		t.Fatalf("spelling %q of the token in vaultd's log:\n%s", name, logs)
	}
	if strings.Contains(logs, `"kind":"tls"`) {
		t.Errorf("a reply that merely says tls: was classed as a TLS failure:\n%s", logs)
	}
}

// Regression (finding: egress normalisation accepted U+2025 and overlong
// UTF-8): paths whose segments decode to non-ASCII bytes, look-alike dots
// or overlong "." and "/", are refused on both routes and reach no
// upstream.
func TestAdversarialEgressNonASCII(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	before := len(e.Provider.APIRequests())
	for _, p := range []string{
		"%E2%80%A5/token", "%E2%80%A5%E2%80%A5/token", "contacts/%e2%80%a5/token",
		"%C0%AE%C0%AE/token", "%c0%ae%c0%ae/token", "a/%C0%AE%C0%AE/%C0%AE%C0%AE/token",
		"%E0%80%AE%E0%80%AE/token", "%25C0%25AE%25C0%25AE/token", "a%C0%AFtoken", "a%FFb", "contacts/Jos%C3%A9",
	} {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			r := obProxy(t, e, hc, "crm", m, p, nil, strings.NewReader("x"))
			if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
				t.Errorf("proxy %s %q: %d %s", m, p, r.Status, r.Body)
			}
		}
	}
	for _, p := range []string{
		"\u2025/token", "\u2025\u2025/token", "a/\u2025/token", "%C0%AE%C0%AE/token", "%E2%80%A5/token",
		"%25C0%25AE/token", "contacts/Jos\u00e9", "\uff0e\uff0e/token",
	} {
		r := obExecute(t, e, hc, "crm", map[string]any{"method": "GET", "path": p})
		if r.Status != http.StatusForbidden || r.Code() != "egress_denied" {
			t.Errorf("execute %q: %d %s", p, r.Status, r.Body)
		}
	}
	if reqs := e.Provider.APIRequests()[before:]; len(reqs) != 0 {
		t.Errorf("the provider API saw %d requests from refused paths: %+v", len(reqs), reqs)
	}
	// Not over-broad: an ASCII path, and non-ASCII data in the query, pass.
	if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/Jose?name=Jos%C3%A9", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("ordinary path: %d %s", r.Status, r.Body)
	}
}
