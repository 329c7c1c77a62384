package server

import (
	"encoding/json"
	"net/http"
)

// Error codes of CONTRACT §4 (plus internal/method_not_allowed, which the
// contract permits as extensions).
const (
	CodeBadRequest              = "bad_request"
	CodeUnauthenticated         = "unauthenticated"
	CodeForbidden               = "forbidden"
	CodeEgressDenied            = "egress_denied"
	CodeNotFound                = "not_found"
	CodeMethodNotAllowed        = "method_not_allowed"
	CodeConflict                = "conflict"
	CodeReauthorizationRequired = "reauthorization_required"
	CodePayloadTooLarge         = "payload_too_large"
	CodeInternal                = "internal"
	CodeUpstreamUnreachable     = "upstream_unreachable"
	CodeIntegrationUnavailable  = "integration_unavailable"
	CodeUpstreamTimeout         = "upstream_timeout"
)

var codeStatus = map[string]int{
	CodeBadRequest:              http.StatusBadRequest,
	CodeUnauthenticated:         http.StatusUnauthorized,
	CodeForbidden:               http.StatusForbidden,
	CodeEgressDenied:            http.StatusForbidden,
	CodeNotFound:                http.StatusNotFound,
	CodeMethodNotAllowed:        http.StatusMethodNotAllowed,
	CodeConflict:                http.StatusConflict,
	CodeReauthorizationRequired: http.StatusConflict,
	CodePayloadTooLarge:         http.StatusRequestEntityTooLarge,
	CodeInternal:                http.StatusInternalServerError,
	CodeUpstreamUnreachable:     http.StatusBadGateway,
	CodeIntegrationUnavailable:  http.StatusServiceUnavailable,
	CodeUpstreamTimeout:         http.StatusGatewayTimeout,
}

// StatusOf returns the HTTP status of an error code.
func StatusOf(code string) int {
	if s, ok := codeStatus[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

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

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// writeError writes the contract error body.
func writeError(w http.ResponseWriter, r *http.Request, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	// Marks vaultd's own errors apart from upstream answers on the proxy
	// route (clients and the Go client package rely on it).
	h.Set("X-Vaultd-Error", code)
	w.WriteHeader(StatusOf(code))
	_ = json.NewEncoder(w).Encode(errorBody{Error: errorDetail{Code: code, Message: message, RequestID: requestID(r.Context())}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
