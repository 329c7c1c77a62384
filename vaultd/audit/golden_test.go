package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// The golden vector pins the wire format and the hash definition, so
// neither can drift without this test failing. The canonical form below is
// written by hand from RFC 8785 (keys sorted, no whitespace, "\n" and
// U+001F escaped, U+2028, "<&>" and "é" literal); its hash was confirmed
// outside Go with `printf '%s\n%s' <prev_hash> <canonical> | sha256sum` and
// with Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) over testdata/golden.jsonl.
const (
	goldenCanonical = `{"action":"proxy.request","actor":"spiffe://example.internal/app/crm-sync","detail":"execute <&> é\n\u001f` + "\u2028" + `","http_status":200,"integration_id":"crm","on_behalf_of":"user-42","outcome":"success","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","request_id":"req-1","seq":1,"target_host":"api.example.com","tenant_id":"acme","time":"2026-03-01T12:00:00.123456Z"}`
	goldenHash1     = "66ab78a8b92027420237b7737585213e351f4677e1979d344204cd6c8ad37a1f"
	goldenHash2     = "a2fefa299e869648aed5be96e3dea87129afc265578a5aa7515aa36def2cda23"
)

func goldenEvent() Event {
	return Event{
		Seq:           1,
		Time:          NewTimestamp(time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)),
		TenantID:      "acme",
		IntegrationID: "crm",
		Actor:         "spiffe://example.internal/app/crm-sync",
		OnBehalfOf:    "user-42",
		Action:        ActionProxyRequest,
		Outcome:       OutcomeSuccess,
		RequestID:     "req-1",
		TargetHost:    "api.example.com",
		HTTPStatus:    200,
		Detail:        "execute <&> é\n\u001f\u2028",
		PrevHash:      storage.GenesisHash,
	}
}

func TestGoldenVector(t *testing.T) {
	golden, err := os.ReadFile("testdata/golden.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(golden, []byte("\n")), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("golden file has %d lines, want 2", len(lines))
	}

	// Independent of ComputeHash: SHA-256 of the hand-written pre-image.
	sum := sha256.Sum256([]byte(storage.GenesisHash + "\n" + goldenCanonical))
	if got := hex.EncodeToString(sum[:]); got != goldenHash1 {
		t.Fatalf("hand-computed hash %s, want %s", got, goldenHash1)
	}

	ev := goldenEvent()
	h, err := ComputeHash(ev)
	if err != nil {
		t.Fatal(err)
	}
	if h != goldenHash1 {
		t.Fatalf("ComputeHash = %s, want %s", h, goldenHash1)
	}
	ev.Hash = h
	line, err := marshalLine(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(line, lines[0]) {
		t.Fatalf("stored line drifted:\n got %s\nwant %s", line, lines[0])
	}
	c, err := Canonical(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(c) != goldenCanonical {
		t.Fatalf("canonical form drifted:\n got %s\nwant %s", c, goldenCanonical)
	}
	// The hash covers the contract fields and nothing else.
	back, err := ParseEvent(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if back != ev {
		t.Fatalf("ParseEvent round trip: got %+v, want %+v", back, ev)
	}

	res, err := Verify(bytes.NewReader(golden))
	if err != nil {
		t.Fatal(err)
	}
	want := VerifyResult{Events: 2, FirstSeq: 1, LastSeq: 2, LastHash: goldenHash2, Anchored: true}
	if res != want {
		t.Fatalf("Verify = %+v, want %+v", res, want)
	}
}

// A copy of the chain whose lines were re-serialised (keys reordered,
// whitespace added, escapes changed) still verifies: the hash is over the
// canonical form, not the bytes.
func TestVerifyIsSemanticNotBytewise(t *testing.T) {
	golden, err := os.ReadFile("testdata/golden.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.SplitN(golden, []byte("\n"), 2)[0]
	m, err := canonicalMap(first)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("{ ")
	// Reverse key order, spaces after separators, CRLF line end.
	keys := []string{"time", "tenant_id", "target_host", "seq", "request_id", "prev_hash", "outcome",
		"on_behalf_of", "integration_id", "http_status", "hash", "detail", "actor", "action"}
	for i, k := range keys {
		if i > 0 {
			buf.WriteString(" , ")
		}
		buf.WriteString(`"` + k + `" : `)
		buf.Write(m[k])
	}
	buf.WriteString(" }\r\n")
	res, err := Verify(&buf)
	if err != nil {
		t.Fatalf("reformatted line: %v", err)
	}
	if res.LastHash != goldenHash1 || !res.Anchored {
		t.Fatalf("result %+v", res)
	}
}
