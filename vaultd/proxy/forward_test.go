package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
)

// testToken contains "/" and "+" so its percent- and JSON-escaped forms
// differ from the raw one.
const testToken = "at-Zm9vYmFy/+.c2VjcmV0LXRva2Vu-7f3a"

// syncBuf is a log sink safe for the transport's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type env struct {
	srv  *httptest.Server
	fwd  *Forwarder
	logs *syncBuf
	base *url.URL
}

// newEnv starts a TLS upstream (HTTP/2 unless h1) on 127.0.0.1 and a
// Forwarder trusting it. The token must never reach the logs.
func newEnv(t *testing.T, h http.Handler, h1 bool, opts ForwarderOptions) *env {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = !h1
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	if opts.TLSConfig == nil {
		opts.TLSConfig = &tls.Config{RootCAs: pool}
	}
	logs := &syncBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fwd := NewForwarder(opts)
	t.Cleanup(fwd.Close)
	t.Cleanup(func() {
		if strings.Contains(logs.String(), testToken) {
			t.Error("token in logs")
		}
	})
	base, err := url.Parse(srv.URL + "/v2")
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, fwd: fwd, logs: logs, base: base}
}

func (e *env) target(t *testing.T, p, q string) *url.URL {
	t.Helper()
	u, err := Target(e.base, p, q)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func tok() secret.String { return secret.NewString(testToken) }

// noToken fails if any form of the token appears in s.
func noToken(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range tokenVariants(testToken) {
		if strings.Contains(s, string(v)) {
			t.Errorf("token leaked in %s: %q", what, s)
		}
	}
}

func TestForwardHeadersAndToken(t *testing.T) {
	type seen struct {
		h     http.Header
		proto int
		uri   string
		body  string
	}
	got := make(chan seen, 1)
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), r.ProtoMajor, r.RequestURI, string(b)}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "upstream=1")
		w.Header().Set("Alt-Svc", `h3=":1"`)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}), false, ForwarderOptions{})

	h := http.Header{}
	h.Set("Authorization", "Bearer caller-credential")
	h.Set("Cookie", "vaultd-session=1")
	h.Set("X-Tenant-Context", "eyJ.jwt.sig")
	h.Set("Proxy-Authorization", "Basic eA==")
	h.Set("Connection", "X-Hop")
	h.Set("X-Hop", "1")
	h.Set("Keep-Alive", "timeout=1")
	h.Set("Forwarded", "for=10.0.0.1")
	h.Set("X-Forwarded-For", "10.0.0.1")
	h.Set("Accept-Encoding", "br")
	h.Set("Range", "bytes=0-1")
	h.Set("Host", "evil.example")
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Tag", "t1")
	body := `{"name":"x"}`
	resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "post", URL: e.target(t, "contacts/1", "a=b%2Fc"),
		Header: h, Body: strings.NewReader(body)}, tok())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil || string(rb) != `{"ok":true}` {
		t.Fatalf("body %q %v", rb, err)
	}
	s := <-got
	if s.proto != 2 {
		t.Errorf("upstream saw HTTP/%d, want 2", s.proto)
	}
	if s.uri != "/v2/contacts/1?a=b%2Fc" || s.body != body {
		t.Errorf("upstream saw %q %q", s.uri, s.body)
	}
	if a := s.h.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+testToken {
		t.Errorf("Authorization upstream = %q", a)
	}
	for _, k := range []string{"Cookie", "X-Tenant-Context", "Proxy-Authorization", "X-Hop", "Keep-Alive", "Forwarded", "X-Forwarded-For", "Range"} {
		if v := s.h.Values(k); len(v) > 0 {
			t.Errorf("%s reached upstream: %q", k, v)
		}
	}
	if ae := s.h.Get("Accept-Encoding"); strings.Contains(ae, "br") {
		t.Errorf("caller Accept-Encoding reached upstream: %q", ae)
	}
	if s.h.Get("Content-Type") != "application/json" || s.h.Get("X-Request-Tag") != "t1" || s.h.Get("User-Agent") != "vaultd" {
		t.Errorf("end-to-end headers lost: %v", s.h)
	}
	if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Alt-Svc") != "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("response headers: %v", resp.Header)
	}
	if resp.Request == nil || resp.Request.Header.Get("Authorization") != "" {
		t.Error("resp.Request still carries the token")
	}
	if resp.ContentLength != -1 || resp.Header.Get("Content-Length") != "" {
		t.Errorf("content length kept: %d %q", resp.ContentLength, resp.Header.Get("Content-Length"))
	}
}

func TestForwardRedirectNotFollowed(t *testing.T) {
	var hits atomic.Int64
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	t.Cleanup(other.Close)
	loc := other.URL + "/steal?x=1"
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, loc, http.StatusFound)
	}), false, ForwarderOptions{})
	for _, m := range []string{"GET", "POST"} {
		resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: m, URL: e.target(t, "x", "")}, tok())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != loc {
			t.Fatalf("%s: got %d %q", m, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("redirect target was hit %d times", n)
	}
}

func TestForwardRedactsReflectedToken(t *testing.T) {
	sawGzip := make(chan bool, 1)
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		w.Header().Set("X-Echo", auth)
		w.Header().Set("Location", "/v2/next?token="+url.QueryEscape(strings.TrimPrefix(auth, "Bearer ")))
		w.Header().Set("Set-Cookie", "t="+auth)
		w.Header().Set("X-Leak-"+strings.NewReplacer("/", "", "+", "").Replace(testToken), "1")
		w.Header().Set("Trailer", "X-Trail")
		var out io.Writer = w
		if r.URL.Path == "/v2/gz" {
			gz := strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
			sawGzip <- gz
			if gz {
				w.Header().Set("Content-Encoding", "gzip")
				zw := gzip.NewWriter(w)
				defer zw.Close()
				out = zw
			}
		}
		// The token split across flushes, then JSON-escaped, then
		// percent-encoded.
		half := len(auth) / 2
		_, _ = io.WriteString(out, `{"echo":"`+auth[:half])
		http.NewResponseController(w).Flush()
		_, _ = io.WriteString(out, auth[half:]+`","json":"`+strings.ReplaceAll(testToken, "/", `\/`)+`","q":"`+url.QueryEscape(testToken)+`"}`)
		w.Header().Set("X-Trail", auth)
	}), false, ForwarderOptions{})

	for _, p := range []string{"echo", "gz"} {
		resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, p, ""),
			Header: http.Header{"Accept-Encoding": {"gzip"}}}, tok())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(iotestOneByte(resp.Body))
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		noToken(t, p+" body", string(b))
		want := `{"echo":"Bearer [REDACTED]","json":"[REDACTED]","q":"[REDACTED]"}`
		if string(b) != want {
			t.Errorf("%s body = %q, want %q", p, b, want)
		}
		for k, vv := range resp.Header {
			noToken(t, p+" header "+k, k+strings.Join(vv, ","))
		}
		if resp.Header.Get("X-Echo") != "Bearer [REDACTED]" || resp.Header.Get("Location") != "/v2/next?token=[REDACTED]" {
			t.Errorf("%s headers: %v", p, resp.Header)
		}
		if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: Set-Cookie/Content-Encoding passed: %v", p, resp.Header)
		}
		if resp.Trailer.Get("X-Trail") != "Bearer [REDACTED]" {
			t.Errorf("%s trailer = %v", p, resp.Trailer)
		}
	}
	if !<-sawGzip {
		t.Error("the transport did not ask for gzip (redaction of compressed bodies untested)")
	}
}

func iotestOneByte(r io.Reader) io.Reader { return &oneByte{r} }

type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestForwardUnreadableEncodingRefused(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		_, _ = w.Write([]byte{0x1b, 0x02, 0x00, 0x00})
	}), false, ForwarderOptions{})
	_, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, "x", "")}, tok())
	if !errors.Is(err, ErrUpstreamResponse) || !errors.Is(err, ErrUpstreamUnreachable) {
		t.Fatalf("err = %v", err)
	}
	// HEAD has no body to check: passes, and keeps its Content-Length.
	e2 := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		w.Header().Set("Content-Length", "42")
	}), false, ForwarderOptions{})
	resp, err := e2.fwd.Do(t.Context(), OutboundRequest{Method: "HEAD", URL: e2.target(t, "x", "")}, tok())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Length") != "42" {
		t.Errorf("HEAD Content-Length = %q", resp.Header.Get("Content-Length"))
	}
}

// Streaming both ways, proven with channels: the upstream sees the first
// request chunk before the caller has written the second, and the caller
// reads the first response chunk before the upstream writes the second.
func TestForwardStreamsBothWays(t *testing.T) {
	for _, h1 := range []bool{false, true} {
		name := "h2"
		if h1 {
			name = "h1"
		}
		t.Run(name, func(t *testing.T) {
			gotFirst := make(chan struct{})
			releaseSecond := make(chan struct{})
			upstreamBody := make(chan string, 1)
			e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				first := make([]byte, len("chunk1\n"))
				if _, err := io.ReadFull(r.Body, first); err != nil || string(first) != "chunk1\n" {
					upstreamBody <- "bad first chunk"
					close(gotFirst)
					return
				}
				close(gotFirst)
				rest, _ := io.ReadAll(r.Body)
				upstreamBody <- string(first) + string(rest)
				_, _ = w.Write(bytes.Repeat([]byte("A"), 2000))
				http.NewResponseController(w).Flush()
				<-releaseSecond
				_, _ = io.WriteString(w, "B")
			}), h1, ForwarderOptions{})
			t.Cleanup(func() {
				select {
				case <-releaseSecond:
				default:
					close(releaseSecond)
				}
			})

			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte("chunk1\n"))
				<-gotFirst
				_, _ = pw.Write([]byte("chunk2\n"))
				pw.Close()
			}()
			resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "PUT", URL: e.target(t, "upload", ""),
				Body: pr, ContentLength: -1}, tok())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if b := <-upstreamBody; b != "chunk1\nchunk2\n" {
				t.Fatalf("upstream got %q", b)
			}
			first := make([]byte, 1000)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatal(err)
			}
			close(releaseSecond)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if all := string(first) + string(rest); all != strings.Repeat("A", 2000)+"B" {
				t.Fatalf("got %d bytes", len(all))
			}
		})
	}
}

func TestForwardTimeouts(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/slow-body" {
			_, _ = io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
		}
		<-release
	}), false, ForwarderOptions{ResponseHeaderTimeout: 20 * time.Millisecond, Timeout: 300 * time.Millisecond})
	t.Cleanup(func() { close(release) }) // runs before srv.Close (LIFO)

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUpstreamTimeout) {
			t.Fatalf("%s: err = %v, want ErrUpstreamTimeout", what, err)
		}
		var ue *UpstreamError
		if !errors.As(err, &ue) || ue.Reason != "timeout" {
			t.Fatalf("%s: not an UpstreamError: %v", what, err)
		}
		noToken(t, what+" error", err.Error())
	}
	_, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, "slow", "")}, tok())
	check("response header timeout", err)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	e2 := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }), false, ForwarderOptions{})
	_, err = e2.fwd.Do(ctx, OutboundRequest{Method: "GET", URL: e2.target(t, "slow", "")}, tok())
	check("context deadline", err)

	// The whole-exchange timeout hits while the body streams: the read
	// error is mapped too (or, on a slow machine, Do itself times out).
	resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, "slow-body", "")}, tok())
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	check("body timeout", err)
}

func TestForwardUnreachable(t *testing.T) {
	check := func(what string, err error, reason string) {
		t.Helper()
		var ue *UpstreamError
		if !errors.Is(err, ErrUpstreamUnreachable) || errors.Is(err, ErrUpstreamTimeout) || !errors.As(err, &ue) {
			t.Fatalf("%s: err = %v, want ErrUpstreamUnreachable", what, err)
		}
		if ue.Reason != reason {
			t.Errorf("%s: reason %q, want %q", what, ue.Reason, reason)
		}
		noToken(t, what+" error", err.Error())
	}

	// Closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fwd := NewForwarder(ForwarderOptions{})
	defer fwd.Close()
	u, err := Target(mustURL(t, "https://"+addr+"/v2"), "x", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: u}, tok())
	check("closed port", err, "dial")

	// Untrusted certificate.
	e := newEnv(t, http.NotFoundHandler(), false, ForwarderOptions{TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}})
	_, err = e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, "x", "")}, tok())
	check("tls", err, "tls")

	// Connection dropped before an answer.
	e2 := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}), true, ForwarderOptions{})
	_, err = e2.fwd.Do(t.Context(), OutboundRequest{Method: "POST", URL: e2.target(t, "x", "")}, tok())
	check("reset", err, "reset")
}

type failingBody struct{ n int }

var errCallerBody = errors.New("caller body broke")

func (f *failingBody) Read(p []byte) (int, error) {
	if f.n > 0 {
		f.n--
		return copy(p, "data"), nil
	}
	return 0, errCallerBody
}

func TestForwardCallerBodyError(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}), true, ForwarderOptions{})
	_, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "POST", URL: e.target(t, "x", ""),
		Body: &failingBody{n: 2}, ContentLength: -1}, tok())
	if !errors.Is(err, ErrRequestBody) || !errors.Is(err, errCallerBody) {
		t.Fatalf("err = %v", err)
	}
}

func TestForwardCanceled(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}), false, ForwarderOptions{})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	_, err := e.fwd.Do(ctx, OutboundRequest{Method: "GET", URL: e.target(t, "x", "")}, tok())
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUpstreamTimeout) || errors.Is(err, ErrUpstreamUnreachable) {
		t.Fatalf("err = %v", err)
	}
}

func TestForwardRefusesBadInput(t *testing.T) {
	var hits atomic.Int64
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }), false, ForwarderOptions{})
	u := e.target(t, "x", "")
	for _, m := range []string{"TRACE", "trace", "CONNECT", "", "GET /x", "G\x00T", strings.Repeat("A", 40)} {
		if _, err := e.fwd.Do(t.Context(), OutboundRequest{Method: m, URL: u}, tok()); !errors.Is(err, ErrBadRequest) {
			t.Errorf("method %q: %v", m, err)
		}
	}
	if _, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: u}, secret.String{}); !errors.Is(err, ErrNoToken) {
		t.Errorf("no token: %v", err)
	}
	for _, bad := range []*url.URL{nil, mustURL(t, "/relative"), mustURL(t, "ftp://127.0.0.1/x"), mustURL(t, "https://u:p@127.0.0.1/")} {
		if _, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: bad}, tok()); !errors.Is(err, ErrEgressDenied) {
			t.Errorf("url %v: %v", bad, err)
		}
	}
	if _, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "PUT", URL: u, Body: strings.NewReader("abc"), ContentLength: 7}, tok()); !errors.Is(err, ErrBadRequest) {
		t.Errorf("length mismatch: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("upstream hit %d times by refused requests", n)
	}
}

func TestReplayable(t *testing.T) {
	cases := []struct {
		method string
		body   []io.Reader
		want   bool
	}{
		{"GET", nil, true},
		{"HEAD", nil, true},
		{"OPTIONS", nil, true},
		{"DELETE", nil, true},
		{"PUT", []io.Reader{bytes.NewReader([]byte("x"))}, true},
		{"PUT", []io.Reader{strings.NewReader("x")}, true},
		{"GET", []io.Reader{http.NoBody}, true},
		{"GET", []io.Reader{nil}, true},
		{"PUT", []io.Reader{io.MultiReader()}, false},
		{"PUT", []io.Reader{&failingBody{}}, false},
		{"POST", nil, false},
		{"POST", []io.Reader{strings.NewReader("x")}, false},
		{"PATCH", nil, false},
		{"get", nil, false},
	}
	for _, c := range cases {
		if got := Replayable(c.method, c.body...); got != c.want {
			t.Errorf("Replayable(%q, %T) = %v", c.method, c.body, got)
		}
	}
}

// Regression: only the raw, QueryEscape, PathEscape and "\/" forms of a
// reflected token were redacted. The upstream here echoes the token it
// received in every spelling of tokenSpellings (base64 of "Bearer "+token,
// lower-case %2f, \u002f, "+" as a space...), in headers, in a body it
// streams in pieces, and in a trailer.
func TestForwardRedactsEncodedToken(t *testing.T) {
	e := newEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		sp := tokenSpellings(tok)
		names := slices.Sorted(maps.Keys(sp))
		w.Header().Set("Trailer", "X-Trail")
		for i, name := range names {
			w.Header().Set(fmt.Sprintf("X-Spell-%d", i), "v="+sp[name])
		}
		for _, name := range names {
			s := sp[name]
			_, _ = io.WriteString(w, `{"`+name+`":"`+s[:len(s)/2])
			http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, s[len(s)/2:]+`"}`+"\n")
		}
		w.Header().Set("X-Trail", sp["base64 std Bearer "]+" "+sp["query lower"])
	}), false, ForwarderOptions{})
	resp, err := e.fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: e.target(t, "echo", "")}, tok())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(iotestOneByte(resp.Body))
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if name := spellingSurvives(b, testToken); name != "" {
		t.Errorf("spelling %q of the token survives in the body:\n%s", name, b)
	}
	if n := bytes.Count(b, []byte(secretMarker)); n < len(tokenSpellings(testToken)) {
		t.Errorf("only %d redactions in the body:\n%s", n, b)
	}
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		for k, vv := range h {
			if name := spellingSurvives([]byte(k+": "+strings.Join(vv, ",")), testToken); name != "" {
				t.Errorf("spelling %q of the token survives in header %s: %q", name, k, vv)
			}
		}
	}
	// The base64 core of the token is redacted; "Bearer " before it is not.
	if tr := resp.Trailer.Get("X-Trail"); tr != "QmVhcmVyIG[REDACTED] [REDACTED]" {
		t.Errorf("trailer = %q", resp.Trailer.Get("X-Trail"))
	}
}

// rawUpstream listens on 127.0.0.1 and answers every connection with
// reply(request head) and closes it: not HTTP, whatever it writes.
func rawUpstream(t *testing.T, reply func(head string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a safety bound only
				var head []byte
				buf := make([]byte, 4096)
				for len(head) < 1<<16 && !bytes.Contains(head, []byte("\r\n\r\n")) {
					n, err := c.Read(buf)
					head = append(head, buf[:n]...)
					if err != nil {
						return
					}
				}
				_, _ = io.WriteString(c, reply(string(head)))
			}()
		}
	}()
	return ln.Addr().String()
}

func authOf(head string) string {
	for _, line := range strings.Split(head, "\r\n") {
		if v, ok := strings.CutPrefix(line, "Authorization: "); ok {
			return v
		}
	}
	return ""
}

// Regression: errors were classified by their text (strings.Contains
// "tls:"/"x509:"), which the upstream controls, and the text of the "tls"
// class was logged: an upstream answering "tls:<Authorization value>" put
// the token into vaultd's log.
func TestForwardMalformedResponseNotLogged(t *testing.T) {
	replies := map[string]func(auth string) string{
		"tls prefix":    func(a string) string { return "tls:" + a + "\r\n\r\n" },
		"tls no space":  func(a string) string { return "tls:" + strings.ReplaceAll(a, " ", "") + "\r\n\r\n" },
		"x509 no space": func(a string) string { return "x509:" + strings.ReplaceAll(a, " ", "") + "\n" },
		"header line":   func(a string) string { return "HTTP/1.1 200 OK\r\n tls:" + a + "\r\n\r\n" },
		"encoded reply": func(a string) string { return "tls:" + base64.StdEncoding.EncodeToString([]byte(a)) + "\r\n\r\n" },
	}
	for name, reply := range replies {
		t.Run(name, func(t *testing.T) {
			addr := rawUpstream(t, func(head string) string { return reply(authOf(head)) })
			logs := &syncBuf{}
			fwd := NewForwarder(ForwarderOptions{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			t.Cleanup(fwd.Close)
			u, err := Target(mustURL(t, "http://"+addr+"/v2"), "x", "")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: u}, tok())
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if name := spellingSurvives([]byte(logs.String()), testToken); name != "" || !strings.Contains(logs.String(), "upstream call failed") {
				t.Errorf("log (spelling %q of the token):\n%s", name, logs)
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) || ue.Reason != "protocol" {
				t.Fatalf("err = %v, want an UpstreamError with reason protocol", err)
			}
			noToken(t, "error", err.Error())
		})
	}
}

// selfSignedWithNames is a CA certificate for 127.0.0.1 that names only
// dnsNames, which the peer chooses (here: the token).
func selfSignedWithNames(t *testing.T, cn string, dnsNames ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Certificate verification errors quote the names in the peer's
// certificate, which the peer chooses: they must not reach the log. The
// target is named (an IP target's error lists only IP SANs), and the
// Forwarder's dialer is pointed at the test server on 127.0.0.1.
func TestForwardCertNamesNotLogged(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		cert := selfSignedWithNames(t, "CN "+testToken, testToken, "x."+url.PathEscape(testToken)+".example")
		srv := httptest.NewUnstartedServer(http.NotFoundHandler())
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		pool := x509.NewCertPool()
		if trusted {
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			pool.AddCert(leaf) // the chain verifies, the name does not
		}
		logs := &syncBuf{}
		fwd := NewForwarder(ForwarderOptions{TLSConfig: &tls.Config{RootCAs: pool},
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		t.Cleanup(fwd.Close)
		addr := srv.Listener.Addr().String()
		fwd.tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		_, port, _ := net.SplitHostPort(addr)
		u, err := Target(mustURL(t, "https://api.upstream.test:"+port+"/v2"), "x", "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = fwd.Do(t.Context(), OutboundRequest{Method: "GET", URL: u}, tok())
		if name := spellingSurvives([]byte(logs.String()), testToken); name != "" || !strings.Contains(logs.String(), "kind=tls") {
			t.Errorf("trusted=%v: log (spelling %q of the token):\n%s", trusted, name, logs)
		}
		var ue *UpstreamError
		if !errors.As(err, &ue) || ue.Reason != "tls" {
			t.Fatalf("trusted=%v: err = %v, want reason tls", trusted, err)
		}
	}
}

// The reason comes from the error's type, never its text, and the log
// attributes carry only our own fields (address, errno), whatever the
// text says.
func TestUnreachableReasonByType(t *testing.T) {
	const secretText = "tok-SECRET/+="
	named := &x509.Certificate{Subject: pkix.Name{CommonName: secretText}, DNSNames: []string{secretText}}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	cases := []struct {
		err    error
		reason string
		want   []string // in the attributes
	}{
		{errors.New("tls: " + secretText), "protocol", nil},
		{fmt.Errorf("net/http: HTTP/1.x transport connection broken: malformed HTTP response %q", "tls:Bearer "+secretText), "protocol", nil},
		{fmt.Errorf("malformed HTTP status code %q", "x509: "+secretText), "protocol", nil},
		{&tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{named}, Err: x509.HostnameError{Certificate: named, Host: "127.0.0.1"}}, "tls", []string{"x509.HostnameError"}},
		{x509.UnknownAuthorityError{Cert: named}, "tls", []string{"x509.UnknownAuthorityError"}},
		{x509.CertificateInvalidError{Cert: named, Reason: x509.Expired, Detail: secretText}, "tls", []string{"x509.CertificateInvalidError"}},
		{tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}, "tls", nil},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}, "dial", []string{"127.0.0.1:8443", "connection refused"}},
		{&net.OpError{Op: "read", Net: "tcp", Addr: addr, Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}, "reset", []string{"connection reset"}},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: errors.New(secretText)}, "dial", []string{"127.0.0.1:8443"}},
		{&net.DNSError{Name: "api.example.com", Err: secretText, IsNotFound: true}, "dns", []string{"dns_not_found"}},
		{io.ErrUnexpectedEOF, "reset", nil},
	}
	for _, c := range cases {
		if got := unreachableReason(c.err); got != c.reason {
			t.Errorf("%T %q: reason %q, want %q", c.err, c.err, got, c.reason)
		}
		logs := &syncBuf{}
		slog.New(slog.NewTextHandler(logs, nil)).Warn("upstream call failed", loggableCause(c.err)...)
		if strings.Contains(logs.String(), "SECRET") {
			t.Errorf("%T: upstream text logged: %s", c.err, logs)
		}
		for _, w := range c.want {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("%T: %q missing from %s", c.err, w, logs)
			}
		}
	}
}
