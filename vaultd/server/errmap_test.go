package server

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The error table's answers, audit statuses and kinds are part of the API
// and the audit trail: pin them.
func TestErrTable(t *testing.T) {
	badReq := fmt.Errorf("wrapped: %w", &vault.BadRequestError{Reason: "unknown provider"})
	for _, c := range []struct {
		err     error
		code    api.Code
		status  int
		message string
		kind    string
	}{
		{vault.ErrNotFound, api.CodeNotFound, 404, "route's", "not_found"},
		{vault.ErrTenantNotFound, api.CodeNotFound, 404, "route's", "tenant_not_found"},
		{fmt.Errorf("wrapped: %w", vault.ErrTenantDisabled), api.CodeTenantDisabled, 403, "tenant is disabled", "tenant_disabled"},
		{badReq, api.CodeBadRequest, 400, "unknown provider", "bad_request"},
		{vault.ErrBadRequest, api.CodeBadRequest, 400, "bad request", "bad_request"},
		{vault.ErrReauthorizationRequired, api.CodeReauthorizationRequired, 409, msgReauth, "reauthorization_required"},
		{vault.ErrTenantExists, api.CodeConflict, 409, msgConflict, "exists"},
		{fmt.Errorf("%w: cas", vault.ErrConflict), api.CodeConflict, 409, msgConflict, "conflict"},
		{fmt.Errorf("%w: hsm down", vault.ErrUnavailable), api.CodeIntegrationUnavailable, 503, msgUnavailable, "unavailable"},
		{errors.New("anything"), api.CodeIntegrationUnavailable, 503, msgUnavailable, "unavailable"},
		{&proxy.UpstreamError{Kind: proxy.ErrUpstreamTimeout}, api.CodeUpstreamTimeout, 504, "upstream did not answer in time", "upstream_timeout"},
		{proxy.ErrUpstreamResponse, api.CodeUpstreamUnreachable, 502, "upstream unreachable", "upstream_unreachable"},
		{proxy.ErrRedirectEgress, api.CodeEgressDenied, 403, "upstream redirected outside the provider's API; not followed", "egress_denied"},
		{proxy.ErrBufferBudget, api.CodeIntegrationUnavailable, 503, "vaultd is buffering too many execute answers; retry later or use the proxy route, which streams", "buffer_budget"},
	} {
		row, _ := lookupErr(c.err)
		if row.code != c.code || row.code.Status() != c.status || row.kind != c.kind || row.publicMessage(c.err, "route's") != c.message {
			t.Errorf("%v: %s %d %q %q, want %s %d %q %q", c.err, row.code, row.code.Status(), row.publicMessage(c.err, "route's"), row.kind,
				c.code, c.status, c.message, c.kind)
		}
	}
	if errCallerGaveUp.code.Status() != http.StatusBadGateway {
		t.Fatal("caller-gave-up row")
	}
}

// A tenant or key operation that fails outside the table (the HSM, the
// store) answers key_unavailable, never integration_unavailable; the
// table's failures keep their rows.
func TestKeyOpErr(t *testing.T) {
	for _, c := range []struct {
		err  error
		code api.Code
		kind string
	}{
		{fmt.Errorf("%w: new DEK: %w", vault.ErrUnavailable, &hsm.Error{Msg: "hsm: token: C_Encrypt", Kind: hsm.ErrUnavailable}), api.CodeKeyUnavailable, "key_unavailable"},
		{fmt.Errorf("%w: new DEK: %w", vault.ErrUnavailable, hsm.ErrMechanism), api.CodeKeyUnavailable, "key_unavailable"},
		{fmt.Errorf("%w: %w", vault.ErrUnavailable, hsm.ErrTenantKeyNotFound), api.CodeKeyUnavailable, "key_unavailable"},
		{fmt.Errorf("%w: store", vault.ErrUnavailable), api.CodeKeyUnavailable, "key_unavailable"},
		{vault.ErrTenantExists, api.CodeConflict, "exists"},
		{vault.ErrTenantNotFound, api.CodeNotFound, "tenant_not_found"},
	} {
		row, _ := keyOpErr(c.err)
		if row.code != c.code || row.kind != c.kind {
			t.Errorf("%v: %s/%s, want %s/%s", c.err, row.code, row.kind, c.code, c.kind)
		}
	}
	if api.CodeKeyUnavailable.Status() != http.StatusServiceUnavailable {
		t.Fatal("key_unavailable is not 503")
	}
}
