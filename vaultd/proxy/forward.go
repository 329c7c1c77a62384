package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
)

// ForwarderOptions configures a Forwarder. Zero durations take defaults.
type ForwarderOptions struct {
	// Timeout bounds a whole exchange, reading the response body included
	// (http.Client.Timeout). Default 2m.
	Timeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written. Default 30s.
	ResponseHeaderTimeout time.Duration
	// TLSConfig is cloned; nil uses the system roots. MinVersion is raised
	// to TLS 1.2 if lower.
	TLSConfig *tls.Config
	// Logger receives the class and Go types of upstream failures, never
	// their text (see loggableCause). nil discards.
	Logger *slog.Logger
}

const (
	defaultTimeout               = 2 * time.Minute
	defaultResponseHeaderTimeout = 30 * time.Second
	dialTimeout                  = 10 * time.Second
	tlsHandshakeTimeout          = 10 * time.Second
)

// Forwarder makes the outbound calls of proxy and execute. It never follows
// redirects, ignores proxy environment variables and is safe for
// concurrent use.
type Forwarder struct {
	client *http.Client
	tr     *http.Transport
	log    *slog.Logger
}

// NewForwarder builds a Forwarder with its own connection pool.
func NewForwarder(opts ForwarderOptions) *Forwarder {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.ResponseHeaderTimeout <= 0 {
		opts.ResponseHeaderTimeout = defaultResponseHeaderTimeout
	}
	var tc *tls.Config
	if opts.TLSConfig != nil {
		tc = opts.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		Proxy:                  nil, // egress goes straight to api_base_url, never via $HTTPS_PROXY
		DialContext:            (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		ResponseHeaderTimeout:  opts.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		ForceAttemptHTTP2:      true, // needed for h2 with a custom TLS config
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return &Forwarder{
		tr:  tr,
		log: log,
		client: &http.Client{
			Transport: tr,
			Timeout:   opts.Timeout,
			// 3xx goes back to the caller as is: following it would carry
			// the token wherever Location points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Close releases idle connections.
func (f *Forwarder) Close() { f.tr.CloseIdleConnections() }

// OutboundRequest is one call to a provider. URL must come from Target.
// Body nil or http.NoBody means no body; ContentLength -1 (or 0 with a
// body) means unknown, sent chunked. A *bytes.Reader or *strings.Reader
// body with ContentLength 0 has its length taken from the reader.
type OutboundRequest struct {
	Method        string
	URL           *url.URL
	Header        http.Header
	Body          io.Reader
	ContentLength int64
}

// Do sends req with "Authorization: Bearer <token>" (the only place the
// token is revealed) and the caller's headers filtered by OutboundHeaders,
// streaming the body. The response comes back unread: headers filtered by
// InboundHeaders, Content-Length dropped (ContentLength -1) unless the body
// is known empty, trailers sanitised at EOF, Body redacting the token as it
// streams, Request stripped of the Authorization header. 3xx is returned,
// never followed. The caller must close the body.
//
// Errors: ErrUpstreamTimeout, ErrUpstreamUnreachable (incl.
// ErrUpstreamResponse) as *UpstreamError; ErrRequestBody wrapping the
// caller body's error; context.Canceled when ctx was canceled;
// ErrBadRequest for an unusable method; ErrEgressDenied for a URL that is
// not absolute http(s); ErrNoToken. Body read errors are mapped the same
// way. No error carries the token, a header value or the URL's query.
func (f *Forwarder) Do(ctx context.Context, req OutboundRequest, token secret.String) (*http.Response, error) {
	if token.IsZero() {
		return nil, ErrNoToken
	}
	method, err := checkMethod(req.Method)
	if err != nil {
		return nil, err
	}
	u := req.URL
	if u == nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, deny("target must be an absolute http(s) URL")
	}
	host := u.Host

	var body io.Reader
	var tracked *trackedBody
	switch b := req.Body.(type) {
	case nil:
	case *bytes.Reader, *strings.Reader, *bytes.Buffer:
		body = b // NewRequest takes the length and can replay it (GOAWAY)
	default:
		if b != http.NoBody {
			tracked = &trackedBody{r: b}
			body = tracked
		}
	}
	// The URL string is ours (from Target), so a parse error here is a bug;
	// report without echoing it.
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, deny("unusable target URL")
	}
	if tracked != nil {
		hr.ContentLength = req.ContentLength
		if hr.ContentLength == 0 {
			hr.ContentLength = -1
		}
	} else if body != nil && req.ContentLength > 0 && req.ContentLength != hr.ContentLength {
		return nil, badReq("content length does not match body")
	}
	hr.Header = OutboundHeaders(req.Header)
	if hr.Header.Get("User-Agent") == "" {
		hr.Header.Set("User-Agent", "vaultd")
	}
	hr.Header.Set("Authorization", "Bearer "+token.Reveal())

	resp, err := f.client.Do(hr)
	if err != nil {
		return nil, f.classify(ctx, err, host, tracked)
	}

	ss := tokenVariants(token.Reveal())
	resp.Header = InboundHeaders(resp.Header, ss...)
	noBody := method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified || resp.ContentLength == 0
	if !noBody && !readableEncoding(resp.Header.Values("Content-Encoding")) {
		resp.Body.Close()
		f.log.WarnContext(ctx, "upstream answered in an unreadable content coding", "host", host)
		return nil, &UpstreamError{Kind: ErrUpstreamResponse, Host: host, Reason: "unsupported content-encoding"}
	}
	if resp.ContentLength == 0 || method == http.MethodHead {
		// Known empty (or HEAD): the length cannot change by redaction.
		if resp.ContentLength >= 0 {
			resp.Header["Content-Length"] = []string{itoa(resp.ContentLength)}
		}
	} else {
		resp.ContentLength = -1
	}
	if resp.Request != nil {
		clean := resp.Request.Clone(resp.Request.Context())
		clean.Header.Del("Authorization")
		clean.Body, clean.GetBody = nil, nil
		resp.Request = clean
	}
	guard := &respBody{rc: resp.Body, resp: resp, ss: ss, f: f, ctx: ctx, host: host}
	resp.Body = NewRedactReadCloser(guard, ss...)
	return resp, nil
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// readableEncoding: only identity bodies can be checked for the token
// (gzip was already undone by the transport, which removes the header).
func readableEncoding(vals []string) bool {
	for _, v := range vals {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}

// checkMethod requires an RFC 9110 token and refuses CONNECT (a tunnel,
// not an API call) and TRACE (it echoes the request, token included).
// Standard methods are accepted in any case and normalised.
func checkMethod(m string) (string, error) {
	if m == "" || len(m) > 32 || !isToken(m) {
		return "", badReq("invalid method")
	}
	for _, std := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace} {
		if strings.EqualFold(m, std) {
			m = std
			break
		}
	}
	if m == http.MethodConnect || m == http.MethodTrace {
		return "", badReq("method not allowed")
	}
	return m, nil
}

// Replayable reports whether a request may be sent a second time after an
// upstream 401 and a forced refresh: the method must be idempotent (GET,
// HEAD, OPTIONS, DELETE, PUT) and, when a body is given, it must be absent
// or held in memory (*bytes.Reader, *strings.Reader), so the server can
// send the same bytes again from a fresh reader. Called with the method
// only, it judges the method alone.
func Replayable(method string, body ...io.Reader) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete, http.MethodPut:
	default:
		return false
	}
	for _, b := range body {
		switch b.(type) {
		case nil, *bytes.Reader, *strings.Reader:
		default:
			if b != http.NoBody {
				return false
			}
		}
	}
	return true
}

// classify turns a transport error into a safe sentinel error and logs the
// cause (unwrapped from *url.Error, whose text includes the full URL).
func (f *Forwarder) classify(ctx context.Context, err error, host string, tracked *trackedBody) error {
	if tracked != nil {
		if berr := tracked.error(); berr != nil {
			return errors.Join(ErrRequestBody, berr)
		}
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return errors.Join(errors.New("proxy: upstream call canceled"), context.Canceled)
	}
	kind, reason := ErrUpstreamUnreachable, unreachableReason(cause)
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		kind, reason = ErrUpstreamTimeout, "timeout"
	}
	f.log.WarnContext(ctx, "upstream call failed", append([]any{"host", host, "kind", reason}, loggableCause(cause)...)...)
	return &UpstreamError{Kind: kind, Host: host, Reason: reason}
}

// loggableCause is what the log may say of a transport error: the Go types
// along its chain, and only fields whose text is ours (the operation and
// address of a *net.OpError, an errno, a DNS lookup's flags, an x509
// reason code). Never its text: net/http's protocol errors quote what the
// upstream sent (which may reflect the Authorization header we injected),
// x509 errors quote the names in the peer's certificate, and a DNS error
// carries the resolver's words.
func loggableCause(err error) []any {
	attrs := []any{"cause_types", typeChain(err)}
	var op *net.OpError
	if errors.As(err, &op) {
		attrs = append(attrs, "op", op.Op)
		if op.Addr != nil {
			attrs = append(attrs, "addr", op.Addr.String())
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		attrs = append(attrs, "errno", errno.Error())
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		attrs = append(attrs, "dns_not_found", dns.IsNotFound, "dns_timeout", dns.IsTimeout)
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		attrs = append(attrs, "x509_reason", int(ci.Reason))
	}
	return attrs
}

// typeChain lists the types of err and of what it wraps, depth first, at
// most maxTypes of them.
func typeChain(err error) string {
	const maxTypes = 8
	var types []string
	var walk func(error)
	walk = func(e error) {
		for e != nil && len(types) < maxTypes {
			types = append(types, fmt.Sprintf("%T", e))
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				e = u.Unwrap()
			case interface{ Unwrap() []error }:
				for _, x := range u.Unwrap() {
					walk(x)
				}
				return
			default:
				return
			}
		}
	}
	walk(err)
	return strings.Join(types, " > ")
}

// unreachableReason classifies a transport error by its type alone: its
// text may be the upstream's (a reply "tls:..." is a protocol error, not a
// TLS one).
func unreachableReason(err error) string {
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		return "dns"
	case isTLSError(err):
		return "tls"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.As(err, &op) && op.Op == "dial":
		return "dial"
	}
	return "protocol"
}

// isTLSError reports the error types of crypto/tls and crypto/x509. A
// handshake error crypto/tls makes with errors.New ("tls: handshake
// failure") has no type of its own and counts as "protocol".
func isTLSError(err error) bool {
	var (
		cv  *tls.CertificateVerificationError
		rh  tls.RecordHeaderError
		ae  tls.AlertError
		ech *tls.ECHRejectionError
		hn  x509.HostnameError
		ua  x509.UnknownAuthorityError
		ci  x509.CertificateInvalidError
		sr  x509.SystemRootsError
		cve x509.ConstraintViolationError
		ia  x509.InsecureAlgorithmError
		uce x509.UnhandledCriticalExtension
		op  *net.OpError
	)
	return errors.As(err, &cv) || errors.As(err, &rh) || errors.As(err, &ae) || errors.As(err, &ech) ||
		errors.As(err, &hn) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &sr) ||
		errors.As(err, &cve) || errors.As(err, &ia) || errors.As(err, &uce) ||
		// crypto/tls reports an alert, sent or received, as these.
		errors.As(err, &op) && (op.Op == "remote error" || op.Op == "local error")
}

// trackedBody remembers the caller body's read error, so a failed upload
// is reported as the caller's fault, not the upstream's.
type trackedBody struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (t *trackedBody) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.mu.Lock()
		t.err = err
		t.mu.Unlock()
	}
	return n, err
}

// Close forwards to the caller's body so a transport giving up on the
// upload unblocks a pending Read (e.g. on a pipe).
func (t *trackedBody) Close() error {
	if c, ok := t.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (t *trackedBody) error() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// respBody sits between the transport's body and the redactor: it maps
// read errors to safe errors and sanitises trailers when they arrive.
type respBody struct {
	rc   io.ReadCloser
	resp *http.Response
	ss   [][]byte
	f    *Forwarder
	ctx  context.Context
	host string
	done bool
}

func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		sanitizeTrailers(b.resp.Trailer, b.ss)
	}
	if err != nil && err != io.EOF {
		err = b.f.classify(b.ctx, err, b.host, nil)
	}
	return n, err
}

func (b *respBody) Close() error { return b.rc.Close() }

// isToken reports whether s is an RFC 9110 token (method, header name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
