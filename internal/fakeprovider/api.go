package fakeprovider

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The provider's API: bearer check, reflection of the token, streaming
// and echo endpoints.

func (p *Provider) requireBearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p.mu.Lock()
		_, valid := p.byAccess[tok]
		p.mu.Unlock()
		if !ok || tok == "" || !valid {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
			return
		}
		h := r.Header.Clone()
		h.Del("Authorization")
		rec := APIRequest{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Header: h, Body: body}
		p.mu.Lock()
		p.apiRequests = append(p.apiRequests, rec)
		p.mu.Unlock()
		if !p.wait(r, HoldAPI) {
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		r.Header.Set("X-Oauthtest-Token", tok) // for /api/reflect-token; stripped from echoes
		next.ServeHTTP(w, r)
	})
}

func (p *Provider) apiMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/reflect-token", serveReflect)
	mux.HandleFunc("/api/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/api/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status must be 200-599"})
			return
		}
		writeJSON(w, code, map[string]int{"status": code})
	})
	mux.HandleFunc("/api/stream", serveStream)
	mux.HandleFunc("/api/", serveEcho)
	return mux
}

// serveReflect reflects the bearer token in headers and in the body, the
// body copy split across two flushed writes at ?split=N (default: the
// middle) so that a streaming redactor must handle a token spanning chunks.
// ?enc= reflects it spelled another way (ReflectEncodings), as upstreams
// that encode what they echo do.
func serveReflect(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("X-Oauthtest-Token")
	if enc := r.URL.Query().Get("enc"); enc != "" {
		f, ok := reflectEncodings[enc]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown enc"})
			return
		}
		tok = f(tok)
	}
	split := len(tok) / 2
	if s, err := strconv.Atoi(r.URL.Query().Get("split")); err == nil && s >= 0 && s <= len(tok) {
		split = s
	}
	w.Header().Set("X-Reflected-Token", tok)
	w.Header().Set("X-Reflected-Authorization", "Bearer "+tok)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	_, _ = io.WriteString(w, "token="+tok[:split])
	flush()
	_, _ = io.WriteString(w, tok[split:]+"\n")
	flush()
	_, _ = io.WriteString(w, "again="+tok+"\nend\n")
}

// reflectEncodings are the ?enc= spellings of /api/reflect-token.
var reflectEncodings = map[string]func(tok string) string{
	"base64":          func(t string) string { return base64.StdEncoding.EncodeToString([]byte(t)) },
	"base64url":       func(t string) string { return base64.URLEncoding.EncodeToString([]byte(t)) },
	"base64-raw":      func(t string) string { return base64.RawStdEncoding.EncodeToString([]byte(t)) },
	"base64-bearer":   func(t string) string { return base64.StdEncoding.EncodeToString([]byte("Bearer " + t)) },
	"base64url-basic": func(t string) string { return base64.URLEncoding.EncodeToString([]byte("user:" + t)) },
	"pct-lower":       func(t string) string { return lowerHexEscapes(url.QueryEscape(t)) },
	"json-slash":      func(t string) string { return strings.ReplaceAll(t, "/", `\/`) },
	"json-u":          strings.NewReplacer("/", `\u002f`, "+", `\u002b`, "=", `\u003d`).Replace,
	"json-u-upper":    strings.NewReplacer("/", `\u002F`, "+", `\u002B`, "=", `\u003D`).Replace,
	"form":            func(t string) string { return strings.ReplaceAll(t, "+", " ") },
	"hex":             func(t string) string { return hex.EncodeToString([]byte(t)) },
}

// ReflectEncodings lists the ?enc= values /api/reflect-token accepts.
func ReflectEncodings() []string {
	return slices.Sorted(maps.Keys(reflectEncodings))
}

// lowerHexEscapes lower-cases the hex digits of every %XX escape.
func lowerHexEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// ReflectHandler serves what /api/reflect-token does, at any path, for any
// bearer token, unchecked: for tests whose upstream must echo a token this
// provider did not issue (one with "/+=" in it, say).
func ReflectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
			return
		}
		r.Header.Set("X-Oauthtest-Token", tok)
		serveReflect(w, r)
	})
}

// serveStream writes ?n= chunks (default 5, at most 1000) of ?size= bytes
// (default 16, at most 64 KiB) each, flushing after every one.
func serveStream(w http.ResponseWriter, r *http.Request) {
	n := boundedInt(r.URL.Query().Get("n"), 5, 1000)
	size := boundedInt(r.URL.Query().Get("size"), 16, 64<<10)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	chunk := strings.Repeat("x", size)
	for i := range n {
		_, _ = fmt.Fprintf(w, "%d:%s\n", i, chunk)
		if fl != nil {
			fl.Flush()
		}
	}
}

func boundedInt(s string, def, max int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return def
	}
	return min(n, max)
}

// EchoResponse is what the API's echo endpoints answer.
type EchoResponse struct {
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	RawPath    string              `json:"raw_path"`
	RawQuery   string              `json:"raw_query"`
	Query      map[string][]string `json:"query"`
	Headers    map[string][]string `json:"headers"` // Authorization is never echoed
	Body       string              `json:"body,omitempty"`
	BodyBase64 string              `json:"body_base64,omitempty"`
	BearerOK   bool                `json:"bearer_ok"`
}

func serveEcho(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body) // already read and bounded by requireBearer
	h := r.Header.Clone()
	h.Del("Authorization")
	h.Del("X-Oauthtest-Token")
	resp := EchoResponse{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Query: r.URL.Query(), Headers: h, BearerOK: true,
	}
	if utf8.Valid(body) {
		resp.Body = string(body)
	} else {
		resp.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	writeJSON(w, http.StatusOK, resp)
}
