package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// refRedact is the reference: scan left to right, longest secret first at
// each position, non-overlapping. Written independently of the redactor.
func refRedact(in []byte, secrets ...[]byte) []byte {
	ss := normSecrets(secrets)
	var out []byte
	for i := 0; i < len(in); {
		matched := false
		for _, s := range ss {
			if bytes.HasPrefix(in[i:], s) {
				out = append(out, "[REDACTED]"...)
				i += len(s)
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, in[i])
			i++
		}
	}
	return out
}

// chunkReader returns its data in the given chunk sizes (cycled).
type chunkReader struct {
	data  []byte
	sizes []int
	n     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := c.sizes[c.n%len(c.sizes)]
	c.n++
	k = min(k, len(p), len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

func readAllSmall(t testing.TB, r io.Reader, bufSize int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, bufSize)
	for range 10_000_000 {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("reader did not finish")
	return nil
}

func TestRedactorCases(t *testing.T) {
	cases := []struct {
		in      string
		secrets []string
		want    string
	}{
		{"hello tok world", []string{"tok"}, "hello [REDACTED] world"},
		{"toktok", []string{"tok"}, "[REDACTED][REDACTED]"},
		{"aaaa", []string{"aa"}, "[REDACTED][REDACTED]"},
		{"aaa", []string{"aa"}, "[REDACTED]a"},
		{"abababa", []string{"aba"}, "[REDACTED]b[REDACTED]"},
		{"tok", []string{"tok"}, "[REDACTED]"},
		{"to", []string{"tok"}, "to"},
		{"", []string{"tok"}, ""},
		{"xx tok yy", []string{"", "tok"}, "xx [REDACTED] yy"},
		{"no secrets", nil, "no secrets"},
		{"abcdef cd", []string{"cd", "abcdef"}, "[REDACTED] [REDACTED]"},
		{"abcd", []string{"cd", "abcdef"}, "ab[REDACTED]"},
		{"a/b a%2Fb a\\/b", tokenVariantsS("a/b"), "[REDACTED] [REDACTED] [REDACTED]"},
	}
	for _, c := range cases {
		var ss [][]byte
		for _, s := range c.secrets {
			ss = append(ss, []byte(s))
		}
		for _, r := range []io.Reader{
			strings.NewReader(c.in),
			iotest.OneByteReader(strings.NewReader(c.in)),
			iotest.HalfReader(strings.NewReader(c.in)),
			iotest.DataErrReader(strings.NewReader(c.in)),
		} {
			got := readAllSmall(t, NewRedactor(r, ss...), 3)
			if string(got) != c.want {
				t.Errorf("redact(%q, %q) = %q, want %q", c.in, c.secrets, got, c.want)
			}
		}
	}
}

func tokenVariantsS(tok string) []string {
	var out []string
	for _, v := range tokenVariants(tok) {
		out = append(out, string(v))
	}
	return out
}

// TestRedactorRandomChunking compares the streaming redactor with the
// reference over random inputs, secrets and chunkings.
func TestRedactorRandomChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab[]c")
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return b
	}
	for iter := range 3000 {
		in := randBytes(rng.IntN(200))
		var ss [][]byte
		for range 1 + rng.IntN(3) {
			ss = append(ss, randBytes(rng.IntN(6)))
		}
		sizes := make([]int, 1+rng.IntN(4))
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(40)
		}
		want := refRedact(in, ss...)
		if len(ss) == 1 && len(ss[0]) > 0 {
			if w2 := bytes.ReplaceAll(in, ss[0], []byte("[REDACTED]")); !bytes.Equal(want, w2) {
				t.Fatalf("reference disagrees with bytes.ReplaceAll: %q", in)
			}
		}
		got := readAllSmall(t, NewRedactor(&chunkReader{data: bytes.Clone(in), sizes: sizes}, ss...), 1+rng.IntN(50))
		if !bytes.Equal(got, want) {
			t.Fatalf("iter %d: in %q secrets %q sizes %v:\n got %q\nwant %q", iter, in, ss, sizes, got, want)
		}
	}
}

// The redactor must not hold more than maxLen-1 bytes: with a source that
// blocks after the first chunk, the reader yields everything but the tail.
func TestRedactorDoesNotBuffer(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewRedactor(pr, []byte("secret-token"))
	go func() {
		_, _ = pw.Write([]byte(strings.Repeat("x", 1000) + "secret-"))
		// Blocks until the reader asks again; never closed before the
		// assertions below have run.
	}()
	// 1007 bytes written; the last maxLen-1 = 11 may begin the secret and
	// are held back, the 996 before them must come out now.
	const want = 1007 - (len("secret-token") - 1)
	got := make([]byte, 0, 2000)
	buf := make([]byte, 4096)
	for len(got) < want {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if len(got) != want || !bytes.Equal(got, bytes.Repeat([]byte("x"), want)) {
		t.Fatalf("unexpected early output %q", got)
	}
	go func() { _, _ = pw.Write([]byte("token!")); pw.Close() }()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	all := string(got) + string(rest)
	if all != strings.Repeat("x", 1000)+"[REDACTED]!" {
		t.Fatalf("got %q", all)
	}
}

func TestRedactorErrors(t *testing.T) {
	boom := errors.New("boom")
	// Bytes held back before an error are still delivered (they cannot be
	// a whole secret), then the error.
	r := NewRedactor(io.MultiReader(strings.NewReader("abc tok se"), iotest.ErrReader(boom)), []byte("secret"), []byte("tok"))
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) || string(got) != "abc [REDACTED] se" {
		t.Fatalf("got %q, %v", got, err)
	}
	// A source that never makes progress ends with io.ErrNoProgress.
	if _, err := NewRedactor(zeroReader{}, []byte("x")).Read(make([]byte, 8)); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("zero reader: %v", err)
	}
	// Zero-length reads are fine.
	if n, err := NewRedactor(strings.NewReader("x"), []byte("x")).Read(nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestRedactReadCloser(t *testing.T) {
	c := &closeCounter{Reader: strings.NewReader("a tok b")}
	rc := NewRedactReadCloser(c, []byte("tok"))
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "a [REDACTED] b" {
		t.Fatalf("%q %v", got, err)
	}
	if err := rc.Close(); err != nil || c.n != 1 {
		t.Fatalf("close: %v, %d", err, c.n)
	}
	// No secrets: the body itself comes back.
	if NewRedactReadCloser(c, nil, []byte{}) != io.ReadCloser(c) {
		t.Fatal("expected passthrough")
	}
}

type closeCounter struct {
	io.Reader
	n int
}

func (c *closeCounter) Close() error { c.n++; return nil }

func FuzzRedactor(f *testing.F) {
	f.Add([]byte("hello token world"), []byte("token"), uint8(3))
	f.Add([]byte("aaaaaaa"), []byte("aa"), uint8(1))
	f.Add([]byte("abababab"), []byte("abab"), uint8(2))
	f.Add([]byte("tok"), []byte(""), uint8(7))
	f.Add([]byte("[REDACTED]]]"), []byte("]]"), uint8(1))
	f.Add(bytes.Repeat([]byte("eyJhbGciOi."), 50), []byte("eyJhbGciOi.eyJ"), uint8(13))
	f.Fuzz(func(t *testing.T, in, sec []byte, chunk uint8) {
		sizes := []int{int(chunk%64) + 1, int(chunk/64) + 1}
		got := readAllSmall(t, NewRedactor(&chunkReader{data: bytes.Clone(in), sizes: sizes}, sec), int(chunk%17)+1)
		want := in
		if len(sec) > 0 {
			want = bytes.ReplaceAll(in, sec, []byte("[REDACTED]"))
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("in %q secret %q: got %q want %q", in, sec, got, want)
		}
		// The output can only contain the secret when the secret overlaps
		// the marker itself; real tokens never contain brackets.
		if len(sec) > 0 && !bytes.ContainsAny(sec, "[]") && !strings.Contains("[REDACTED]", string(sec)) && bytes.Contains(got, sec) {
			t.Fatalf("secret %q survived in %q", sec, got)
		}
	})
}

func BenchmarkRedactor(b *testing.B) {
	tok := []byte("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-abcdefghijklmnop")
	body := bytes.Repeat([]byte(`{"id":123,"name":"some contact","email":"a@example.com"},`), 20000)
	copy(body[len(body)/2:], tok)
	ss := tokenVariants(string(tok))
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		n, err := io.Copy(io.Discard, NewRedactor(bytes.NewReader(body), ss...))
		if err != nil || n == 0 {
			b.Fatal(err)
		}
	}
}

// The pooled input buffer is zeroed when it goes back: it may have held the
// upstream's copy of the token.
func TestRedactorBufferZeroedOnRelease(t *testing.T) {
	tok := []byte("tok-secret-value")
	for _, closeEarly := range []bool{false, true} {
		body := append(bytes.Repeat([]byte("x"), 100), tok...)
		c := &closeCounter{Reader: bytes.NewReader(append(body, "tail"...))}
		rc := NewRedactReadCloser(c, tok).(*redactReadCloser)
		buf := make([]byte, 10)
		if _, err := rc.Read(buf); err != nil {
			t.Fatal(err)
		}
		held := rc.z.in[:cap(rc.z.in)] // the same backing array the pool gets
		if !bytes.Contains(held, tok) {
			t.Fatal("test premise: the buffer should hold the token now")
		}
		if !closeEarly {
			if _, err := io.ReadAll(rc); err != nil {
				t.Fatal(err)
			}
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
		if rc.z.in != nil {
			t.Fatalf("closeEarly=%v: buffer not released", closeEarly)
		}
		if bytes.ContainsFunc(held, func(r rune) bool { return r != 0 }) {
			t.Fatalf("closeEarly=%v: released buffer not zeroed", closeEarly)
		}
	}
}

// Redactors running at once, each with its own secret, never see each
// other's bytes through the shared pool.
func TestRedactorPoolConcurrent(t *testing.T) {
	const workers, rounds = 16, 50
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			tok := []byte(strings.Repeat(string(rune('a'+w)), 12))
			for r := range rounds {
				body := bytes.Repeat([]byte("0123456789-"), 1+r*300)
				body = append(body, tok...)
				want := refRedact(body, tok)
				rc := NewRedactReadCloser(io.NopCloser(&chunkReader{data: body, sizes: []int{1 + r, 4096, 7}}), tok)
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, want) {
					errs <- errors.New("worker output differs from the reference")
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Close while a Read is blocked on the source must not deadlock: Close
// closes the source first (which unblocks the Read), then releases.
func TestRedactReadCloserCloseDuringRead(t *testing.T) {
	pr, pw := io.Pipe()
	rc := NewRedactReadCloser(pr, []byte("tok"))
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 8))
		done <- err
	}()
	pw.Write([]byte{}) // returns once the Read has reached the pipe; it then blocks there
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("read after close: %v", err)
	}
}
