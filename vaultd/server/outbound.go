package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// outbound is a proxy or execute call on its way: the gates have let it
// through (the integration exists in the caller's tenant, the target stays
// inside the provider's API).
type outbound struct {
	proxy.Call
	q   *request
	fwd *proxy.Forwarder // the provider's own (its own trust store)
	via string           // "proxy" | "execute"
	ref vault.Ref        // the integration as prepare read it
}

// event is o's proxy.request audit event; the detail is "<via> <method>"
// and suffix.
func (o outbound) event(outcome string, status int, suffix string) audit.Event {
	ev := o.q.event(audit.ActionProxyRequest, o.q.sub.Tenant, o.q.id, o.via+" "+o.Method+suffix)
	ev.Outcome, ev.TargetHost, ev.HTTPStatus = outcome, o.Base.Host, status
	return ev
}

// call makes the outbound request (proxy.Forwarder.Call: the token, the
// forced refresh on a 401, the redirect check) and marks the integration
// used when an answer comes back.
func (s *Server) call(ctx context.Context, o outbound) (*http.Response, error) {
	tenant, id := o.q.sub.Tenant, o.q.id
	resp, err := o.fwd.Call(ctx, o.Call, &integrationTokens{s: s, c: o.q.caller(), tenant: tenant, id: id, ref: o.ref})
	if err != nil {
		return nil, err
	}
	s.vault.MarkUsed(tenant, id)
	return resp, nil
}

// integrationTokens is the vault as proxy.Tokens, for one caller and
// integration. It counts forced refreshes and the 401s passed on because
// the vault throttled one.
type integrationTokens struct {
	s          *Server
	c          vault.Caller
	tenant, id string
	ref        vault.Ref // used once: the first token comes from prepare's read
	used       bool
}

func (t *integrationTokens) Token(ctx context.Context) (secret.String, error) {
	if !t.used {
		t.used = true
		lease, err := t.s.vault.AccessTokenFrom(ctx, t.c, t.ref)
		return lease.Token, err
	}
	lease, err := t.s.vault.AccessToken(ctx, t.c, t.tenant, t.id)
	return lease.Token, err
}

func (t *integrationTokens) Renew(ctx context.Context, rejected secret.String) (secret.String, bool, error) {
	lease, err := t.s.vault.ForceRefresh(ctx, t.c, t.tenant, t.id, vault.Lease{Token: rejected})
	switch {
	case errors.Is(err, vault.ErrRefreshThrottled):
		t.s.metrics.forcedRefreshThrottled.Inc()
		return secret.String{}, false, nil
	case err != nil:
		return secret.String{}, false, err
	}
	t.s.metrics.forcedRefresh.Inc()
	return lease.Token, true, nil
}

// prepare runs the gates common to proxy and execute: the integration
// must exist in the caller's tenant (else not_found, identical for a
// foreign one), the method must be one that is forwarded, and the target
// must stay inside the provider's API. Refusals after the first are
// audited.
func (s *Server) prepare(q *request, rawPath, rawQuery, method, via string) (outbound, bool) {
	w, r := q.w, q.r
	ctx := r.Context()
	// One read of the integration serves the gates below and the token's
	// fast path (vault.AccessTokenFrom).
	ref, err := s.vault.Lookup(ctx, q.sub.Tenant, q.id)
	if err != nil {
		s.fail(w, r, err, msgIntegrationNotFound)
		return outbound{}, false
	}
	_, ok := s.vault.Provider(ref.Provider)
	fwd := s.forwarder(ref.Provider)
	if !ok || fwd == nil || ref.APIBase == nil {
		s.log.ErrorContext(ctx, "integration's provider is not configured", "request_id", requestID(ctx), "provider", ref.Provider)
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return outbound{}, false
	}
	o := outbound{Call: proxy.Call{Method: method, Base: ref.APIBase}, q: q, fwd: fwd, via: via, ref: ref}
	if proxy.NeverForwarded(method) {
		// Refused before any token is touched.
		o.Method = strings.ToUpper(method)
		_ = s.record(ctx, o.event(audit.OutcomeDenied, http.StatusMethodNotAllowed, ": method_not_allowed"))
		writeError(w, r, api.CodeMethodNotAllowed, "method "+o.Method+" is not forwarded")
		return outbound{}, false
	}
	if o.URL, err = proxy.Target(ref.APIBase, rawPath, rawQuery); err != nil {
		_ = s.record(ctx, o.event(audit.OutcomeDenied, http.StatusForbidden, ": egress_denied"))
		writeError(w, r, api.CodeEgressDenied, msgEgress)
		return outbound{}, false
	}
	return o, true
}

// proxy streams the caller's request to the provider and the answer back.
func (s *Server) proxy(q *request) {
	w, r := q.w, q.r
	// proxy.Target allows one leading "/" and refuses "//host"; prefixing
	// "/" makes ".../proxy//host/x" such a network-path reference.
	o, ok := s.prepare(q, "/"+q.rest, r.URL.RawQuery, r.Method, "proxy")
	if !ok {
		return
	}
	o.Header = r.Header.Clone()
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		o.Body, o.ContentLength = r.Body, r.ContentLength
	} else {
		o.Body, o.ContentLength = http.NoBody, 0
		o.Replay = func() io.Reader { return http.NoBody }
	}
	ctx := r.Context()
	resp, err := s.call(ctx, o)
	if err != nil {
		s.outboundFailed(o, err)
		return
	}
	defer resp.Body.Close()
	if s.record(ctx, o.event(audit.OutcomeSuccess, resp.StatusCode, "")) != nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	if err := proxy.Relay(w, resp); err != nil {
		s.log.WarnContext(ctx, "upstream body ended with error", "request_id", requestID(ctx), "err", err)
		// Abort so the caller sees a broken response, not a silently
		// truncated one.
		panic(http.ErrAbortHandler)
	}
}

// execute is the JSON form of proxy: bounded both ways.
func (s *Server) execute(q *request) {
	w, r := q.w, q.r
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
	query := url.Values{}
	for k, v := range req.Query {
		query.Set(k, v)
	}
	// req.Path goes to proxy.Target as given: stripping its leading "/"
	// here would turn "//host/x" into "/host/x" and slip past the
	// network-path check.
	o, ok := s.prepare(q, req.Path, query.Encode(), req.Method, "execute")
	if !ok {
		return
	}
	o.Header = http.Header{}
	for k, v := range req.Headers {
		o.Header.Set(k, v)
	}
	body := req.Body
	o.Body, o.ContentLength = bytes.NewReader(body), int64(len(body))
	o.Replay = func() io.Reader { return bytes.NewReader(body) }
	ctx := r.Context()
	resp, err := s.call(ctx, o)
	if err != nil {
		s.outboundFailed(o, err)
		return
	}
	defer resp.Body.Close()
	rb, held, err := s.bufs.ReadAnswer(resp.Body, s.maxBody)
	defer s.bufs.Release(held)
	switch {
	case errors.Is(err, proxy.ErrBufferBudget):
		s.outboundFailed(o, err)
		return
	case err != nil:
		s.outboundFailed(o, errors.Join(proxy.ErrUpstreamUnreachable, err))
		return
	case int64(len(rb)) > s.maxBody:
		_ = s.record(ctx, o.event(audit.OutcomeFailure, http.StatusBadGateway, ": response too large"))
		writeError(w, r, api.CodeUpstreamUnreachable, "upstream response exceeds the execute size limit")
		return
	}
	if s.record(ctx, o.event(audit.OutcomeSuccess, resp.StatusCode, "")) != nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(q.status)
	_ = proxy.EncodeExecuteResponse(w, resp.StatusCode, resp.Header, rb)
}
