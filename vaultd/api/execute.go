package api

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
)

// ExecuteRequest is the body of POST /v1/integrations/{id}/execute: the
// proxied call described as JSON. Path is relative to the provider's
// api_base_url. At most one of Body (UTF-8 text) and BodyBase64 is set.
type ExecuteRequest struct {
	Method     string            `json:"method"`
	Path       string            `json:"path"`
	Query      map[string]string `json:"query,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       *string           `json:"body,omitempty"`
	BodyBase64 *string           `json:"body_base64,omitempty"`
}

// ExecuteResponse is the upstream's answer to an execute call: its status,
// its headers (several values of one joined with ", ") and its body, as
// Body when it is UTF-8 that JSON-escaping would not more than double, else
// as BodyBase64.
type ExecuteResponse struct {
	Status     int               `json:"status"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body,omitempty"`
	BodyBase64 *string           `json:"body_base64,omitempty"`
}

// HTTPResponse turns an execute answer into an *http.Response, so callers
// can treat proxy and execute alike. A body_base64 that does not decode is
// an error.
func (er ExecuteResponse) HTTPResponse() (*http.Response, error) {
	var body []byte
	switch {
	case er.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*er.BodyBase64)
		if err != nil {
			return nil, fmt.Errorf("api: body_base64: %w", err)
		}
		body = b
	case er.Body != nil:
		body = []byte(*er.Body)
	}
	h := http.Header{}
	for k, v := range er.Headers {
		h.Set(k, v)
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", er.Status, http.StatusText(er.Status)), StatusCode: er.Status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}, nil
}
