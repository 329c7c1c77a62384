package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
)

// fakeTokens hands out "old" until renewed, then "new"; renew says what
// Renew answers.
type fakeTokens struct {
	mu       sync.Mutex
	renewals []string // the rejected tokens Renew was given
	renew    func() (ok bool, err error)
	tokenErr error
}

func (f *fakeTokens) Token(context.Context) (secret.String, error) {
	if f.tokenErr != nil {
		return secret.String{}, f.tokenErr
	}
	return secret.NewString(testToken + "-old"), nil
}

func (f *fakeTokens) Renew(_ context.Context, rejected secret.String) (secret.String, bool, error) {
	f.mu.Lock()
	f.renewals = append(f.renewals, rejected.Reveal())
	f.mu.Unlock()
	ok, err := true, error(nil)
	if f.renew != nil {
		ok, err = f.renew()
	}
	if !ok || err != nil {
		return secret.String{}, false, err
	}
	return secret.NewString(testToken + "-new"), true, nil
}

// upstream401 answers 401 unless the bearer is the renewed token, and
// records each request's bearer and body.
type upstream401 struct {
	mu   sync.Mutex
	seen []string
}

func (u *upstream401) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	u.mu.Lock()
	u.seen = append(u.seen, strings.TrimPrefix(auth, "Bearer "+testToken)+" "+string(b))
	u.mu.Unlock()
	if auth != "Bearer "+testToken+"-new" {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "expired")
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func TestCallForcedRefresh(t *testing.T) {
	up := &upstream401{}
	e := newEnv(t, up, false, ForwarderOptions{})
	ctx := t.Context()
	replay := func(body string) func() io.Reader {
		return func() io.Reader { return strings.NewReader(body) }
	}
	for _, c := range []struct {
		name       string
		method     string
		replay     bool
		renew      func() (bool, error)
		wantStatus int
		wantErr    bool
		wantRenew  int
		wantSeen   string
	}{
		{name: "renewed and replayed", method: "PUT", replay: true, wantStatus: 200, wantRenew: 1, wantSeen: "-old body|-new body"},
		{name: "throttled: the 401 as it came", method: "GET", replay: true, renew: func() (bool, error) { return false, nil }, wantStatus: 401, wantRenew: 1, wantSeen: "-old body"},
		{name: "refresh failed", method: "GET", replay: true, renew: func() (bool, error) { return false, errors.New("dead grant") }, wantErr: true, wantRenew: 1, wantSeen: "-old body"},
		{name: "streamed body: no retry", method: "PUT", replay: false, wantStatus: 401, wantSeen: "-old body"},
		{name: "POST is not replayed", method: "POST", replay: true, wantStatus: 401, wantSeen: "-old body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up.mu.Lock()
			up.seen = nil
			up.mu.Unlock()
			toks := &fakeTokens{renew: c.renew}
			call := Call{Method: c.method, URL: e.target(t, "x", ""), Base: e.base, Body: strings.NewReader("body")}
			if c.replay {
				call.Replay = replay("body")
			}
			resp, err := e.fwd.Call(ctx, call, toks)
			if c.wantErr != (err != nil) {
				t.Fatalf("err %v", err)
			}
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.wantStatus {
					t.Fatalf("status %d %q, want %d", resp.StatusCode, b, c.wantStatus)
				}
			}
			if len(toks.renewals) != c.wantRenew || (c.wantRenew > 0 && toks.renewals[0] != testToken+"-old") {
				t.Fatalf("renewals %q", toks.renewals)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if got := strings.Join(up.seen, "|"); got != c.wantSeen {
				t.Fatalf("upstream saw %q, want %q", got, c.wantSeen)
			}
		})
	}
	if _, err := e.fwd.Call(ctx, Call{Method: "GET", URL: e.target(t, "x", ""), Base: e.base}, &fakeTokens{tokenErr: io.ErrClosedPipe}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("token error: %v", err)
	}
}

func TestCallRedirects(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(http.StatusFound)
	}), false, ForwarderOptions{})
	for to, wantErr := range map[string]bool{
		"/v2/elsewhere":                       false,
		"other":                               false,
		"https://" + e.base.Host + "/v2":      false,
		"/v3/x":                               true,
		"/v2x":                                true,
		"https://evil.example/v2/x":           true,
		"http://" + e.base.Host + "/v2/x":     true,
		"https://u:p@" + e.base.Host + "/v2/": true,
	} {
		resp, err := e.fwd.Call(t.Context(), Call{Method: "GET", URL: e.target(t, "a/b", "to="+url.QueryEscape(to)), Base: e.base}, &fakeTokens{})
		if wantErr {
			if !errors.Is(err, ErrRedirectEgress) {
				t.Errorf("%s: %v, want ErrRedirectEgress", to, err)
			}
			continue
		}
		if err != nil || resp.StatusCode != http.StatusFound {
			t.Errorf("%s: %v", to, err)
			continue
		}
		resp.Body.Close()
	}
}

func TestNeverForwarded(t *testing.T) {
	for m, want := range map[string]bool{"TRACE": true, "trace": true, "Connect": true, "GET": false, "PATCH": false, "TRACEX": false} {
		if NeverForwarded(m) != want {
			t.Errorf("%s: %t", m, !want)
		}
	}
}

// failAfter yields data, then fails.
type failAfter struct{ data []byte }

func (f *failAfter) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestRelay(t *testing.T) {
	resp := &http.Response{StatusCode: 201, Header: http.Header{
		"X-Request-Id": {"up-1"}, "X-Vaultd-Error": {"forbidden"}, "Content-Type": {"text/plain"},
	}, Body: io.NopCloser(strings.NewReader("hello"))}
	rec := httptest.NewRecorder()
	if err := Relay(rec, resp); err != nil {
		t.Fatal(err)
	}
	h := rec.Header()
	if rec.Code != 201 || rec.Body.String() != "hello" || h.Get("X-Upstream-Request-Id") != "up-1" ||
		h.Get("X-Request-Id") != "" || h.Get("X-Vaultd-Error") != "" || h.Get("Content-Type") != "text/plain" {
		t.Fatalf("%d %q %v", rec.Code, rec.Body.String(), h)
	}
	rec = httptest.NewRecorder()
	if err := Relay(rec, &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(&failAfter{[]byte("part")})}); err == nil || rec.Body.String() != "part" {
		t.Fatalf("broken upstream body: %v %q", err, rec.Body.String())
	}
}

func TestBudgetReadAnswer(t *testing.T) {
	b := NewBudget(128 << 10)
	data, held, err := b.ReadAnswer(bytes.NewReader(bytes.Repeat([]byte("a"), 100<<10)), 1<<20)
	if err != nil || len(data) != 100<<10 || held < int64(len(data)) {
		t.Fatalf("%d bytes, held %d, %v", len(data), held, err)
	}
	// The first answer still holds its bytes: a second one does not fit.
	if _, held2, err := b.ReadAnswer(bytes.NewReader(bytes.Repeat([]byte("b"), 100<<10)), 1<<20); !errors.Is(err, ErrBufferBudget) {
		t.Fatalf("over budget: %v", err)
	} else {
		b.Release(held2)
	}
	b.Release(held)
	// Released: it fits again, and an answer over the limit is cut at limit+1.
	data, held, err = b.ReadAnswer(bytes.NewReader(bytes.Repeat([]byte("c"), 100<<10)), 10)
	if err != nil || len(data) != 11 {
		t.Fatalf("%d bytes, %v", len(data), err)
	}
	b.Release(held)
	if b.used.Load() != 0 {
		t.Fatalf("budget leaks %d bytes", b.used.Load())
	}
	if ExecuteBufferBudget(1<<20) != 64<<20 || ExecuteBufferBudget(100<<20) != 400<<20 {
		t.Fatal("ExecuteBufferBudget")
	}
}
