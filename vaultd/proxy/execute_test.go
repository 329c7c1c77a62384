package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeExecuteRequest(t *testing.T) {
	req, err := DecodeExecuteRequest(strings.NewReader(`{"method":"post","path":"/contacts/1","query":{"k":"v","e":""},
		"headers":{"Content-Type":"application/json","x-idem":"1"},"body":"{\"a\":1}"}`), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := ExecuteRequest{Method: "POST", Path: "/contacts/1", Query: map[string]string{"k": "v", "e": ""},
		Headers: map[string]string{"Content-Type": "application/json", "x-idem": "1"}, Body: []byte(`{"a":1}`), HasBody: true}
	if !reflect.DeepEqual(req, want) {
		t.Fatalf("got %+v", req)
	}

	req, err = DecodeExecuteRequest(strings.NewReader(`{"method":"PUT","path":"f","body_base64":"/w=="}`), 100)
	if err != nil || !bytes.Equal(req.Body, []byte{0xff}) || !req.HasBody {
		t.Fatalf("base64: %+v %v", req, err)
	}
	req, err = DecodeExecuteRequest(strings.NewReader(` {"method":"GET","path":""} `), 100)
	if err != nil || req.HasBody || req.Body != nil || req.Method != "GET" {
		t.Fatalf("minimal: %+v %v", req, err)
	}
	// A custom method token is kept as given.
	if req, err = DecodeExecuteRequest(strings.NewReader(`{"method":"PROPFIND","path":"x"}`), 100); err != nil || req.Method != "PROPFIND" {
		t.Fatalf("custom method: %+v %v", req, err)
	}
}

func TestDecodeExecuteRequestRejects(t *testing.T) {
	cases := map[string]string{
		"unknown field":       `{"method":"GET","path":"x","tenant_id":"other"}`,
		"both bodies":         `{"method":"GET","path":"x","body":"a","body_base64":"YQ=="}`,
		"no method":           `{"path":"x"}`,
		"empty method":        `{"method":"","path":"x"}`,
		"bad method":          `{"method":"GET /","path":"x"}`,
		"trace":               `{"method":"TRACE","path":"x"}`,
		"connect":             `{"method":"CONNECT","path":"x"}`,
		"no path":             `{"method":"GET"}`,
		"null path":           `{"method":"GET","path":null}`,
		"number method":       `{"method":1,"path":"x"}`,
		"duplicate method":    `{"method":"GET","path":"x","method":"DELETE"}`,
		"duplicate header":    `{"method":"GET","path":"x","headers":{"X-A":"1","x-a":"2"}}`,
		"duplicate query":     `{"method":"GET","path":"x","query":{"a":"1","a":"2"}}`,
		"query array":         `{"method":"GET","path":"x","query":{"a":["1","2"]}}`,
		"query null":          `{"method":"GET","path":"x","query":null}`,
		"header number":       `{"method":"GET","path":"x","headers":{"X-A":1}}`,
		"header crlf":         `{"method":"GET","path":"x","headers":{"X-A":"1\r\nHost: evil"}}`,
		"header name space":   `{"method":"GET","path":"x","headers":{"X A":"1"}}`,
		"header name empty":   `{"method":"GET","path":"x","headers":{"":"1"}}`,
		"bad base64":          `{"method":"GET","path":"x","body_base64":"!!"}`,
		"base64 no padding":   `{"method":"GET","path":"x","body_base64":"YQ"}`,
		"trailing data":       `{"method":"GET","path":"x"} {}`,
		"trailing garbage":    `{"method":"GET","path":"x"}x`,
		"array":               `[{"method":"GET","path":"x"}]`,
		"empty":               ``,
		"truncated":           `{"method":"GET","path":"x"`,
		"invalid utf8":        "{\"method\":\"GET\",\"path\":\"\xff\"}",
		"nested unknown":      `{"method":"GET","path":"x","extra":{"a":1}}`,
		"body object":         `{"method":"GET","path":"x","body":{"a":1}}`,
		"headers not object":  `{"method":"GET","path":"x","headers":"X-A: 1"}`,
		"top-level string":    `"GET"`,
		"top-level null":      `null`,
		"key not string-like": `{1:"GET"}`,
	}
	for name, in := range cases {
		if _, err := DecodeExecuteRequest(strings.NewReader(in), 1<<20); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: err = %v, want ErrBadRequest", name, err)
		} else if r := SafeReason(err); r == "" || r == "invalid request" {
			t.Errorf("%s: no reason: %v", name, err)
		}
	}
	big := `{"method":"POST","path":"x","body":"` + strings.Repeat("a", 200) + `"}`
	if _, err := DecodeExecuteRequest(strings.NewReader(big), 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over limit: %v", err)
	}
	if _, err := DecodeExecuteRequest(strings.NewReader(big), int64(len(big))); err != nil {
		t.Errorf("exactly at limit: %v", err)
	}
}

func TestEncodeExecuteResponse(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}, "Vary": {"Accept"}}
	var buf bytes.Buffer
	if err := EncodeExecuteResponse(&buf, 201, h, []byte(`{"id":"<1>"}`)); err != nil {
		t.Fatal(err)
	}
	want := `{"status":201,"headers":{"Content-Type":"application/json","Vary":"Accept","X-Multi":"a, b"},"body":"{\"id\":\"<1>\"}"}` + "\n"
	if buf.String() != want {
		t.Fatalf("got  %s\nwant %s", buf.String(), want)
	}

	buf.Reset()
	if err := EncodeExecuteResponse(&buf, 200, nil, []byte{0xff, 0x00, 'a'}); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["body_base64"] != "/wBh" || got["body"] != nil || got["status"] != float64(200) {
		t.Fatalf("binary body: %s", buf.String())
	}
	if hm, ok := got["headers"].(map[string]any); !ok || len(hm) != 0 {
		t.Fatalf("headers must be an object: %s", buf.String())
	}

	buf.Reset()
	if err := EncodeExecuteResponse(&buf, 204, http.Header{}, nil); err != nil {
		t.Fatal(err)
	}
	if buf.String() != `{"status":204,"headers":{},"body":""}`+"\n" {
		t.Fatalf("empty body: %s", buf.String())
	}
}

// The request codec round-trips through its wire form.
func TestExecuteRequestRoundTrip(t *testing.T) {
	for _, e := range []ExecuteRequest{
		{Method: "POST", Path: "a", Body: []byte("text"), HasBody: true},
		{Method: "PUT", Path: "a", Body: []byte{0xfe, 0xff}, HasBody: true, Headers: map[string]string{"X-A": "1"}},
		{Method: "GET", Path: "/a/b", Query: map[string]string{"q": "a&b"}},
		{Method: "POST", Path: "a", Body: []byte{}, HasBody: true},
	} {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeExecuteRequest(bytes.NewReader(b), 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if d.Body == nil && e.Body != nil && len(e.Body) == 0 {
			d.Body = []byte{}
		}
		if !reflect.DeepEqual(d, e) {
			t.Fatalf("%s: got %+v want %+v", b, d, e)
		}
	}
}

func FuzzDecodeExecuteRequest(f *testing.F) {
	for _, s := range []string{
		`{"method":"GET","path":"contacts/1"}`,
		`{"method":"POST","path":"/contacts","query":{"k":"v"},"headers":{"Content-Type":"application/json"},"body":"{}"}`,
		`{"method":"PUT","path":"f","body_base64":"/w=="}`,
		`{"method":"GET","path":"x","body":"a","body_base64":"YQ=="}`,
		`{"method":"GET","path":"x","method":"GET"}`,
		`{"method":"GET","path":"x","headers":{"X":"a\r\nb"}}`,
		`{"method":"GET","path":null}`,
		`[]`, `{`, ``, `{"method":"\u0047ET","path":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := DecodeExecuteRequest(bytes.NewReader(in), 4096)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if _, err := checkMethod(req.Method); err != nil {
			t.Fatalf("accepted invalid method %q", req.Method)
		}
		for k, v := range req.Headers {
			if !isToken(k) || !validHeaderValue(v) {
				t.Fatalf("accepted invalid header %q: %q", k, v)
			}
		}
		// Re-encoding and decoding gives the same request.
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeExecuteRequest(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		if !bytes.Equal(again.Body, req.Body) || again.Method != req.Method || again.Path != req.Path ||
			again.HasBody != req.HasBody || len(again.Query) != len(req.Query) || len(again.Headers) != len(req.Headers) {
			t.Fatalf("round trip differs: %+v vs %+v", again, req)
		}
		// And the response encoder always produces valid JSON.
		var buf bytes.Buffer
		if err := EncodeExecuteResponse(&buf, 200, http.Header{"X": {req.Path}}, req.Body); err != nil || !json.Valid(buf.Bytes()) || !utf8.Valid(buf.Bytes()) {
			t.Fatalf("response encoding: %v %q", err, buf.Bytes())
		}
	})
}

// The streamed "body" is byte for byte what encoding/json writes for the
// same string (HTML escaping off), across chunk boundaries and for every
// class of escaped character.
func TestEncodeExecuteResponseMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "\"", "\\", "\n", "\t", "\x01", "\x7f", "\b", "\f", "\x1f", "\r", "é", "€", "\u2028", "\u2029", "<", "&", "😀", "/"}
	for i := 0; i < 200; i++ {
		var sb strings.Builder
		n := rng.IntN(40 << 10)
		for sb.Len() < n {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		body := []byte(sb.String())
		if useBase64(body) {
			continue
		}
		var got bytes.Buffer
		if err := EncodeExecuteResponse(&got, 200, nil, body); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(struct {
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    string            `json:"body"`
		}{200, map[string]string{}, string(body)})
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("case %d (%d bytes): streamed encoding differs from encoding/json", i, len(body))
		}
		if escapedLen(body) != int64(want.Len()-len(`{"status":200,"headers":{},"body":""}`+"\n")) {
			t.Fatalf("case %d: escapedLen %d disagrees with the encoding", i, escapedLen(body))
		}
	}
}

// A valid-UTF-8 body of control bytes would grow sixfold as "\u00XX": it
// travels as body_base64, and encoding it allocates a small buffer, not a
// multiple of the body (10 MB of them took RSS from 31 MB to 293 MB).
func TestEncodeExecuteResponseBoundedMemory(t *testing.T) {
	body := bytes.Repeat([]byte{0x01}, 10<<20)
	if !useBase64(body) {
		t.Fatal("control-byte body not sent as base64")
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	if err := EncodeExecuteResponse(io.Discard, 200, http.Header{"A": {"b"}}, body); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms1)
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("encoding a 10 MiB body allocated %d bytes", alloc)
	}
	text := bytes.Repeat([]byte("a\"b\n"), 10<<18) // 10 MiB of text needing escapes
	if useBase64(text) {
		t.Fatal("ordinary text sent as base64")
	}
	runtime.ReadMemStats(&ms0)
	if err := EncodeExecuteResponse(io.Discard, 200, nil, text); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms1)
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("encoding 10 MiB of text allocated %d bytes", alloc)
	}
	var buf bytes.Buffer
	if err := EncodeExecuteResponse(&buf, 200, nil, body[:3]); err != nil {
		t.Fatal(err)
	}
	if buf.String() != `{"status":200,"headers":{},"body_base64":"AQEB"}`+"\n" {
		t.Fatalf("control bytes: %s", buf.String())
	}
}
