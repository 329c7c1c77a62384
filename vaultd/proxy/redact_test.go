package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/url"
	"slices"
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

// tokenSpellings are the forms in which an upstream was seen to, or could
// plausibly, reflect a token, built with the standard library's encoders
// rather than with tokenVariants, so that a gap in the latter shows.
func tokenSpellings(tok string) map[string]string {
	jsonPlain := func(s string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		return strings.TrimSuffix(strings.TrimSuffix(b.String(), "\n")[1:], `"`)
	}
	jsonGo, _ := json.Marshal(tok)
	form := strings.ReplaceAll(tok, "+", " ")
	uLower := strings.NewReplacer("/", `\u002f`, "+", `\u002b`)
	uUpper := strings.NewReplacer("/", `\u002F`, "+", `\u002B`)
	sp := map[string]string{
		"raw":             tok,
		"query":           url.QueryEscape(tok),
		"query lower":     lowerPercent(url.QueryEscape(tok)),
		"path":            url.PathEscape(tok),
		"path lower":      lowerPercent(url.PathEscape(tok)),
		"form":            form,
		"json go":         string(jsonGo[1 : len(jsonGo)-1]),
		"json go upper":   upperUnicodeEscapes(string(jsonGo[1 : len(jsonGo)-1])),
		"json plain":      jsonPlain(tok),
		"json php":        strings.ReplaceAll(jsonPlain(tok), "/", `\/`),
		"json php form":   strings.ReplaceAll(jsonPlain(form), "/", `\/`),
		"json u lower":    uLower.Replace(jsonPlain(tok)),
		"json u upper":    uUpper.Replace(jsonPlain(tok)),
		"json u eq":       strings.ReplaceAll(uLower.Replace(jsonPlain(tok)), "=", `\u003d`),
		"hex":             hex.EncodeToString([]byte(tok)),
		"hex upper":       strings.ToUpper(hex.EncodeToString([]byte(tok))),
		"json u lower \\": strings.ReplaceAll(uLower.Replace(jsonPlain(tok)), `\\`, `\u005c`),
	}
	for _, pre := range []string{"", "Bearer ", "user:", "x"} {
		for name, enc := range map[string]*base64.Encoding{"std": base64.StdEncoding, "url": base64.URLEncoding,
			"rawstd": base64.RawStdEncoding, "rawurl": base64.RawURLEncoding} {
			sp["base64 "+name+" "+pre] = enc.EncodeToString([]byte(pre + tok))
		}
	}
	return sp
}

// lowerPercent lower-cases the hex digits of every %XX escape.
func lowerPercent(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = bytes.ToLower(b[i+1 : i+2])[0], bytes.ToLower(b[i+2 : i+3])[0]
			i += 2
		}
	}
	return string(b)
}

// upperUnicodeEscapes upper-cases the hex digits of every \uXXXX escape.
func upperUnicodeEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+5 < len(b); i++ {
		if b[i] == '\\' && b[i+1] == 'u' {
			copy(b[i+2:i+6], bytes.ToUpper(b[i+2:i+6]))
			i += 5
		} else if b[i] == '\\' {
			i++ // skip the escaped byte ("\\u" is a backslash, then "u")
		}
	}
	return string(b)
}

// spellingSurvives returns the name of a spelling of tok found in out.
func spellingSurvives(out []byte, tok string) string {
	for name, s := range tokenSpellings(tok) {
		if len(s) > 0 && !strings.Contains(secretMarker, s) && bytes.Contains(out, []byte(s)) {
			return name
		}
	}
	return ""
}

const secretMarker = "[REDACTED]"

// Reserved-byte tokens as providers issue them: base64 with "+/=",
// Salesforce-style "!", and one with every byte class the encoders treat
// differently.
var reservedTokens = []string{
	"at-Zm9vYmFy/+.c2VjcmV0LXRva2Vu-7f3a",
	"ya29.a0AfB/H+xQ9kc2Vj+cmV0/LXRva2Vu==",
	"00D5g000004Ckbc!AQ0AQ.Ir7+h/W=5jXqRz",
	"tok/+=!$&'()*,;:@%\"\\<>?#^`{|}~-._zz",
}

// Regression: the redactor caught only the raw, QueryEscape, PathEscape and
// "\/" forms; a token reflected in base64 (alone, or inside the base64 of
// "Bearer <token>"), with lower-case %2f escapes, \u002f JSON escapes or
// with "+" form-decoded to a space came back in clear.
func TestRedactorTokenSpellings(t *testing.T) {
	for _, tok := range reservedTokens {
		ss := tokenVariants(tok)
		sp := tokenSpellings(tok)
		var all []byte
		for name, s := range sp {
			in := []byte(`{"x":"` + s + `"} ` + s + "&t=" + s)
			all = append(append(all, in...), ' ')
			for _, sizes := range [][]int{{1}, {3, 7}, {4096}} {
				out := readAllSmall(t, NewRedactor(&chunkReader{data: bytes.Clone(in), sizes: sizes}, ss...), 5)
				if got := spellingSurvives(out, tok); got != "" {
					t.Errorf("token %q, spelling %q in the input: spelling %q survives in %q", tok, name, got, out)
				}
			}
			// Header values go through the in-memory form.
			if got := spellingSurvives(redactAll([]byte("Bearer "+s), normSecrets(ss)), tok); got != "" {
				t.Errorf("token %q, spelling %q: %q survives in a header value", tok, name, got)
			}
		}
		out := readAllSmall(t, NewRedactor(&chunkReader{data: all, sizes: []int{5, 1, 300}}, ss...), 7)
		if got := spellingSurvives(out, tok); got != "" {
			t.Errorf("token %q: spelling %q survives in the concatenation", tok, got)
		}
		if !bytes.Equal(out, refRedact(all, ss...)) {
			t.Errorf("token %q: streaming output differs from the reference", tok)
		}
	}
}

// tokenAlphabet replaces the fuzz bytes access tokens are not made of
// (RFC 6749 VSCHAR), and brackets and space, which overlap the marker or
// are not valid in a Bearer header; it favours the base64 bytes "/+=".
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" +
	"/+=/+=/+=!$&'()*,;:@%\"\\<>?#^`{|}~-._"

// FuzzRedactorTokenVariants: whatever the token (reserved bytes included),
// the filler around it and the chunking, no spelling of the token survives
// the redactor, and the streaming output equals the in-memory reference.
func FuzzRedactorTokenVariants(f *testing.F) {
	for i, tok := range reservedTokens {
		f.Add([]byte(tok), []byte("some body text {\"a\":1}"), uint8(i*37+1))
	}
	f.Add([]byte("/+=/+=/+=/+=/+=/+="), []byte("%2F%2f\\u002f"), uint8(3))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaa"), []byte("YWFh"), uint8(200))
	f.Fuzz(func(t *testing.T, raw, filler []byte, chunk uint8) {
		if len(raw) < 16 || len(raw) > 200 {
			return
		}
		tb := make([]byte, len(raw))
		for i, c := range raw {
			if c <= ' ' || c >= 0x7f || c == '[' || c == ']' {
				c = tokenAlphabet[int(c)%len(tokenAlphabet)]
			}
			tb[i] = c
		}
		tok := string(tb)
		if len(filler) > 256 {
			filler = filler[:256]
		}
		var in []byte
		in = append(in, filler...)
		sp := tokenSpellings(tok)
		k := 0
		for _, s := range sp {
			in = append(in, s...)
			if len(filler) > 0 {
				in = append(in, filler[k%len(filler)])
			}
			k++
		}
		in = append(in, filler...)
		ss := tokenVariants(tok)
		sizes := []int{int(chunk%64) + 1, int(chunk/64)*97 + 1}
		out := readAllSmall(t, NewRedactor(&chunkReader{data: bytes.Clone(in), sizes: sizes}, ss...), int(chunk%13)+1)
		if name := spellingSurvives(out, tok); name != "" {
			t.Fatalf("token %q: spelling %q survives", tok, name)
		}
		if !bytes.Equal(out, refRedact(in, ss...)) {
			t.Fatalf("token %q: streaming output differs from the reference", tok)
		}
	})
}

// BenchmarkRedactorReserved is BenchmarkRedactor with a token whose
// variants differ (base64 "+/=" bytes), i.e. many secrets at once.
func BenchmarkRedactorReserved(b *testing.B) {
	tok := []byte("ya29.a0AfB/H+xQ9kc2Vj+cmV0/LXRva2Vu==eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-abcdefghijklmnop")
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

// BenchmarkTokenVariants is the per-request cost of deriving the variants.
func BenchmarkTokenVariants(b *testing.B) {
	for range b.N {
		if len(tokenVariants("ya29.a0AfB/H+xQ9kc2Vj+cmV0/LXRva2Vu==eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-abcdefghijklmnop")) == 0 {
			b.Fatal("no variants")
		}
	}
}

// The matcher's skip table is only used when the shortest secret has at
// least minShiftWindow bytes: compare it with the reference on repetitive
// input over a small alphabet, many secrets at once, random chunkings.
func TestRedactorManySecretsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("ab/+=%2f")
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return b
	}
	for iter := range 2000 {
		var ss [][]byte
		for range 1 + rng.IntN(40) {
			ss = append(ss, randBytes(minShiftWindow+rng.IntN(40)))
		}
		in := randBytes(rng.IntN(3000))
		for range rng.IntN(5) { // plant some secrets
			s := ss[rng.IntN(len(ss))]
			at := rng.IntN(len(in) + 1)
			in = append(in[:at], append(bytes.Clone(s), in[at:]...)...)
		}
		sizes := []int{1 + rng.IntN(100), 1 + rng.IntN(5000)}
		want := refRedact(in, ss...)
		got := readAllSmall(t, NewRedactor(&chunkReader{data: bytes.Clone(in), sizes: sizes}, ss...), 1+rng.IntN(700))
		if !bytes.Equal(got, want) {
			t.Fatalf("iter %d: in %q secrets %q sizes %v:\n got %q\nwant %q", iter, in, ss, sizes, got, want)
		}
	}
}

// The variants are deduplicated and longest first, and a token without
// reserved bytes keeps a short list (the common case costs little).
func TestTokenVariantsForm(t *testing.T) {
	for _, tok := range append(reservedTokens, "oauthtest-at-0123456789abcdef0123456789abcdef0123456789abcdef") {
		vs := tokenVariants(tok)
		if !isNorm(vs) {
			t.Errorf("%q: variants not deduplicated and longest first", tok)
		}
		if !slices.ContainsFunc(vs, func(v []byte) bool { return string(v) == tok }) {
			t.Errorf("%q: raw token missing", tok)
		}
	}
	if n := len(tokenVariants("oauthtest-at-0123456789abcdef0123456789abcdef0123456789abcdef")); n > 8 {
		t.Errorf("%d variants for a token without reserved bytes", n)
	}
}

// A long token full of reserved bytes (tokens may be 64 KiB) must not
// make every request build megabytes of combinations: beyond
// maxSpellBytes only the uniform spellings are built, and those still
// include the common encoders' output.
func TestTokenVariantsBounded(t *testing.T) {
	tok := strings.Repeat("ab/+=\"<>&'!$", 64<<10/13)
	total := 0
	for _, v := range tokenVariants(tok) {
		total += len(v)
	}
	if total > 8<<20 {
		t.Fatalf("%d bytes of variants for a %d-byte token", total, len(tok))
	}
	out := readAllSmall(t, NewRedactor(strings.NewReader("x"+url.QueryEscape(tok)+"y"+tok+"z"), tokenVariants(tok)...), 4096)
	if string(out) != "x[REDACTED]y[REDACTED]z" {
		t.Fatalf("long token not redacted: %.200q", out)
	}
}
