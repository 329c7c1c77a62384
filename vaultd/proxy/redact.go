package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/vaultd/vaultd/internal/secret"
)

// redactChunk is how much the redactor asks of its source per read.
const redactChunk = 32 << 10

var marker = []byte(secret.Redacted)

// inPool recycles the redactor's input buffers. A fresh 32 KiB buffer per
// proxied response was the largest allocation on the hot path (the
// 16-caller profile: ~9% of vaultd's CPU in growslice/memclr plus the GC
// and scavenger work it caused). The buffer may have held the upstream's
// copy of the token, so it is zeroed before it goes back.
var inPool = sync.Pool{New: func() any { b := make([]byte, 0, redactChunk); return &b }}

func getIn() []byte { return (*inPool.Get().(*[]byte))[:0] }

func putIn(b []byte) {
	clear(b[:cap(b)])
	if cap(b) != redactChunk {
		return // grown past the pool's size (a very long secret): let the GC have it
	}
	b = b[:0]
	inPool.Put(&b)
}

// minRead is the least free space the redactor offers its source per read.
const minRead = 4 << 10

// NewRedactor returns a reader that yields r's bytes with every occurrence
// of any secret replaced by "[REDACTED]", streaming: it holds back at most
// maxLen(secrets)-1 undecided bytes between reads, never the whole body.
// Matches are leftmost, the longest secret wins at one position, and they
// do not overlap (for one secret the output equals
// bytes.ReplaceAll(all, secret, "[REDACTED]")). Empty secrets are ignored;
// with none, r itself is returned. The secret slices are not copied and
// must not change while the reader is in use.
func NewRedactor(r io.Reader, secrets ...[]byte) io.Reader {
	ss := normSecrets(secrets)
	if len(ss) == 0 {
		return r
	}
	return newRedactor(r, ss)
}

// NewRedactReadCloser is NewRedactor for a body that must be closed;
// Close closes rc.
func NewRedactReadCloser(rc io.ReadCloser, secrets ...[]byte) io.ReadCloser {
	ss := normSecrets(secrets)
	if len(ss) == 0 {
		return rc
	}
	return &redactReadCloser{z: newRedactor(rc, ss), c: rc}
}

// redactReadCloser serialises Read and Close so that Close can hand the
// pooled buffer back while no Read is using it.
type redactReadCloser struct {
	mu sync.Mutex
	z  *redactor
	c  io.Closer
}

func (r *redactReadCloser) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.z.Read(p)
}

// Close closes the source first, without the lock, since that is what
// unblocks a Read waiting on it; then it releases the buffer.
func (r *redactReadCloser) Close() error {
	err := r.c.Close()
	r.mu.Lock()
	r.z.release()
	r.mu.Unlock()
	return err
}

type redactor struct {
	src     io.Reader
	secrets [][]byte // longest first
	maxLen  int
	in      []byte // input read but not yet decided
	out     []byte // decided output not yet returned
	outOff  int
	err     error // sticky error (io.EOF included) from src
	m       matcher
}

func newRedactor(r io.Reader, ss [][]byte) *redactor {
	z := &redactor{src: r, secrets: ss, maxLen: len(ss[0])}
	z.m.init(ss)
	return z
}

// maxEmptyReads bounds how often a source may return (0, nil) in a row,
// as bufio does, so a broken source cannot spin us forever.
const maxEmptyReads = 100

func (z *redactor) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for empty := 0; ; {
		if z.outOff < len(z.out) {
			n := copy(p, z.out[z.outOff:])
			z.outOff += n
			if z.outOff == len(z.out) {
				z.out, z.outOff = z.out[:0], 0
			}
			return n, nil
		}
		if z.err != nil {
			z.release()
			return 0, z.err
		}
		switch {
		case z.in == nil:
			z.in = getIn()
		case cap(z.in)-len(z.in) < minRead:
			z.in = slices.Grow(z.in, redactChunk)
		}
		n, err := z.src.Read(z.in[len(z.in):cap(z.in)])
		if n < 0 || n > cap(z.in)-len(z.in) {
			n, err = 0, io.ErrShortBuffer // a broken source; fail rather than panic
		}
		z.in = z.in[:len(z.in)+n]
		if err != nil {
			z.err = err
		}
		if n == 0 && err == nil {
			if empty++; empty >= maxEmptyReads {
				return 0, io.ErrNoProgress
			}
			continue
		}
		z.process(err != nil)
	}
}

// release returns the input buffer to the pool; the redactor stays usable
// (a later Read takes a new buffer), though after the source's terminal
// error there is nothing left to read into it.
func (z *redactor) release() {
	if z.in != nil {
		putIn(z.in)
		z.in = nil
	}
}

// process moves every decided byte of z.in to z.out. A position is decided
// once maxLen bytes from it are known (or the input ended): only then can
// we tell whether any secret starts there.
func (z *redactor) process(final bool) {
	b := z.in
	limit := len(b) - z.maxLen + 1 // positions < limit are decided
	if final {
		limit = len(b)
	}
	if limit <= 0 {
		return
	}
	i := 0
	for i < limit {
		m, l := z.m.next(b, i, limit)
		if m < 0 {
			break
		}
		z.out = append(z.out, b[i:m]...)
		z.out = append(z.out, marker...)
		i = m + l
	}
	if i < limit {
		z.out = append(z.out, b[i:limit]...)
		i = limit
	}
	z.in = b[:copy(b, b[i:])]
}

// normSecrets drops empty and duplicate secrets and orders them longest
// first, the order leftmost-longest matching needs (equal lengths in byte
// order). A list already in that form, as tokenVariants returns it, comes
// back as is: Forwarder.Do passes the same list several times per call.
func normSecrets(secrets [][]byte) [][]byte {
	if isNorm(secrets) {
		return secrets
	}
	var ss [][]byte
	for _, s := range secrets {
		if len(s) > 0 {
			ss = append(ss, s)
		}
	}
	slices.SortFunc(ss, cmpSecrets)
	return slices.CompactFunc(ss, func(a, b []byte) bool { return bytes.Equal(a, b) })
}

func cmpSecrets(a, b []byte) int {
	if len(a) != len(b) {
		return len(b) - len(a)
	}
	return bytes.Compare(a, b)
}

func isNorm(ss [][]byte) bool {
	for i, s := range ss {
		if len(s) == 0 || i > 0 && cmpSecrets(ss[i-1], s) >= 0 {
			return false
		}
	}
	return true
}

// matcher finds every secret in one pass over the input, however many
// there are (tokenVariants yields dozens; bytes.Index per secret cost a
// pass each). It is Wu-Manber: with w the length of the shortest secret
// (at most maxWindow), a window of w bytes slides over the input, and the
// last two bytes of the window tell how far it may jump before any
// secret's first w bytes could end there; only where that is 0 is the
// window hashed, looked up in a bit filter of the secrets' prefix hashes
// and, on a hit, compared. Secrets shorter than minShiftWindow use the
// same filter with a rolling hash at every byte.
type matcher struct {
	secrets [][]byte // longest first
	win     int
	pow     uint32   // hashBase^(win-1), for the rolling hash
	pre     []uint32 // hash of each secret's first win bytes
	filter  []uint64 // bit filterSlot(pre[k]) set for every k
	shift   []uint8  // by blockSlot of the window's last two bytes; nil below minShiftWindow
}

const (
	hashBase       = 16777619
	maxWindow      = 32 // longer windows jump further
	minShiftWindow = 4  // below this, jumps are too short to pay for the table
	filterBits     = 12
	blockBits      = 12
)

func filterSlot(h uint32) uint32 { return (h * 0x9E3779B1) >> (32 - filterBits) }

// blockSlot hashes two bytes; a collision only shortens a jump.
func blockSlot(c0, c1 byte) uint32 { return (uint32(c0)<<4 ^ uint32(c1)) & (1<<blockBits - 1) }

func (m *matcher) init(ss [][]byte) {
	m.secrets = ss
	w := min(len(ss[len(ss)-1]), maxWindow)
	m.win, m.pow = w, 1
	for range w - 1 {
		m.pow *= hashBase
	}
	m.pre = make([]uint32, len(ss))
	m.filter = make([]uint64, 1<<filterBits/64)
	for k, s := range ss {
		h := rollHash(s[:w])
		m.pre[k] = h
		slot := filterSlot(h)
		m.filter[slot/64] |= 1 << (slot % 64)
	}
	if w < minShiftWindow {
		return
	}
	m.shift = make([]uint8, 1<<blockBits)
	for i := range m.shift {
		m.shift[i] = uint8(w - 1)
	}
	for _, s := range ss {
		for j := 1; j < w; j++ { // the block s[j-1:j+1] ends w-1-j before the window's end
			if slot := blockSlot(s[j-1], s[j]); m.shift[slot] > uint8(w-1-j) {
				m.shift[slot] = uint8(w - 1 - j)
			}
		}
	}
}

func rollHash(b []byte) uint32 {
	var h uint32
	for _, c := range b {
		h = h*hashBase + uint32(c)
	}
	return h
}

// at returns the length of the longest secret starting at p and ending
// within b (0: none), given h, the hash of b[p:p+win].
func (m *matcher) at(b []byte, p int, h uint32) int {
	if slot := filterSlot(h); m.filter[slot/64]&(1<<(slot%64)) == 0 {
		return 0
	}
	for k, s := range m.secrets {
		if m.pre[k] == h && len(s) <= len(b)-p && bytes.Equal(b[p:p+len(s)], s) {
			return len(s)
		}
	}
	return 0
}

// next finds the leftmost match starting in [i, limit) that ends within b,
// the longest at a tie.
func (m *matcher) next(b []byte, i, limit int) (int, int) {
	w := m.win
	end := min(limit, len(b)-w+1) // every secret is at least w long
	if i >= end {
		return -1, 0
	}
	if m.shift == nil {
		h := rollHash(b[i : i+w])
		for p := i; ; p++ {
			if l := m.at(b, p, h); l > 0 {
				return p, l
			}
			if p+1 >= end {
				return -1, 0
			}
			h = (h-uint32(b[p])*m.pow)*hashBase + uint32(b[p+w])
		}
	}
	for p := i; p < end; {
		q := p + w - 1
		if s := m.shift[blockSlot(b[q-1], b[q])]; s != 0 {
			p += int(s)
			continue
		}
		if l := m.at(b, p, rollHash(b[p:p+w])); l > 0 {
			return p, l
		}
		p++
	}
	return -1, 0
}

// redactAll is the in-memory form of the redactor (same matching rules),
// for header values.
func redactAll(b []byte, ss [][]byte) []byte {
	if len(ss) == 0 || !containsAny(b, ss) {
		return b
	}
	z := newRedactor(nil, ss)
	z.in = b
	z.process(true)
	return z.out
}

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
