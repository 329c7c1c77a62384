package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop are the RFC 9110 §7.6.1 connection-specific fields (plus the
// legacy Proxy-Connection): they describe one hop and never travel on.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
}

// outboundDrop: caller headers that must not reach the provider.
var outboundDrop = map[string]bool{
	// Credentials and identity of the caller towards vaultd (docs/api.md).
	"Authorization":    true,
	"Cookie":           true,
	"Cookie2":          true,
	"X-Tenant-Context": true,
	// vaultd originates a new request; it does not forward the caller's
	// identity or address.
	"Host":            true,
	"Forwarded":       true,
	"Via":             true,
	"X-Real-Ip":       true,
	"True-Client-Ip":  true,
	"Alt-Used":        true,
	"Content-Length":  true, // set from OutboundRequest.ContentLength
	"Expect":          true, // the transport negotiates its own
	"Accept-Encoding": true, // a compressed echo would hide the token from redaction
	"Range":           true, // a partial echo would split the token past redaction
	"If-Range":        true,
}

// inboundDrop: upstream response headers the caller must not see.
var inboundDrop = map[string]bool{
	// Cookies the provider sets belong to the vault's session with it.
	"Set-Cookie":  true,
	"Set-Cookie2": true,
	// Redaction may shorten the body; the server frames it itself.
	"Content-Length": true,
	// Origin-scoped policies of the provider would be attributed to
	// vaultd's origin by the caller's client.
	"Alt-Svc":                   true,
	"Strict-Transport-Security": true,
	"Public-Key-Pins":           true,
	"Clear-Site-Data":           true,
}

// OutboundHeaders returns a copy of the caller's headers fit to send to the
// provider: without the caller's credentials (Authorization, Cookie,
// X-Tenant-Context, Proxy-Authorization), hop-by-hop headers (Connection and
// every header it names, Keep-Alive, Proxy-Connection, TE, Trailer,
// Transfer-Encoding, Upgrade), Host, forwarding headers (Forwarded,
// X-Forwarded-*, Via, X-Real-Ip), Alt-Used, and Accept-Encoding/Range/
// If-Range (see the package doc). in is not modified.
func OutboundHeaders(in http.Header) http.Header {
	named := connectionNamed(in)
	out := make(http.Header, len(in))
	for k, vv := range in {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if hopByHop[ck] || outboundDrop[ck] || named[ck] || strings.HasPrefix(ck, "X-Forwarded-") {
			continue
		}
		out[ck] = append(out[ck], vv...)
	}
	return out
}

// InboundHeaders returns a copy of an upstream response's headers fit for
// the caller: hop-by-hop headers, Set-Cookie, Content-Length and the
// provider's origin policies (Alt-Svc, Strict-Transport-Security) are
// dropped, every occurrence of a secret in a value is replaced by
// [REDACTED], and a header whose name contains a secret is dropped (a name
// cannot carry the marker). Empty secrets are ignored. in is not modified.
func InboundHeaders(in http.Header, secrets ...[]byte) http.Header {
	ss := normSecrets(secrets)
	named := connectionNamed(in)
	out := make(http.Header, len(in))
	for k, vv := range in {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if hopByHop[ck] || inboundDrop[ck] || named[ck] || containsAny([]byte(k), ss) {
			continue
		}
		for _, v := range vv {
			out[k] = append(out[k], string(redactAll([]byte(v), ss)))
		}
	}
	return out
}

// sanitizeTrailers applies the inbound rules to response trailers in
// place (the transport fills the map only when the body reaches EOF).
func sanitizeTrailers(t http.Header, ss [][]byte) {
	clean := InboundHeaders(t, ss...)
	for k := range t {
		delete(t, k)
	}
	for k, vv := range clean {
		t[k] = vv
	}
}

// connectionNamed returns the canonical names listed in Connection.
func connectionNamed(h http.Header) map[string]bool {
	var named map[string]bool
	for k, vv := range h {
		if textproto.CanonicalMIMEHeaderKey(k) != "Connection" {
			continue
		}
		for _, v := range vv {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					if named == nil {
						named = map[string]bool{}
					}
					named[textproto.CanonicalMIMEHeaderKey(f)] = true
				}
			}
		}
	}
	return named
}

func containsAny(b []byte, ss [][]byte) bool {
	for _, s := range ss {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}
