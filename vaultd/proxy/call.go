package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
)

// ErrRedirectEgress: the upstream answered with a redirect whose Location
// leaves the provider's API (origin or path). The redirect is not followed
// and its answer not passed on.
var ErrRedirectEgress = errors.New("proxy: redirect outside the provider's API")

// Tokens is the vault as one outbound call needs it: the access token of
// the integration being called, for the caller being served.
type Tokens interface {
	// Token returns the access token to send.
	Token(ctx context.Context) (secret.String, error)
	// Renew is called once the upstream answered 401 to rejected, a token
	// the vault thought valid. It returns the token to retry with, or
	// ok=false when no refresh is allowed now (the vault throttles forced
	// refreshes): the 401 then goes back to the caller as it came.
	Renew(ctx context.Context, rejected secret.String) (tok secret.String, ok bool, err error)
}

// Call is one outbound call of the proxy or execute route.
type Call struct {
	Method string
	// URL is the target, from Target; Base is the provider's api_base_url,
	// which a redirect must not leave.
	URL, Base     *url.URL
	Header        http.Header
	Body          io.Reader
	ContentLength int64
	// Replay returns the body again, for the one retry after a forced
	// refresh; nil when the body cannot be sent twice (a streamed one).
	Replay func() io.Reader
}

// NeverForwarded reports whether method (in any letter case) is one the
// proxy refuses whatever the target: CONNECT (a tunnel, not an API call)
// and TRACE (it echoes the request, token included).
func NeverForwarded(method string) bool {
	m := strings.ToUpper(method)
	return m == http.MethodConnect || m == http.MethodTrace
}

// Call makes c with the integration's access token: the one path the proxy
// and execute routes take to a provider. An upstream 401 to a replayable
// request (an idempotent method and a body that can be sent again) gets
// one forced refresh and one retry, when tokens.Renew allows it. A
// redirect is returned, never followed, unless its Location leaves Base
// (ErrRedirectEgress). The caller closes the body.
//
// Errors are Do's, tokens', and ErrRedirectEgress.
func (f *Forwarder) Call(ctx context.Context, c Call, tokens Tokens) (*http.Response, error) {
	tok, err := tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	req := OutboundRequest{Method: c.Method, URL: c.URL, Header: c.Header, Body: c.Body, ContentLength: c.ContentLength}
	resp, err := f.Do(ctx, req, tok)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && c.Replay != nil && Replayable(c.Method) {
		next, ok, rerr := tokens.Renew(ctx, tok)
		switch {
		case rerr != nil:
			resp.Body.Close()
			return nil, rerr
		case ok:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			req.Body = c.Replay()
			resp, err = f.Do(ctx, req, next)
		}
	}
	if err != nil {
		return nil, err
	}
	if isRedirect(resp.StatusCode) {
		if loc := resp.Header.Get("Location"); loc != "" && !withinBase(c.URL, c.Base, loc) {
			resp.Body.Close()
			return nil, ErrRedirectEgress
		}
	}
	return resp, nil
}

func isRedirect(code int) bool { return code >= 300 && code < 400 && code != http.StatusNotModified }

// withinBase reports whether a Location (relative to the request URL)
// stays on the base's origin and under its path.
func withinBase(reqURL, base *url.URL, loc string) bool {
	u, err := reqURL.Parse(loc)
	if err != nil {
		return false
	}
	if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil {
		return false
	}
	prefix := strings.TrimSuffix(base.EscapedPath(), "/") + "/"
	p := u.EscapedPath()
	return p == strings.TrimSuffix(prefix, "/") || strings.HasPrefix(p, prefix)
}

// Relay writes an upstream answer to the caller: its headers, except that
// the upstream's X-Request-Id travels as X-Upstream-Request-Id (the
// answer's X-Request-Id is vaultd's, naming this request's audit events)
// and an X-Vaultd-Error is dropped (an upstream must not pass for vaultd);
// its status; and its body, flushed as it arrives. It returns an error
// only when the upstream body ended with one: the caller must then see a
// broken response, not a silently truncated one. A caller that stops
// reading ends the copy without error.
func Relay(w http.ResponseWriter, resp *http.Response) error {
	h := w.Header()
	for k, vs := range resp.Header {
		switch k {
		case "X-Request-Id":
			h["X-Upstream-Request-Id"] = vs
		case "X-Vaultd-Error":
		default:
			h[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			_ = rc.Flush()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
