package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// errRow maps the errors that match target (errors.Is) to an answer.
type errRow struct {
	target error
	code   api.Code
	// message is the public message; "" means the route's own: its
	// not-found message for not_found, the vault's reason for bad_request.
	message string
	// kind labels the failure in the detail of a failed write's audit
	// event (a failed outbound call's event carries the code instead).
	kind string
	// denied: a failed outbound call is audited as denied, not failed.
	denied bool
}

const msgConflict = "already exists or changed concurrently"

// errTable is every error the edge answers specially, first match wins.
// Anything else is errUnavailable. Messages are fixed and secret-free:
// the cause goes to the log, never to the caller.
var errTable = []errRow{
	{target: proxy.ErrRedirectEgress, code: api.CodeEgressDenied, message: "upstream redirected outside the provider's API; not followed", kind: "egress_denied", denied: true},
	{target: proxy.ErrUpstreamTimeout, code: api.CodeUpstreamTimeout, message: "upstream did not answer in time", kind: "upstream_timeout"},
	{target: proxy.ErrUpstreamUnreachable, code: api.CodeUpstreamUnreachable, message: "upstream unreachable", kind: "upstream_unreachable"},
	{target: proxy.ErrBufferBudget, code: api.CodeIntegrationUnavailable, message: "vaultd is buffering too many execute answers; retry later or use the proxy route, which streams", kind: "buffer_budget"},
	{target: vault.ErrNotFound, code: api.CodeNotFound, kind: "not_found"},
	{target: vault.ErrTenantNotFound, code: api.CodeNotFound, kind: "tenant_not_found"},
	{target: vault.ErrTenantDisabled, code: api.CodeTenantDisabled, message: "tenant is disabled", kind: "tenant_disabled"},
	{target: vault.ErrBadRequest, code: api.CodeBadRequest, kind: "bad_request"},
	{target: vault.ErrReauthorizationRequired, code: api.CodeReauthorizationRequired, message: msgReauth, kind: "reauthorization_required"},
	{target: vault.ErrTenantExists, code: api.CodeConflict, message: msgConflict, kind: "exists"},
	{target: vault.ErrConflict, code: api.CodeConflict, message: msgConflict, kind: "conflict"},
}

// errUnavailable answers every error errTable does not list (the vault's
// ErrUnavailable among them: the store, the HSM or the lock failed).
var errUnavailable = errRow{code: api.CodeIntegrationUnavailable, message: msgUnavailable, kind: "unavailable"}

// errKeyUnavailable answers a tenant or key operation (tenant creation,
// DEK rotation, rewrap) that failed outside the table: the HSM (away, no
// usable wrapping scheme, a key missing) or the store. Never
// integration_unavailable, which would point at an integration.
var errKeyUnavailable = errRow{code: api.CodeKeyUnavailable, message: "the key operation could not be completed (HSM or store unavailable); nothing was changed, retry later", kind: "key_unavailable"}

// keyOpErr is lookupErr for a tenant or key operation: the table's row,
// else errKeyUnavailable. ok is false unless the table knew err or the
// HSM caused it (those are logged by the caller all the same).
func keyOpErr(err error) (row errRow, ok bool) {
	if row, ok := lookupErr(err); ok {
		return row, true
	}
	for _, k := range hsmFailures {
		if errors.Is(err, k) {
			return errKeyUnavailable, true
		}
	}
	return errKeyUnavailable, false
}

// hsmFailures are the hsm sentinels of a failed key operation.
var hsmFailures = []error{hsm.ErrUnavailable, hsm.ErrMechanism, hsm.ErrModule, hsm.ErrClosed,
	hsm.ErrKEKNotFound, hsm.ErrKEKInvalid, hsm.ErrTenantKeyNotFound}

// errCallerGaveUp answers an outbound call whose caller went away (there
// is nobody to read it; the attempt is on record all the same).
var errCallerGaveUp = errRow{code: api.CodeUpstreamUnreachable, message: "request cancelled", kind: "upstream_unreachable"}

// lookupErr returns err's row; ok is false for errUnavailable.
func lookupErr(err error) (row errRow, ok bool) {
	for _, row := range errTable {
		if errors.Is(err, row.target) {
			return row, true
		}
	}
	return errUnavailable, false
}

// publicMessage is what the caller reads for err under row.
func (row errRow) publicMessage(err error, notFound string) string {
	switch {
	case row.message != "":
		return row.message
	case row.code == api.CodeNotFound:
		return notFound
	}
	var br *vault.BadRequestError
	if errors.As(err, &br) {
		return br.Reason
	}
	return "bad request"
}

// fail answers a failed vault call. notFound is the route's one message
// for every missing-or-foreign case, so another tenant's record answers
// exactly like a missing one. It returns the row, whose status and kind
// the caller's audit event takes.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error, notFound string) errRow {
	row, ok := lookupErr(err)
	if !ok {
		s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()), "err", err)
	}
	writeError(w, r, row.code, row.publicMessage(err, notFound))
	return row
}

// failedWrite is the audit event of a write that failed with err (its
// success event commits with the change, inside the vault).
func failedWrite(ev audit.Event, err error) audit.Event {
	row, _ := lookupErr(err)
	ev.Outcome, ev.HTTPStatus = audit.OutcomeFailure, row.code.Status()
	return ev
}

// errKind is the kind of err, for audit details.
func errKind(err error) string {
	row, _ := lookupErr(err)
	return row.kind
}

// outboundFailed answers a failed proxy or execute call and audits it as
// a proxy.request event (except a missing integration, which answers like
// any unknown id).
func (s *Server) outboundFailed(o outbound, err error) {
	w, r := o.q.w, o.q.r
	row, ok := lookupErr(err)
	gaveUp := !ok && r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
	switch {
	case row.code == api.CodeNotFound:
		// Vanished between the metadata read and the token read.
		writeError(w, r, row.code, msgIntegrationNotFound)
		return
	case gaveUp:
		row = errCallerGaveUp
	case !ok:
		s.log.ErrorContext(r.Context(), "outbound call failed", "request_id", requestID(r.Context()), "err", err)
	}
	outcome, suffix := audit.OutcomeFailure, ": "+string(row.code)
	if row.denied {
		outcome = audit.OutcomeDenied
	}
	if gaveUp {
		suffix = " (caller gave up)" + suffix
	}
	_ = s.record(r.Context(), o.event(outcome, row.code.Status(), suffix))
	writeError(w, r, row.code, row.publicMessage(err, msgIntegrationNotFound))
}
