package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// TestUpstreamErrors pins the two outbound error codes: an API origin that
// refuses connections answers 502 upstream_unreachable, one that does not
// answer within [server] request_timeout answers 504 upstream_timeout, on
// both proxy and execute, each audited as a failed proxy.request.
func TestUpstreamErrors(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // bounded: released when the test ends
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	deadPort := freePort(t) // nothing listens there

	extra := ""
	for _, p := range []struct{ name, base string }{
		{"dead", "http://127.0.0.1:" + deadPort + "/api"},
		{"slow", slow.URL + "/api"},
	} {
		extra += fmt.Sprintf(`
[providers.%s]
token_url          = "http://127.0.0.1:%s/token"
api_base_url       = %q
client_id          = "x"
client_secret_file = %q
`, p.name, deadPort, p.base, "CLIENT_SECRET")
	}
	e := New(t, Options{RequestTimeout: "1s", NoStart: true})
	e.Opts.ExtraConfig = strings.ReplaceAll(extra, "CLIENT_SECRET", filepath.Join(e.Dir, "client-secret"))
	rewriteConfig(t, e)
	e.Start()
	e.CreateTenant("acme")
	app := e.Client(AppAcme)
	ctx := t.Context()
	for _, id := range []string{"dead", "slow"} {
		tok := e.Provider.IssueInitialToken([]string{"contacts.read"})
		if _, err := app.StoreToken(ctx, id, id, oauthtest.TokenResponseJSON(tok)); err != nil {
			t.Fatalf("store %s: %v", id, err)
		}
	}
	cases := []struct {
		id     string
		code   api.Code
		status int
	}{{"dead", api.CodeUpstreamUnreachable, 502}, {"slow", api.CodeUpstreamTimeout, 504}}
	for _, c := range cases {
		t.Run(c.id+"/proxy", func(t *testing.T) {
			_, err := app.Proxy(ctx, c.id, http.MethodGet, "contacts", nil, nil)
			var ae *client.APIError
			if !asAPIError(err, &ae) || ae.Status != c.status || ae.Code != c.code || ae.RequestID == "" {
				t.Fatalf("want %d %s, got %v", c.status, c.code, err)
			}
		})
		t.Run(c.id+"/execute", func(t *testing.T) {
			_, err := app.Execute(ctx, c.id, api.ExecuteRequest{Method: "GET", Path: "contacts"})
			var ae *client.APIError
			if !asAPIError(err, &ae) || ae.Status != c.status || ae.Code != c.code {
				t.Fatalf("want %d %s, got %v", c.status, c.code, err)
			}
		})
	}
	// Each failure is audited as a failed proxy.request with its status.
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(e.Client(Auditor).Audit(ctx, client.AuditQuery{Action: "proxy.request"}, pw))
	}()
	dec := json.NewDecoder(pr)
	seen := map[int]int{}
	for dec.More() {
		var ev struct {
			Outcome    string `json:"outcome"`
			HTTPStatus int    `json:"http_status"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.Outcome == "failure" {
			seen[ev.HTTPStatus]++
		}
	}
	if seen[502] != 2 || seen[504] != 2 {
		t.Fatalf("audited failures by status: %v", seen)
	}
}

func asAPIError(err error, out **client.APIError) bool {
	return errors.As(err, out)
}

func rewriteConfig(t *testing.T, e *Env) {
	t.Helper()
	must(t, os.WriteFile(e.ConfigPath, []byte(e.ConfigText()), 0o600))
}
