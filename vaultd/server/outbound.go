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
	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// outbound is a proxy or execute call the gates have let through.
type outbound struct {
	proxy.Call
	fwd     *proxy.Forwarder // the provider's own (its own trust store)
	via     string           // "proxy" | "execute"
	tenant  string
	id      string
	subject policy.Subject
	caller  vault.Caller
}

// call makes the outbound request (proxy.Forwarder.Call: the token, the
// forced refresh on a 401, the redirect check) and marks the integration
// used when an answer comes back.
func (s *Server) call(ctx context.Context, o outbound) (*http.Response, error) {
	resp, err := o.fwd.Call(ctx, o.Call, &integrationTokens{s: s, c: o.caller, tenant: o.tenant, id: o.id})
	if err != nil {
		return nil, err
	}
	s.vault.MarkUsed(o.tenant, o.id)
	return resp, nil
}

// integrationTokens is the vault as proxy.Tokens, for one caller and
// integration. It counts forced refreshes and the 401s passed on because
// the vault throttled one.
type integrationTokens struct {
	s          *Server
	c          vault.Caller
	tenant, id string
}

func (t *integrationTokens) Token(ctx context.Context) (secret.String, error) {
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
	if proxy.NeverForwarded(method) {
		// Refused before any token is touched.
		m := strings.ToUpper(method)
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
	return outbound{Call: proxy.Call{Method: method, URL: target, Base: p.APIBase}, fwd: fwd, via: via,
		tenant: sub.Tenant, id: id, subject: sub, caller: s.caller(r, sub)}, true
}

func (s *Server) auditCall(ctx context.Context, o outbound, status int) error {
	return s.record(ctx, audit.Event{TenantID: o.tenant, IntegrationID: o.id, Actor: o.subject.Principal, OnBehalfOf: o.subject.OnBehalfOf,
		Action: audit.ActionProxyRequest, Outcome: audit.OutcomeSuccess, TargetHost: o.URL.Host,
		HTTPStatus: status, Detail: o.via + " " + o.Method})
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
	o.Header = r.Header.Clone()
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody {
		o.Body, o.ContentLength = r.Body, r.ContentLength
	} else {
		o.Body, o.ContentLength = http.NoBody, 0
		o.Replay = func() io.Reader { return http.NoBody }
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
	if err := proxy.Relay(w, resp); err != nil {
		s.log.WarnContext(ctx, "upstream body ended with error", "request_id", requestID(ctx), "err", err)
		// Abort so the caller sees a broken response, not a silently
		// truncated one.
		panic(http.ErrAbortHandler)
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
		s.outboundFailed(w, r, o, err)
		return
	}
	defer resp.Body.Close()
	rb, held, err := s.bufs.ReadAnswer(resp.Body, s.maxBody)
	defer s.bufs.Release(held)
	if errors.Is(err, proxy.ErrBufferBudget) {
		s.outboundFailed(w, r, o, err)
		return
	}
	if err != nil {
		s.outboundFailed(w, r, o, errors.Join(proxy.ErrUpstreamUnreachable, err))
		return
	}
	if int64(len(rb)) > s.maxBody {
		_ = s.record(ctx, audit.Event{TenantID: o.tenant, IntegrationID: o.id, Actor: sub.Principal, OnBehalfOf: sub.OnBehalfOf,
			Action: audit.ActionProxyRequest, Outcome: audit.OutcomeFailure, TargetHost: o.URL.Host,
			HTTPStatus: http.StatusBadGateway, Detail: "execute " + o.Method + ": response too large"})
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
