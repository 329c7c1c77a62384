package audit

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// sealGeneral is the reference seal: hash through ComputeHash (the path
// verification uses), then encode the line with the hash set.
func sealGeneral(t *testing.T, e Event) ([]byte, string) {
	t.Helper()
	e.Hash = ""
	h, err := ComputeHash(e)
	if err != nil {
		t.Fatal(err)
	}
	e.Hash = h
	line, err := marshalLine(e)
	if err != nil {
		t.Fatal(err)
	}
	return line, h
}

// The fast path of seal produces exactly the bytes and hash of the general
// path, for values that stress JSON and JCS escaping.
func TestSealFastPathMatchesGeneral(t *testing.T) {
	if !bytes.HasSuffix(mustLine(t, Event{}), emptyHashSuffix) {
		t.Fatal("Hash is no longer the last field: the fast path is dead code; update seal")
	}
	odd := []string{
		"", "plain", `quote " backslash \ slash /`, "<html>&amp;", "tab\tnl\ncr\r",
		"\x00\x01\x1f\x7f", "é ü ß", "日本語", "emoji 😀 𝄞", "\u2028\u2029", "\ufeffbom",
		strings.Repeat("long-", 200), `{"hash":""}`, `,"hash":""}`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return odd[rng.IntN(len(odd))] }
	for i := range 2000 {
		e := Event{
			Seq:           uint64(rng.Int64N(maxSafeSeq)),
			Time:          Timestamp{time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC().Truncate(time.Microsecond)},
			TenantID:      pick(),
			IntegrationID: pick(),
			Actor:         pick(),
			OnBehalfOf:    pick(),
			Action:        "proxy.request",
			Outcome:       pick(),
			RequestID:     pick(),
			TargetHost:    pick(),
			HTTPStatus:    rng.IntN(600),
			Detail:        pick(),
			PrevHash:      pick(),
			Hash:          pick(), // ignored by both
		}
		gotLine, gotHash, err := seal(e)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		wantLine, wantHash := sealGeneral(t, e)
		if gotHash != wantHash || !bytes.Equal(gotLine, wantLine) {
			t.Fatalf("event %d differs:\nfast    %s\ngeneral %s", i, gotLine, wantLine)
		}
	}
}

func mustLine(t *testing.T, e Event) []byte {
	t.Helper()
	b, err := marshalLine(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func BenchmarkSeal(b *testing.B) {
	e := Event{Seq: 42, Time: Timestamp{time.Now().UTC()}, TenantID: "acme", IntegrationID: "sf-1",
		Actor: "spiffe://example/app", Action: "proxy.request", Outcome: "success", RequestID: "req-1",
		TargetHost: "api.example.com", HTTPStatus: 200, PrevHash: strings.Repeat("a", 64)}
	for range b.N {
		if _, _, err := seal(e); err != nil {
			b.Fatal(err)
		}
	}
}
