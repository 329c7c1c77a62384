package proxy

import (
	"net/http"
	"strings"
	"testing"
)

func TestOutboundHeaders(t *testing.T) {
	in := http.Header{
		"Authorization":       {"Bearer caller"},
		"Cookie":              {"sid=1"},
		"X-Tenant-Context":    {"jwt"},
		"Proxy-Authorization": {"Basic x"},
		"Connection":          {"keep-alive, X-Hop, x-other"},
		"X-Hop":               {"1"},
		"X-Other":             {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Connection":    {"keep-alive"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-T"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Host":                {"evil.example"},
		"Forwarded":           {"for=1.2.3.4"},
		"X-Forwarded-For":     {"1.2.3.4"},
		"X-Forwarded-Host":    {"evil"},
		"X-Real-Ip":           {"1.2.3.4"},
		"Via":                 {"1.1 x"},
		"Alt-Used":            {"evil"},
		"Accept-Encoding":     {"gzip, br"},
		"Range":               {"bytes=0-3"},
		"Content-Length":      {"12"},
		"Content-Type":        {"application/json"},
		"Accept":              {"application/json"},
		"X-Custom":            {"a", "b"},
		"Idempotency-Key":     {"k1"},
		"authorization":       {"non-canonical too"},
	}
	orig := in.Clone()
	out := OutboundHeaders(in)
	for _, k := range []string{"Authorization", "Cookie", "X-Tenant-Context", "Proxy-Authorization", "Connection", "X-Hop",
		"X-Other", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Forwarded",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip", "Via", "Alt-Used", "Accept-Encoding", "Range", "Content-Length"} {
		if _, ok := out[k]; ok {
			t.Errorf("%s was kept", k)
		}
	}
	for k := range out {
		if strings.EqualFold(k, "authorization") {
			t.Errorf("non-canonical %s kept", k)
		}
	}
	if out.Get("Content-Type") != "application/json" || out.Get("Accept") != "application/json" ||
		strings.Join(out.Values("X-Custom"), ",") != "a,b" || out.Get("Idempotency-Key") != "k1" {
		t.Errorf("end-to-end headers lost: %v", out)
	}
	if len(in) != len(orig) || in.Get("Authorization") != "Bearer caller" {
		t.Error("input modified")
	}
}

func TestInboundHeaders(t *testing.T) {
	tok := "tok.en/1"
	ss := tokenVariants(tok)
	in := http.Header{
		"Content-Type":              {"application/json"},
		"X-Echo":                    {"Bearer " + tok, "plain"},
		"X-Echo-Query":              {"a=tok.en%2F1"},
		"Location":                  {"https://other.example/cb?t=" + tok},
		"Www-Authenticate":          {`Bearer error="invalid_token"`},
		"Set-Cookie":                {"sid=upstream"},
		"Connection":                {"X-Hop"},
		"X-Hop":                     {"1"},
		"Keep-Alive":                {"timeout=5"},
		"Transfer-Encoding":         {"chunked"},
		"Content-Length":            {"100"},
		"Alt-Svc":                   {`h3=":443"`},
		"Strict-Transport-Security": {"max-age=1"},
		"X-Leak-" + tok:             {"1"},
		"Etag":                      {`"v1"`},
	}
	out := InboundHeaders(in, ss...)
	for _, k := range []string{"Set-Cookie", "Connection", "X-Hop", "Keep-Alive", "Transfer-Encoding", "Content-Length",
		"Alt-Svc", "Strict-Transport-Security", "X-Leak-" + tok} {
		if _, ok := out[k]; ok {
			t.Errorf("%s kept", k)
		}
	}
	for k, vv := range out {
		for _, v := range vv {
			if strings.Contains(k+v, tok) || strings.Contains(v, "tok.en%2F1") {
				t.Errorf("token leaked in %s: %s", k, v)
			}
		}
	}
	if got := out.Values("X-Echo"); len(got) != 2 || got[0] != "Bearer [REDACTED]" || got[1] != "plain" {
		t.Errorf("X-Echo = %q", got)
	}
	if out.Get("Location") != "https://other.example/cb?t=[REDACTED]" || out.Get("X-Echo-Query") != "a=[REDACTED]" {
		t.Errorf("Location %q / X-Echo-Query %q", out.Get("Location"), out.Get("X-Echo-Query"))
	}
	if out.Get("Www-Authenticate") == "" || out.Get("Etag") != `"v1"` || out.Get("Content-Type") != "application/json" {
		t.Errorf("end-to-end headers lost: %v", out)
	}
	if in.Get("X-Echo") != "Bearer "+tok {
		t.Error("input modified")
	}
}
