package proxy

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
)

// tokenVariants are the spellings in which an upstream may echo the
// token, all redacted, deduplicated and longest first (normSecrets' form):
//
//   - raw, and with "+" form-decoded to a space;
//   - percent-encoded, each class of reserved byte (percentClass) either
//     escaped or not, in every combination (encoders disagree on "/", "+",
//     "=", "!'()*"...; maxSpellBytes bounds this for long tokens), plus
//     url.QueryEscape and url.PathEscape, with upper- and lower-case hex
//     digits;
//   - JSON-escaped the same way (jsonClass: "\/", "\u002f", "\u002B",
//     "\u003c" as Go, PHP, .NET or Gson write them), either hex case;
//   - base64 and base64url, padded or not, as the core of the encoding at
//     each of the 3 byte alignments: the characters that depend on token
//     bytes only, so the token is caught inside base64("Bearer "+token) or
//     base64("user:"+token), not only alone;
//   - hex, both cases.
//
// Encodings shorter than minDerived are left out (only tokens of a few
// bytes have them): they would match ordinary text.
func tokenVariants(tok string) [][]byte {
	var vs [][]byte
	vs = spellAll(vs, tok, formClass)
	vs = spellAll(vs, tok, percentClass)
	vs = spellAll(vs, tok, jsonClass)
	for _, upper := range []bool{true, false} {
		vs = append(vs, hexCase([]byte(url.QueryEscape(tok)), upper), hexCase([]byte(url.PathEscape(tok)), upper))
	}
	vs = appendBase64(vs, tok)
	if 2*len(tok) >= minDerived {
		h := hex.EncodeToString([]byte(tok))
		vs = append(vs, []byte(h), []byte(strings.ToUpper(h)))
	}
	return normSecrets(vs)
}

const minDerived = 8

// spelling is one way to write a byte.
type spelling uint8

const (
	spRaw   spelling = iota // the byte itself
	spPct                   // %XX
	spPct20                 // %20: a "+" form-decoded to a space, then encoded
	spPlus                  // "+": a space, form-encoded
	spSpace                 // " ": a "+" form-decoded
	spShort                 // \" \\ \/
	spU                     // \u00XX
)

var (
	onlyRaw    = []spelling{spRaw}
	onlyPct    = []spelling{spPct}
	onlyU      = []spelling{spU}
	rawOrPct   = []spelling{spRaw, spPct}
	rawOrU     = []spelling{spRaw, spU}
	rawOrSpace = []spelling{spRaw, spSpace}
)

// A class func puts a byte in a class (-1: always spelled opts[0]); all
// bytes of a class are spelled with the same option index in a variant.
type classFunc func(c byte) (class int, opts []spelling)

const maxClasses = 7

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

func formClass(c byte) (int, []spelling) {
	if c == '+' {
		return 0, rawOrSpace
	}
	return -1, onlyRaw
}

// percentClass: bytes no encoder leaves raw (%, ", <, controls, non-ASCII...)
// are always escaped; the others by class, since encoders differ by class
// (Python keeps "/", JavaScript's encodeURIComponent "!'()*", Go's
// PathEscape "+=:@$&").
func percentClass(c byte) (int, []spelling) {
	switch {
	case isUnreserved(c):
		return -1, onlyRaw
	case c == '/':
		return 0, rawOrPct
	case c == '+':
		return 1, []spelling{spRaw, spPct, spPct20}
	case c == '=':
		return 2, rawOrPct
	case strings.IndexByte("!'()*", c) >= 0:
		return 3, rawOrPct
	case strings.IndexByte("$&,:;@~?#[]", c) >= 0:
		return 4, rawOrPct
	case c == ' ':
		return 5, []spelling{spPlus, spPct}
	}
	return -1, onlyPct
}

// jsonClass: the quote and backslash are always escaped, short or \u; the
// rest by class, as encoders differ (PHP "\/", Go "\u003c" for <>&, Gson
// also "=" and "'", .NET "\u0022" and "+"); a "+" may have been
// form-decoded before it was encoded.
func jsonClass(c byte) (int, []spelling) {
	switch c {
	case '"':
		return 0, []spelling{spShort, spU}
	case '\\':
		return 1, []spelling{spShort, spU}
	case '/':
		return 2, []spelling{spRaw, spShort, spU}
	case '+':
		return 3, []spelling{spRaw, spU, spSpace}
	case '<', '>', '&':
		return 4, rawOrU
	case '=':
		return 5, rawOrU
	case '\'':
		return 6, rawOrU
	}
	if c < 0x20 {
		return -1, onlyU
	}
	return -1, onlyRaw
}

// maxSpellBytes bounds what one spellAll call builds for every
// combination; beyond it (a long token full of reserved bytes) only the
// uniform ones are built: every class raw, every class escaped.
const maxSpellBytes = 1 << 20

// spellAll appends tok spelled with every combination of its classes'
// options (at most 2*2*3*3*2*2*2, a few dozen for a base64 token), with
// upper-case hex digits and, where there are any, lower-case ones. The
// variants share one backing array.
func spellAll(vs [][]byte, tok string, class classFunc) [][]byte {
	var nopt, choice [maxClasses]int
	var copts [maxClasses][]spelling
	type special struct {
		i     int
		class int      // -1: always fixed
		fixed spelling // when class < 0
	}
	var sps []special // the bytes not always written raw; the rest is copied in runs
	fixedHex := false
	total := 1
	for i := 0; i < len(tok); i++ {
		k, o := class(tok[i])
		switch {
		case k < 0 && o[0] == spRaw:
			continue
		case k < 0:
			fixedHex = fixedHex || o[0] == spPct || o[0] == spU
		case nopt[k] == 0:
			nopt[k], copts[k] = len(o), o
			total *= len(o)
		}
		sps = append(sps, special{i: i, class: k, fixed: o[0]})
	}
	uniform := 2*total*(len(tok)+5*len(sps)) > maxSpellBytes
	if uniform {
		total = 3 // the most options a class has
	}
	buf := make([]byte, 0, 2*total*(len(tok)+8))
	var ends []int
	for n := 0; ; n++ {
		if uniform {
			for k := range choice {
				choice[k] = max(min(n, nopt[k]-1), 0)
			}
		}
		var cur [maxClasses]spelling
		hasHex := fixedHex
		for k := range cur {
			if nopt[k] > 0 {
				cur[k] = copts[k][choice[k]]
				hasHex = hasHex || cur[k] == spPct || cur[k] == spU
			}
		}
		for _, upper := range [2]bool{true, false} {
			if !upper && !hasHex {
				break
			}
			prev := 0
			for _, x := range sps {
				sp := x.fixed
				if x.class >= 0 {
					sp = cur[x.class]
				}
				buf = append(buf, tok[prev:x.i]...)
				buf = appendSpelling(buf, tok[x.i], sp, upper)
				prev = x.i + 1
			}
			buf = append(buf, tok[prev:]...)
			ends = append(ends, len(buf))
		}
		if uniform {
			if n+1 == total {
				break
			}
			continue
		}
		k := 0 // next combination: count in mixed radix over the classes present
		for ; k < maxClasses; k++ {
			if nopt[k] == 0 {
				continue
			}
			if choice[k]++; choice[k] < nopt[k] {
				break
			}
			choice[k] = 0
		}
		if k == maxClasses {
			break
		}
	}
	start := 0
	for _, end := range ends {
		vs = append(vs, buf[start:end:end])
		start = end
	}
	return vs
}

func appendSpelling(v []byte, c byte, sp spelling, upper bool) []byte {
	digits := "0123456789abcdef"
	if upper {
		digits = "0123456789ABCDEF"
	}
	switch sp {
	case spPct:
		return append(v, '%', digits[c>>4], digits[c&15])
	case spPct20:
		return append(v, "%20"...)
	case spPlus:
		return append(v, '+')
	case spSpace:
		return append(v, ' ')
	case spShort:
		return append(v, '\\', c)
	case spU:
		return append(v, '\\', 'u', '0', '0', digits[c>>4], digits[c&15])
	}
	return append(v, c)
}

// hexCase sets the case of the hex digits of every %XX escape in v.
func hexCase(v []byte, upper bool) []byte {
	for i := 0; i+2 < len(v); i++ {
		if v[i] != '%' {
			continue
		}
		for j := i + 1; j <= i+2; j++ {
			if c := v[j] | 0x20; c >= 'a' && c <= 'f' {
				if upper {
					c -= 0x20
				}
				v[j] = c
			}
		}
		i += 2
	}
	return v
}

// appendBase64 appends, for the token at byte offset 0, 1 and 2 (mod 3)
// of a larger blob, the base64 characters fully determined by its bytes,
// in both alphabets (padding never belongs to a core). When a core is too
// short, the whole encodings of the token and of "Bearer "+token stand in.
func appendBase64(vs [][]byte, tok string) [][]byte {
	short := false
	for a := range 3 {
		src := make([]byte, a, a+len(tok)+2) // a zero bytes, then the token, then zeros to a whole group
		src = append(src, tok...)
		for len(src)%3 != 0 {
			src = append(src, 0)
		}
		from, to := (8*a+5)/6, 8*(a+len(tok))/6 // first and past-last char with no bit outside the token
		if to-from < minDerived {
			short = true
			continue
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			vs = append(vs, []byte(enc.EncodeToString(src)[from:to]))
		}
	}
	if short {
		for _, s := range []string{tok, "Bearer " + tok} {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				if e := enc.EncodeToString([]byte(s)); len(e) >= minDerived {
					vs = append(vs, []byte(e))
				}
			}
		}
	}
	return vs
}
