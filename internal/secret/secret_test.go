package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestStringNeverPrints(t *testing.T) {
	const plain = "ya29.super-secret-token"
	s := NewString(plain)
	b := NewBytes([]byte(plain))
	type wrapper struct {
		Tok String
		Key Bytes
	}
	w := wrapper{Tok: s, Key: b}

	var out []string
	out = append(out, fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s))
	out = append(out, fmt.Sprint(b), fmt.Sprintf("%v %+v %#v %s %q %x", b, b, b, b, b, b))
	out = append(out, fmt.Sprintf("%v %+v %#v", w, w, &w))
	j, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j))
	var logBuf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&logBuf, nil))
	l.Info("x", "tok", s, "key", b, "w", w)
	l2 := slog.New(slog.NewTextHandler(&logBuf, nil))
	l2.Info("x", "tok", s, "key", b)
	out = append(out, logBuf.String())
	for _, o := range out {
		if strings.Contains(o, plain) || strings.Contains(o, fmt.Sprintf("%x", plain)) {
			t.Fatalf("secret leaked: %s", o)
		}
		if !strings.Contains(o, Redacted) {
			t.Fatalf("expected redaction marker in %q", o)
		}
	}
	if s.Reveal() != plain || string(b.Reveal()) != plain {
		t.Fatal("Reveal must return the plaintext")
	}
}

func TestWipeAndEqual(t *testing.T) {
	raw := []byte{1, 2, 3}
	b := NewBytes(raw)
	b.Wipe()
	if !bytes.Equal(raw, []byte{0, 0, 0}) {
		t.Fatalf("not wiped: %v", raw)
	}
	if !NewString("a").Equal(NewString("a")) || NewString("a").Equal(NewString("b")) {
		t.Fatal("Equal wrong")
	}
	if !(String{}).IsZero() || NewString("x").Len() != 1 {
		t.Fatal("IsZero/Len wrong")
	}
}
