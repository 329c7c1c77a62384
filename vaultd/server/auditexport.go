package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// queryAudit streams the audit events q.filter selects (auditFilter has
// parsed it and Decide has allowed its tenant) as NDJSON, then records
// audit.read: who exported, with which filters, how many events. The
// event needs the count, so it is written after the last line and before
// the answer ends; if it cannot be written the stream is reset, and the
// client sees a failed export rather than a complete one nobody recorded.
func (s *Server) queryAudit(q *request) {
	w, r := q.w, q.r
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	wrote := false
	events := 0
	err := s.audit.Query(r.Context(), q.filter, func(line []byte) error {
		if !wrote {
			w.WriteHeader(q.status)
			wrote = true
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			if _, err := w.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		events++
		return nil
	})
	ev := q.event(audit.ActionAuditRead, q.filter.TenantID, q.filter.IntegrationID, auditReadDetail(q.filter, events))
	if err != nil {
		s.log.ErrorContext(r.Context(), "audit query failed", "request_id", requestID(r.Context()), "wrote", wrote, "err", err)
		ev.Outcome, ev.HTTPStatus, ev.Detail = audit.OutcomeFailure, http.StatusServiceUnavailable, ev.Detail+" aborted"
		_ = s.record(r.Context(), ev)
		if wrote {
			// A cut export would still verify as a chain prefix: reset
			// the stream so the client sees a failure, not a 200.
			panic(http.ErrAbortHandler)
		}
		writeError(w, r, api.CodeIntegrationUnavailable, "audit store unavailable")
		return
	}
	ev.Outcome, ev.HTTPStatus = audit.OutcomeSuccess, q.status
	if s.record(r.Context(), ev) != nil {
		if wrote {
			panic(http.ErrAbortHandler)
		}
		writeError(w, r, api.CodeIntegrationUnavailable, "audit store unavailable")
		return
	}
	if !wrote {
		w.WriteHeader(q.status)
	}
}

// auditReadDetail lists the filters of an export (the validated values,
// so nothing but ids, actions, outcomes, times and numbers) and the count:
// "tenant_id=acme action=token.refresh limit=100 events=42".
func auditReadDetail(f audit.Filter, events int) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("tenant_id", f.TenantID)
	add("integration_id", f.IntegrationID)
	add("action", f.Action)
	add("actor", f.Actor)
	add("outcome", f.Outcome)
	add("request_id", f.RequestID)
	if !f.Since.IsZero() {
		add("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		add("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.AfterSeq != 0 {
		add("after_seq", strconv.FormatUint(f.AfterSeq, 10))
	}
	if f.Limit != 0 {
		add("limit", strconv.Itoa(f.Limit))
	}
	parts = append(parts, "events="+strconv.Itoa(events))
	return strings.Join(parts, " ")
}
