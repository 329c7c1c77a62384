package proxy

import (
	"net/url"
	"path"
	"strings"
)

const (
	// maxPathLen and maxQueryLen bound what a caller may ask for; real API
	// paths are far shorter, and huge inputs only make parsers disagree.
	maxPathLen  = 4096
	maxQueryLen = 16384
	// maxDecodeRounds: how many layers of percent-encoding are peeled to
	// find hidden dots and slashes (%2e, %252e, %25252e, ...). Input still
	// encoded after that many layers is refused outright.
	maxDecodeRounds = 4
)

// Target resolves a caller's path against a provider's api_base_url and
// refuses anything that could leave it (docs/api.md, "Outbound calls").
//
// rawPath is the still-escaped path the caller gave after ".../proxy/" (or
// execute's "path"; one leading "/" is allowed). rawQuery is the caller's
// raw query, kept as is once checked. The result has exactly base's scheme
// and host (port included) and the path base.Path + "/" + rawPath.
//
// Refusals wrap ErrEgressDenied with a short reason (see SafeReason); a
// malformed base wraps ErrInvalidBase.
func Target(base *url.URL, rawPath, rawQuery string) (*url.URL, error) {
	if err := checkBase(base); err != nil {
		return nil, err
	}
	if len(rawPath) > maxPathLen {
		return nil, deny("path too long")
	}
	if len(rawQuery) > maxQueryLen {
		return nil, deny("query too long")
	}
	if strings.HasPrefix(rawPath, "//") {
		return nil, deny("network-path reference")
	}
	p := strings.TrimPrefix(rawPath, "/")
	if hasSchemePrefix(p) {
		return nil, deny("absolute URL")
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if seg == "" {
			// Only the last segment may be empty: "" (the base itself)
			// or a trailing slash, which some APIs require.
			if i == len(segs)-1 {
				continue
			}
			return nil, deny("empty path segment")
		}
		if err := checkSegment(seg); err != nil {
			return nil, err
		}
	}
	if err := checkQuery(rawQuery); err != nil {
		return nil, err
	}

	basePath := strings.TrimRight(base.EscapedPath(), "/")
	escaped := basePath + "/" + escapePath(p)
	u, err := url.Parse(base.Scheme + "://" + base.Host + escaped)
	if err != nil {
		return nil, deny("unparsable target")
	}
	u.RawQuery = rawQuery

	// Belt and braces: whatever the checks above missed, the parsed result
	// must still be on base's origin, under base's path, and unchanged by
	// RFC 3986 reference resolution (which removes dot segments).
	if !sameOrigin(u, base) || u.EscapedPath() != escaped {
		return nil, deny("target escapes base")
	}
	if r := base.ResolveReference(u); !sameOrigin(r, base) || r.EscapedPath() != escaped {
		return nil, deny("target escapes base")
	}
	prefix := strings.TrimRight(base.Path, "/") + "/"
	if !strings.HasPrefix(u.Path, prefix) {
		return nil, deny("target escapes base")
	}
	clean := path.Clean(u.Path)
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	if clean != u.Path {
		return nil, deny("target escapes base")
	}
	return u, nil
}

func checkBase(base *url.URL) error {
	switch {
	case base == nil:
		return badBase("missing")
	case base.Scheme != "https" && base.Scheme != "http":
		return badBase("scheme must be https or http")
	case base.Host == "" || base.Opaque != "" || base.User != nil:
		return badBase("must be scheme://host[:port][/path]")
	case base.RawQuery != "" || base.ForceQuery || base.Fragment != "":
		return badBase("must not have a query or fragment")
	case base.Path != "" && !strings.HasPrefix(base.Path, "/"):
		return badBase("path must be absolute")
	}
	return nil
}

func sameOrigin(u, base *url.URL) bool {
	return u != nil && u.Scheme == base.Scheme && u.Host == base.Host &&
		u.User == nil && u.Opaque == "" && u.Fragment == ""
}

// hasSchemePrefix reports whether p starts like "scheme:" (RFC 3986 §3.1),
// i.e. could be read as an absolute URL by anything downstream.
func hasSchemePrefix(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		case c == ':':
			return i > 0
		default:
			return false
		}
	}
	return false
}

// checkSegment judges one segment of the caller's path: raw, and again
// after each layer of percent-decoding, since upstream servers, gateways
// and frameworks differ in how many times they decode.
func checkSegment(seg string) error {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return deny("control character")
		case c == '\\':
			return deny("backslash")
		case c == '@':
			return deny("userinfo delimiter")
		case c == '?' || c == '#':
			return deny("reserved character in path")
		case c == '%':
			if i+2 >= len(seg) || !ishex(seg[i+1]) || !ishex(seg[i+2]) {
				return deny("invalid percent-encoding")
			}
		}
	}
	cur := seg
	for round := 0; ; round++ {
		if err := checkLayer(cur, round > 0); err != nil {
			return err
		}
		if !strings.Contains(cur, "%") {
			return nil
		}
		if round == maxDecodeRounds {
			return deny("too many encoding layers")
		}
		next, err := url.PathUnescape(cur)
		if err != nil {
			// Layer 0 was validated above, so this is a deeper layer
			// like "100%" from "100%25": a literal percent, not an
			// encoding anyone will decode further.
			return nil
		}
		cur = next
	}
}

// checkLayer applies the checks that hold for every decoding layer.
// Non-ASCII bytes are refused outright, raw or decoded, valid UTF-8 or
// not: servers that normalise Unicode read look-alikes such as U+2025 "‥"
// or U+FF0F "／" as dots and slashes, lenient decoders read overlong UTF-8
// (%C0%AE) as ".", and no list of look-alikes is ever complete.
func checkLayer(s string, decoded bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return deny("encoded control character")
		case c >= 0x80:
			return deny("non-ASCII byte in path")
		case decoded && c == '/':
			return deny("encoded slash")
		case decoded && c == '\\':
			return deny("encoded backslash")
		}
	}
	// Servers such as Tomcat strip ";params" before resolving dot
	// segments, so "..;x" is "..", and ";x" an empty segment.
	name := s
	if i := strings.IndexByte(s, ';'); i >= 0 {
		name = s[:i]
		if name == "" {
			return deny("empty path segment")
		}
	}
	if isDotSegment(name) {
		return deny("dot segment")
	}
	return nil
}

// isDotSegment reports whether s is made only of dots and spaces, with at
// least one dot: ".", "..", "...", ". ." and "..%20" all mean "up" to some
// server (Windows trims trailing dots and spaces).
func isDotSegment(s string) bool {
	dot := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '.':
			dot = true
		case ' ', '\t':
		default:
			return false
		}
	}
	return dot
}

// checkQuery keeps the caller's raw query but refuses what no valid
// request line carries: raw control characters, spaces, non-ASCII bytes,
// a fragment and invalid percent-encodings.
func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c <= 0x20 || c >= 0x7f:
			return deny("invalid character in query")
		case c == '#':
			return deny("fragment in query")
		case c == '%':
			if i+2 >= len(q) || !ishex(q[i+1]) || !ishex(q[i+2]) {
				return deny("invalid percent-encoding in query")
			}
		}
	}
	return nil
}

func ishex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// escapePath percent-encodes the bytes an escaped path may not carry raw
// (spaces, quotes from an execute JSON path) and keeps the
// caller's existing %XX escapes and sub-delimiters as they are.
func escapePath(p string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' || c == '/' || pathSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// pathSafe: RFC 3986 pchar minus "%" (handled above) and "@" (refused).
func pathSafe(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':':
		return true
	}
	return false
}
