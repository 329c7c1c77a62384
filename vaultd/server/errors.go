package server

import (
	"encoding/json"
	"net/http"

	"github.com/vaultd/vaultd/vaultd/api"
)

// Public messages. They are fixed strings: internal causes go to the log,
// never to the caller. msgIntegrationNotFound is used for every "no such
// integration in your tenant" case so that another tenant's integration
// answers exactly like a missing one.
const (
	msgIntegrationNotFound = "integration not found"
	msgTenantNotFound      = "tenant not found"
	msgNotFound            = "no such endpoint"
	msgUnavailable         = "integration temporarily unavailable"
	msgReauth              = "the integration must be re-authorized by the tenant"
	msgForbidden           = "not permitted"
	msgUnauthenticated     = "a valid tenant-context assertion is required"
	msgEgress              = "request target is outside the provider's API"
	msgInternal            = "internal error"
)

// writeError writes the API's error body (api.ErrorBody) with the code's
// status.
func writeError(w http.ResponseWriter, r *http.Request, code api.Code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	// Marks vaultd's own errors apart from upstream answers on the proxy
	// route (clients and the Go client package rely on it).
	h.Set(api.HeaderError, string(code))
	w.WriteHeader(code.Status())
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: message, RequestID: requestID(r.Context())}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
