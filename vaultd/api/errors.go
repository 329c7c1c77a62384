package api

import "net/http"

// Code is the machine-readable code of an error answer.
type Code string

// The error codes and, in Status, the HTTP status each is answered with.
const (
	CodeBadRequest              Code = "bad_request"
	CodeUnauthenticated         Code = "unauthenticated"
	CodeForbidden               Code = "forbidden"
	CodeEgressDenied            Code = "egress_denied"
	CodeNotFound                Code = "not_found"
	CodeMethodNotAllowed        Code = "method_not_allowed"
	CodeConflict                Code = "conflict"
	CodeReauthorizationRequired Code = "reauthorization_required"
	CodePayloadTooLarge         Code = "payload_too_large"
	CodeInternal                Code = "internal"
	CodeUpstreamUnreachable     Code = "upstream_unreachable"
	CodeIntegrationUnavailable  Code = "integration_unavailable"
	CodeUpstreamTimeout         Code = "upstream_timeout"
	// CodeTenantDisabled: the caller's tenant is disabled by an operator.
	CodeTenantDisabled Code = "tenant_disabled"
	// CodeKeyUnavailable: the HSM failed a key operation (tenant
	// creation, DEK rotation, rewrap); nothing was written.
	CodeKeyUnavailable Code = "key_unavailable"
)

var codeStatus = map[Code]int{
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
	CodeTenantDisabled:          http.StatusForbidden,
	CodeKeyUnavailable:          http.StatusServiceUnavailable,
}

// Status is the HTTP status vaultd answers code with; 500 for a code it
// does not know.
func (c Code) Status() int {
	if s, ok := codeStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Codes lists every error code, in the order docs/api.md shows them.
func Codes() []Code {
	return []Code{
		CodeBadRequest, CodeUnauthenticated, CodeForbidden, CodeEgressDenied, CodeNotFound,
		CodeMethodNotAllowed, CodeConflict, CodeReauthorizationRequired, CodePayloadTooLarge,
		CodeInternal, CodeUpstreamUnreachable, CodeIntegrationUnavailable, CodeUpstreamTimeout,
		CodeTenantDisabled, CodeKeyUnavailable,
	}
}

// ErrorBody is the body of every error vaultd answers itself:
// {"error":{"code":...,"message":...,"request_id":...}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody. Message is a fixed, secret-free
// text for people; programs go by Code.
type ErrorDetail struct {
	Code      Code   `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}
