package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// errRedirectEgress: the upstream redirected outside the provider's API.
var errRedirectEgress = errors.New("redirect outside the provider's API")

type outbound struct {
	method  string
	target  *url.URL
	header  http.Header
	body    io.Reader
	length  int64
	replay  func() io.Reader // non-nil when the request can be sent again
	via     string           // "proxy" | "execute"
	base    *url.URL
	fwd     *proxy.Forwarder // the provider's own (its own trust store)
	tenant  string
	id      string
	caller  vault.Caller
	subject policy.Subject
}

// call resolves a token and makes the outbound request: the single path
// both proxy and execute take. An upstream 401 on a token the vault
// thought valid triggers one forced refresh and one retry when the request
// can be replayed safely.
//
// The forced refresh is throttled by the vault (once per access token,
// once per ForcedRefreshInterval): when it declines, the 401 goes back to
// the caller as it came.
func (s *Server) call(ctx context.Context, o outbound) (*http.Response, error) {
	lease, err := s.vault.AccessToken(ctx, o.caller, o.tenant, o.id)
	if err != nil {
		return nil, err
	}
	resp, err := o.fwd.Do(ctx, proxy.OutboundRequest{Method: o.method, URL: o.target, Header: o.header, Body: o.body, ContentLength: o.length}, lease.Token)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && o.replay != nil && proxy.Replayable(o.method) {
		lease2, rerr := s.vault.ForceRefresh(ctx, o.caller, o.tenant, o.id, lease)
		switch {
		case errors.Is(rerr, vault.ErrRefreshThrottled):
			s.metrics.forcedRefreshThrottled.Inc()
		case rerr != nil:
			resp.Body.Close()
			return nil, rerr
		default:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			s.metrics.forcedRefresh.Inc()
			resp, err = o.fwd.Do(ctx, proxy.OutboundRequest{Method: o.method, URL: o.target, Header: o.header, Body: o.replay(), ContentLength: o.length}, lease2.Token)
		}
	}
	if err != nil {
		return nil, err
	}
	if isRedirect(resp.StatusCode) {
		if loc := resp.Header.Get("Location"); loc != "" && !withinBase(o.target, o.base, loc) {
			resp.Body.Close()
			return nil, errRedirectEgress
		}
	}
	s.vault.MarkUsed(o.tenant, o.id)
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

// prepare runs the gates common to proxy and execute: the integration
// must exist in the caller's tenant (else not_found, identical for a
// foreign one), then the target must stay inside the provider's API.
func (s *Server) prepare(w http.ResponseWriter, r *http.Request, sub policy.Subject, id, rawPath, rawQuery, method, via string) (outbound, bool) {
	ctx := r.Context()
	md, err := s.vault.GetIntegration(ctx, sub.Tenant, id)
	if err != nil {
		s.fail(w, r, err, msgIntegrationNotFound)
		return outbound{}, false
	}
	p, ok := s.vault.Provider(md.Provider)
	fwd := s.forwarder(md.Provider)
	if !ok || fwd == nil {
		s.log.ErrorContext(ctx, "integration's provider is not configured", "request_id", requestID(ctx), "provider", md.Provider)
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return outbound{}, false
	}
	if m := strings.ToUpper(method); m == http.MethodConnect || m == http.MethodTrace {
		// A tunnel and an echo of the request (token included) are not
		// API calls: refused before any token is touched.
		_ = s.record(ctx, audit.Event{TenantID: sub.Tenant, IntegrationID: id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
			Action: audit.ActionProxyRequest, Outcome: audit.OutcomeDenied, TargetHost: p.APIBase.Host,
			HTTPStatus: http.StatusMethodNotAllowed, Detail: via + " " + m + ": method_not_allowed"})
		writeError(w, r, api.CodeMethodNotAllowed, "method "+m+" is not forwarded")
		return outbound{}, false
	}
	target, err := proxy.Target(p.APIBase, rawPath, rawQuery)
	if err != nil {
		_ = s.record(ctx, audit.Event{TenantID: sub.Tenant, IntegrationID: id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
			Action: audit.ActionProxyRequest, Outcome: audit.OutcomeDenied, TargetHost: p.APIBase.Host,
			HTTPStatus: http.StatusForbidden, Detail: via + " " + method + ": egress_denied"})
		writeError(w, r, api.CodeEgressDenied, msgEgress)
		return outbound{}, false
	}
	return outbound{method: method, target: target, via: via, base: p.APIBase, fwd: fwd, tenant: sub.Tenant, id: id,
		caller: s.caller(r, sub), subject: sub}, true
}

func (s *Server) auditCall(ctx context.Context, o outbound, status int) error {
	return s.record(ctx, audit.Event{TenantID: o.tenant, IntegrationID: o.id, Actor: o.subject.Principal, OnBehalfOf: o.subject.OnBehalfOf,
		Action: audit.ActionProxyRequest, Outcome: audit.OutcomeSuccess, TargetHost: o.target.Host,
		HTTPStatus: status, Detail: o.via + " " + o.method})
}

// proxy streams the caller's request to the provider and the answer back.
func (s *Server) proxy(q *request) {
	w, r, sub, id, rawPath := q.w, q.r, q.sub, q.id, q.rest
	// proxy.Target allows one leading "/" and refuses "//host"; prefixing
	// "/" makes ".../proxy//host/x" such a network-path reference.
	o, ok := s.prepare(w, r, sub, id, "/"+rawPath, r.URL.RawQuery, r.Method, "proxy")
	if !ok {
		return
	}
	o.header = r.Header.Clone()
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody {
		o.body, o.length = r.Body, r.ContentLength
	} else {
		o.body, o.length = http.NoBody, 0
		o.replay = func() io.Reader { return http.NoBody }
	}
	ctx := r.Context()
	resp, err := s.call(ctx, o)
	if err != nil {
		s.outboundFailed(w, r, o, err)
		return
	}
	defer resp.Body.Close()
	if s.auditCall(ctx, o, resp.StatusCode) != nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	h := w.Header()
	for k, vs := range resp.Header {
		switch k {
		case api.HeaderRequestID:
			// One X-Request-Id, vaultd's: it names this request's audit
			// events. The upstream's goes along under another name.
			h[api.HeaderUpstreamRequestID] = vs
		case api.HeaderError: // an upstream must not pass for vaultd
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
				return
			}
			_ = rc.Flush()
		}
		if rerr != nil {
			if rerr != io.EOF {
				s.log.WarnContext(ctx, "upstream body ended with error", "request_id", requestID(ctx), "err", rerr)
				// Abort so the caller sees a broken response, not a
				// silently truncated one.
				panic(http.ErrAbortHandler)
			}
			return
		}
	}
}

// execute is the JSON form of proxy: bounded both ways.
func (s *Server) execute(q *request) {
	w, r, sub, id := q.w, q.r, q.sub, q.id
	req, err := proxy.DecodeExecuteRequest(http.MaxBytesReader(w, r.Body, s.maxBody), s.maxBody)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.Is(err, proxy.ErrTooLarge) || errors.As(err, &mbe) {
			writeError(w, r, api.CodePayloadTooLarge, "execute request too large")
		} else {
			writeError(w, r, api.CodeBadRequest, "invalid execute request: "+proxy.SafeReason(err))
		}
		return
	}
	// req.Path goes to proxy.Target as given: stripping its leading "/"
	// here would turn "//host/x" into "/host/x" and slip past the
	// network-path check.
	rawPath := req.Path
	query := url.Values{}
	for k, v := range req.Query {
		query.Set(k, v)
	}
	o, ok := s.prepare(w, r, sub, id, rawPath, query.Encode(), req.Method, "execute")
	if !ok {
		return
	}
	o.header = http.Header{}
	for k, v := range req.Headers {
		o.header.Set(k, v)
	}
	body := req.Body
	o.body, o.length = bytes.NewReader(body), int64(len(body))
	o.replay = func() io.Reader { return bytes.NewReader(body) }
	ctx := r.Context()
	resp, err := s.call(ctx, o)
	if err != nil {
		s.outboundFailed(w, r, o, err)
		return
	}
	defer resp.Body.Close()
	rb, held, err := s.readAnswer(resp.Body)
	defer s.bufs.release(held)
	if errors.Is(err, errBufferBudget) {
		s.outboundFailed(w, r, o, err)
		return
	}
	if err != nil {
		s.outboundFailed(w, r, o, errors.Join(proxy.ErrUpstreamUnreachable, err))
		return
	}
	if int64(len(rb)) > s.maxBody {
		_ = s.record(ctx, audit.Event{TenantID: o.tenant, IntegrationID: o.id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
			Action: audit.ActionProxyRequest, Outcome: audit.OutcomeFailure, TargetHost: o.target.Host,
			HTTPStatus: http.StatusBadGateway, Detail: "execute " + o.method + ": response too large"})
		writeError(w, r, api.CodeUpstreamUnreachable, "upstream response exceeds the execute size limit")
		return
	}
	if s.auditCall(ctx, o, resp.StatusCode) != nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = proxy.EncodeExecuteResponse(w, resp.StatusCode, resp.Header, rb)
}

// readAnswer reads an execute answer of at most maxBody+1 bytes into
// memory, reserving what it holds from the budget all execute answers
// share; the caller releases held once the answer is written.
func (s *Server) readAnswer(body io.Reader) (b []byte, held int64, err error) {
	limit := s.maxBody + 1
	r := io.LimitReader(body, limit)
	for {
		if len(b) == cap(b) {
			if int64(len(b)) >= limit {
				return b, held, nil
			}
			grow := min(max(int64(cap(b)), 64<<10), limit-int64(cap(b)))
			if !s.bufs.reserve(grow) {
				return nil, held, errBufferBudget
			}
			held += grow
			nb := make([]byte, len(b), int64(cap(b))+grow)
			copy(nb, b)
			clear(b) // it held the (redacted) answer
			b = nb
		}
		n, rerr := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if rerr == io.EOF {
			return b, held, nil
		}
		if rerr != nil {
			return nil, held, rerr
		}
	}
}
