package server

import (
	"net/http"

	"github.com/vaultd/vaultd/vaultd/api"
)

// queryAudit streams the audit events q.filter selects (auditFilter has
// parsed it and Decide has allowed its tenant) as NDJSON.
func (s *Server) queryAudit(q *request) {
	w, r := q.w, q.r
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	wrote := false
	err := s.audit.Query(r.Context(), q.filter, func(line []byte) error {
		if !wrote {
			w.WriteHeader(q.status)
			wrote = true
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if len(line) == 0 || line[len(line)-1] != '\n' {
			_, err := w.Write([]byte{'\n'})
			return err
		}
		return nil
	})
	if err != nil {
		s.log.ErrorContext(r.Context(), "audit query failed", "request_id", requestID(r.Context()), "wrote", wrote, "err", err)
		if wrote {
			// A cut export would still verify as a chain prefix: reset
			// the stream so the client sees a failure, not a 200.
			panic(http.ErrAbortHandler)
		}
		writeError(w, r, api.CodeIntegrationUnavailable, "audit store unavailable")
		return
	}
	if !wrote {
		w.WriteHeader(q.status)
	}
}
