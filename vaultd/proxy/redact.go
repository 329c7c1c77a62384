package proxy

import (
	"bytes"
	"io"
	"slices"
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
