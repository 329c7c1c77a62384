package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"
)

// ExecuteRequest is the body of POST /v1/integrations/{id}/execute
// (docs/api.md): the proxied call described as JSON.
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

// bodyFields gives the request body's wire field: "body" for UTF-8,
// else "body_base64".
func bodyFields(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// escapedLen is the length of b as the inside of a JSON string (the
// escaping encoding/json applies without HTML escaping): what "body" costs.
func escapedLen(b []byte) int64 {
	n := int64(0)
	for i := 0; i < len(b); {
		e, size := jsonEscape(b[i:])
		if e != "" {
			n += int64(len(e))
		} else {
			n += int64(size)
		}
		i += size
	}
	return n
}

// ctlEscapes are the "\u00XX" forms of the control characters, built
// once so that escaping allocates nothing per byte.
var ctlEscapes = func() (t [0x20]string) {
	const hex = "0123456789abcdef"
	for c := range t {
		t[c] = `\u00` + string(hex[c>>4]) + string(hex[c&0xf])
	}
	return t
}()

// jsonEscape returns the escape encoding/json writes (HTML escaping off)
// for the character at the start of b, or "" when it is written as is;
// size is the character's length in bytes. b must be valid UTF-8.
func jsonEscape(b []byte) (esc string, size int) {
	c := b[0]
	switch {
	case c == '"':
		return `\"`, 1
	case c == '\\':
		return `\\`, 1
	case c == '\n':
		return `\n`, 1
	case c == '\r':
		return `\r`, 1
	case c == '\t':
		return `\t`, 1
	case c == '\b':
		return `\b`, 1
	case c == '\f':
		return `\f`, 1
	case c < 0x20:
		return ctlEscapes[c], 1
	case c < utf8.RuneSelf:
		return "", 1
	}
	r, size := utf8.DecodeRune(b)
	if r == '\u2028' {
		return `\u2028`, size
	}
	if r == '\u2029' {
		return `\u2029`, size
	}
	return "", size
}

// useBase64 decides how body travels: as "body_base64" when it is not
// valid UTF-8, or when escaping would more than double it (a body of
// control bytes grows sixfold as "\u00XX"; base64 grows by a third).
func useBase64(b []byte) bool {
	return !utf8.Valid(b) || escapedLen(b) > 2*int64(len(b))+2
}

// EncodeExecuteResponse writes {"status":..,"headers":{..},"body":".."} to
// w: multi-valued headers joined with ", ", and "body_base64" instead of
// "body" when body is not valid UTF-8 or would more than double in size
// escaped. h should already have passed InboundHeaders (Forwarder.Do does
// that). Header values that are not UTF-8 (obs-text) are carried with
// U+FFFD replacements. The body is streamed in chunks, never copied or
// escaped whole: an answer costs its own size plus a small buffer.
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
	var head bytes.Buffer
	enc := json.NewEncoder(&head)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(hm); err != nil {
		return err
	}
	field := "body"
	if useBase64(body) {
		field = "body_base64"
	}
	hdr := fmt.Sprintf(`{"status":%d,"headers":%s,%q:"`, status, bytes.TrimRight(head.Bytes(), "\n"), field)
	if _, err := io.WriteString(w, hdr); err != nil {
		return err
	}
	if field == "body_base64" {
		bw := base64.NewEncoder(base64.StdEncoding, w)
		if _, err := bw.Write(body); err != nil {
			return err
		}
		if err := bw.Close(); err != nil {
			return err
		}
	} else if err := writeJSONStringBody(w, body); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\"}\n")
	return err
}

// writeJSONStringBody writes valid UTF-8 b as the inside of a JSON string,
// escaped exactly as encoding/json does (HTML escaping off), through a
// small buffer.
func writeJSONStringBody(w io.Writer, b []byte) error {
	const flushAt = 16 << 10
	buf := make([]byte, 0, flushAt+8)
	for i := 0; i < len(b); {
		e, size := jsonEscape(b[i:])
		if e != "" {
			buf = append(buf, e...)
		} else {
			buf = append(buf, b[i:i+size]...)
		}
		i += size
		if len(buf) >= flushAt {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	_, err := w.Write(buf)
	return err
}
