package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"
)

// ExecuteRequest is the body of POST /v1/integrations/{id}/execute
// (CONTRACT §4): the proxied call described as JSON.
type ExecuteRequest struct {
	Method  string            // RFC 9110 token; standard methods normalised to upper case
	Path    string            // escaped path relative to api_base_url; judged by Target
	Query   map[string]string // query parameters, one value each
	Headers map[string]string // request headers, one value each
	Body    []byte            // from "body" (UTF-8) or "body_base64"
	HasBody bool              // "body" or "body_base64" was present
}

// maxExecuteFields bounds the query and headers maps; the byte limit
// bounds them too, but a cap keeps the work per request predictable.
const maxExecuteFields = 256

// DecodeExecuteRequest reads one execute request of at most limit bytes.
// It is strict: unknown or duplicate fields, JSON null where a value is
// required, trailing data, both "body" and "body_base64", a missing or
// invalid method, invalid header names or values are ErrBadRequest (with a
// SafeReason); more than limit bytes is ErrTooLarge.
func DecodeExecuteRequest(r io.Reader, limit int64) (ExecuteRequest, error) {
	var req ExecuteRequest
	if limit <= 0 {
		return req, badReq("no size limit")
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return req, errors.Join(badReq("unreadable body"), err)
	}
	if int64(len(data)) > limit {
		return req, ErrTooLarge
	}
	if !utf8.Valid(data) {
		return req, badReq("body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return req, err
	}
	seen := map[string]bool{}
	var haveMethod, havePath, haveBody, haveB64 bool
	var b64 string
	for dec.More() {
		key, err := nextKey(dec)
		if err != nil {
			return req, err
		}
		if seen[key] {
			return req, badReq("duplicate field")
		}
		seen[key] = true
		switch key {
		case "method":
			haveMethod = true
			if req.Method, err = decodeString(dec); err != nil {
				return req, err
			}
		case "path":
			havePath = true
			if req.Path, err = decodeString(dec); err != nil {
				return req, err
			}
		case "body":
			haveBody = true
			s, err := decodeString(dec)
			if err != nil {
				return req, err
			}
			req.Body = []byte(s)
		case "body_base64":
			haveB64 = true
			if b64, err = decodeString(dec); err != nil {
				return req, err
			}
		case "query":
			if req.Query, err = decodeStringMap(dec, false); err != nil {
				return req, err
			}
		case "headers":
			if req.Headers, err = decodeStringMap(dec, true); err != nil {
				return req, err
			}
		default:
			return req, badReq("unknown field")
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return req, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, badReq("trailing data")
	}
	switch {
	case !haveMethod:
		return req, badReq("method is required")
	case !havePath:
		return req, badReq("path is required")
	case haveBody && haveB64:
		return req, badReq("body and body_base64 are exclusive")
	}
	if req.Method, err = checkMethod(req.Method); err != nil {
		return req, err
	}
	if haveB64 {
		if req.Body, err = base64.StdEncoding.Strict().DecodeString(b64); err != nil {
			return req, badReq("invalid body_base64")
		}
	}
	req.HasBody = haveBody || haveB64
	for k, v := range req.Headers {
		if !isToken(k) {
			return req, badReq("invalid header name")
		}
		if !validHeaderValue(v) {
			return req, badReq("invalid header value")
		}
	}
	return req, nil
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return badReq("malformed JSON")
	}
	if t != d {
		return badReq("expected a JSON object")
	}
	return nil
}

func nextKey(dec *json.Decoder) (string, error) {
	t, err := dec.Token()
	if err != nil {
		return "", badReq("malformed JSON")
	}
	k, ok := t.(string)
	if !ok {
		return "", badReq("malformed JSON")
	}
	return k, nil
}

// decodeString reads a JSON string value; null and other types are
// refused (json.Decode into a string would silently accept null).
func decodeString(dec *json.Decoder) (string, error) {
	t, err := dec.Token()
	if err != nil {
		return "", badReq("malformed JSON")
	}
	s, ok := t.(string)
	if !ok {
		return "", badReq("expected a string")
	}
	return s, nil
}

// decodeStringMap reads {"name":"value",...}. Header names are compared
// case-insensitively for duplicates, since they are one header on the wire.
func decodeStringMap(dec *json.Decoder, headers bool) (map[string]string, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	m := map[string]string{}
	seen := map[string]bool{}
	for dec.More() {
		k, err := nextKey(dec)
		if err != nil {
			return nil, err
		}
		id := k
		if headers {
			id = textproto.CanonicalMIMEHeaderKey(k)
		}
		if seen[id] {
			return nil, badReq("duplicate field")
		}
		seen[id] = true
		if len(m) >= maxExecuteFields {
			return nil, badReq("too many fields")
		}
		if m[k], err = decodeString(dec); err != nil {
			return nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	return m, nil
}

// validHeaderValue: RFC 9110 field-value; no CR, LF or NUL, no other
// controls except HTAB.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// MarshalJSON encodes the request in its wire form ("body" when the body
// is UTF-8, else "body_base64"), for clients.
func (e ExecuteRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Method     string            `json:"method"`
		Path       string            `json:"path"`
		Query      map[string]string `json:"query,omitempty"`
		Headers    map[string]string `json:"headers,omitempty"`
		Body       *string           `json:"body,omitempty"`
		BodyBase64 *string           `json:"body_base64,omitempty"`
	}{Method: e.Method, Path: e.Path, Query: e.Query, Headers: e.Headers}
	if e.HasBody || len(e.Body) > 0 {
		w.Body, w.BodyBase64 = bodyFields(e.Body)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func bodyFields(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// EncodeExecuteResponse writes {"status":..,"headers":{..},"body":".."} to
// w: multi-valued headers joined with ", ", and "body_base64" instead of
// "body" when body is not valid UTF-8. h should already have passed
// InboundHeaders (Forwarder.Do does that). Header values that are not
// UTF-8 (obs-text) are carried with U+FFFD replacements.
func EncodeExecuteResponse(w io.Writer, status int, h http.Header, body []byte) error {
	hm := make(map[string]string, len(h))
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if prev, ok := hm[ck]; ok {
			hm[ck] = prev + ", " + strings.Join(h[k], ", ")
		} else {
			hm[ck] = strings.Join(h[k], ", ")
		}
	}
	resp := struct {
		Status     int               `json:"status"`
		Headers    map[string]string `json:"headers"`
		Body       *string           `json:"body,omitempty"`
		BodyBase64 *string           `json:"body_base64,omitempty"`
	}{Status: status, Headers: hm}
	resp.Body, resp.BodyBase64 = bodyFields(body)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(resp)
}
