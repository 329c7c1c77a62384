package proxy

import (
	"bytes"
	"io"
	"net/url"
	"slices"
	"strings"

	"github.com/vaultd/vaultd/internal/secret"
)

// redactChunk is how much the redactor asks of its source per read.
const redactChunk = 32 << 10

var marker = []byte(secret.Redacted)

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
	return &redactReadCloser{redactor: newRedactor(rc, ss), c: rc}
}

type redactReadCloser struct {
	*redactor
	c io.Closer
}

func (r *redactReadCloser) Close() error { return r.c.Close() }

type redactor struct {
	src     io.Reader
	secrets [][]byte // longest first
	maxLen  int
	in      []byte // input read but not yet decided
	out     []byte // decided output not yet returned
	outOff  int
	err     error // sticky error (io.EOF included) from src
	pos     []int // scratch: next match per secret
}

func newRedactor(r io.Reader, ss [][]byte) *redactor {
	return &redactor{src: r, secrets: ss, maxLen: len(ss[0]), pos: make([]int, len(ss))}
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
			return 0, z.err
		}
		z.in = slices.Grow(z.in, redactChunk)
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
	for k := range z.pos {
		z.pos[k] = -2 // unknown
	}
	i := 0
	for i < limit {
		m, l := z.next(b, i, limit)
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

// next finds the leftmost match starting in [i, limit), longest first at a
// tie. z.pos caches each secret's next start (-1: none before limit), so a
// whole process call costs O(len(secrets) * len(b)).
func (z *redactor) next(b []byte, i, limit int) (int, int) {
	best, bestLen := -1, 0
	for k, s := range z.secrets {
		p := z.pos[k]
		if p == -1 {
			continue
		}
		if p < i {
			end := min(len(b), limit-1+len(s))
			p = -1
			if i+len(s) <= end {
				if j := bytes.Index(b[i:end], s); j >= 0 {
					p = i + j
				}
			}
			z.pos[k] = p
			if p < 0 {
				continue
			}
		}
		if best < 0 || p < best { // secrets are longest first, so ties keep the longer
			best, bestLen = p, len(s)
		}
	}
	return best, bestLen
}

// normSecrets drops empty and duplicate secrets and orders them longest
// first, the order leftmost-longest matching needs.
func normSecrets(secrets [][]byte) [][]byte {
	var ss [][]byte
	for _, s := range secrets {
		if len(s) == 0 || slices.ContainsFunc(ss, func(t []byte) bool { return bytes.Equal(s, t) }) {
			continue
		}
		ss = append(ss, s)
	}
	slices.SortStableFunc(ss, func(a, b []byte) int { return len(b) - len(a) })
	return ss
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

// tokenVariants are the forms in which an upstream echo is likely to carry
// the token: raw, percent-encoded (query and path style) and with "/"
// escaped as JSON encoders may do. All are redacted.
func tokenVariants(tok string) [][]byte {
	vs := []string{tok, url.QueryEscape(tok), url.PathEscape(tok), strings.ReplaceAll(tok, "/", `\/`)}
	out := make([][]byte, 0, len(vs))
	for _, v := range vs {
		out = append(out, []byte(v))
	}
	return normSecrets(out)
}
