package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
)

func TestCheckpointDetailRoundTrip(t *testing.T) {
	sig := bytes.Repeat([]byte{0xfb, 0xff}, 32)
	c := Checkpoint{Alg: AlgES256, Seq: 41, Hash: strings.Repeat("ab", 32), Sig: sig}
	d := c.String()
	want := "alg=ES256 seq=41 hash=" + strings.Repeat("ab", 32) + " sig=" + base64.RawURLEncoding.EncodeToString(sig)
	if d != want {
		t.Fatalf("detail = %q, want %q", d, want)
	}
	got, err := ParseCheckpoint(d)
	if err != nil || got.Alg != c.Alg || got.Seq != c.Seq || got.Hash != c.Hash || !bytes.Equal(got.Sig, sig) {
		t.Fatalf("ParseCheckpoint = %+v, %v", got, err)
	}
	h := strings.Repeat("ab", 32)
	for _, bad := range []string{
		"",
		"alg=ES256 seq=41 hash=" + h,
		"alg=ES256 seq=41 hash=" + h + " sig=AAAA extra=1",
		"seq=41 alg=ES256 hash=" + h + " sig=AAAA",
		"alg=es256 seq=41 hash=" + h + " sig=AAAA",
		"alg= seq=41 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=041 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=0 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=-1 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=9007199254740993 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=41 hash=" + strings.ToUpper(h) + " sig=AAAA",
		"alg=ES256 seq=41 hash=" + h[:62] + " sig=AAAA",
		"alg=ES256 seq=41 hash=" + h + " sig=",
		"alg=ES256 seq=41 hash=" + h + " sig=AAA=",
		"alg=ES256 seq=41 hash=" + h + " sig=A+/A",
		"alg=ES256  seq=41 hash=" + h + " sig=AAAA",
		"alg=ES256 seq=41 hash=" + h + " sig=AAAA ",
	} {
		if _, err := ParseCheckpoint(bad); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("ParseCheckpoint(%q) = %v, want ErrCheckpoint", bad, err)
		}
	}
}

// The signed message is pinned: a verifier written from docs/api.md must
// compute the same digest.
func TestCheckpointDigestPinned(t *testing.T) {
	h := strings.Repeat("0", 64)
	want := sha256.Sum256([]byte("vaultd audit checkpoint v1\nES256\n7\n" + h))
	if got := CheckpointDigest(AlgES256, 7, h); !bytes.Equal(got, want[:]) {
		t.Fatal("CheckpointDigest differs from the documented message")
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	h := strings.Repeat("0f", 32)
	f.Add("alg=ES256 seq=1 hash=" + h + " sig=" + base64.RawURLEncoding.EncodeToString(make([]byte, 64)))
	f.Add("alg=PS256 seq=9007199254740992 hash=" + h + " sig=AA")
	f.Add("alg=ES256 seq=1 hash=" + h + " sig=AA==")
	f.Add("")
	f.Fuzz(func(t *testing.T, detail string) {
		c, err := ParseCheckpoint(detail)
		if err != nil {
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("error outside ErrCheckpoint: %v", err)
			}
			return
		}
		// Canonical: what parses prints back to the same text.
		if c.String() != detail {
			t.Fatalf("ParseCheckpoint(%q) re-encodes as %q", detail, c.String())
		}
		if c.Seq == 0 || c.Seq > maxSafeSeq || !isHash(c.Hash) || len(c.Sig) == 0 {
			t.Fatalf("accepted an invalid checkpoint %+v", c)
		}
	})
}

// signedTrail records events with two checkpoints between them: 5 events,
// checkpoint (seq 6), 5 events, checkpoint (seq 12), 3 events.
func signedTrail(t *testing.T, signer hsm.AuditSigner) (*Log, [][]byte) {
	t.Helper()
	l := newTestLog(t, &fakeStore{}, "", newClock())
	if _, written, err := l.Checkpoint(t.Context(), signer); err != nil || written {
		t.Fatalf("Checkpoint of an empty trail = %v, %v; want nothing written", written, err)
	}
	record(t, l, 0, 5)
	checkpoint(t, l, signer, 6)
	if _, written, err := l.Checkpoint(t.Context(), signer); err != nil || written {
		t.Fatalf("Checkpoint right after a checkpoint = %v, %v; want nothing written", written, err)
	}
	record(t, l, 5, 5)
	checkpoint(t, l, signer, 12)
	record(t, l, 10, 3)
	return l, bytes.Split(bytes.TrimSuffix(export(t, l), []byte("\n")), []byte("\n"))
}

func checkpoint(t *testing.T, l *Log, signer hsm.AuditSigner, wantSeq uint64) Event {
	t.Helper()
	ev, written, err := l.Checkpoint(t.Context(), signer)
	if err != nil || !written || ev.Seq != wantSeq {
		t.Fatalf("Checkpoint = seq %d, %v, %v; want seq %d written", ev.Seq, written, err, wantSeq)
	}
	if ev.Action != ActionCheckpoint || ev.Actor != "vaultd" || ev.Outcome != OutcomeSuccess || ev.TenantID != "" {
		t.Fatalf("checkpoint event %+v", ev)
	}
	pub, err := signer.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantAlg, err := AlgOf(pub)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCheckpoint(ev.Detail)
	if err != nil || c.Seq != ev.Seq-1 || c.Hash != ev.PrevHash || c.Alg != wantAlg {
		t.Fatalf("checkpoint detail %q (%v) does not name the previous event", ev.Detail, err)
	}
	return ev
}

// rewrite applies edit to the line at index i and recomputes the hashes of
// it and every later line: what someone with write access to the store or
// the files would do to hide an edit from the hash chain.
func rewrite(t *testing.T, lines [][]byte, i int, edit func(*Event)) [][]byte {
	t.Helper()
	out := make([][]byte, len(lines))
	copy(out, lines)
	prev := ""
	for j := i; j < len(out); j++ {
		ev, err := ParseEvent(out[j])
		if err != nil {
			t.Fatal(err)
		}
		if j == i {
			edit(&ev)
		} else {
			ev.PrevHash = prev
		}
		ev.Hash = ""
		line, h, err := seal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out[j], prev = line, h
	}
	return out
}

func verifyWith(key any, lines [][]byte) (VerifyResult, error) {
	var v Verifier
	v.SetCheckpointKey(key)
	err := v.AddReader(bytes.NewReader(append(bytes.Join(lines, []byte("\n")), '\n')))
	return v.Result(), err
}

func TestCheckpointVerifier(t *testing.T) {
	signer := hsmtest.NewFake()
	pub, err := signer.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, lines := signedTrail(t, signer)

	res, err := verifyWith(pub, lines)
	if err != nil || res.Checkpoints != 2 || res.LastCheckpoint != 12 || res.Events != 15 {
		t.Fatalf("good trail: %+v, %v; want 15 events, checkpoints 6 and 12", res, err)
	}

	// Event 3 edited, every later hash recomputed: the chain alone is
	// fooled, the first checkpoint after the edit is not.
	rewritten := rewrite(t, lines, 2, func(ev *Event) { ev.Detail = "rewritten" })
	if _, err := verifyWith(nil, rewritten); err != nil {
		t.Fatalf("without a key the rewritten trail should chain: %v", err)
	}
	_, err = verifyWith(pub, rewritten)
	wantVerifierError(t, err, 6, "checkpoint signed seq 5")

	// A rewriter who also edits the checkpoint's claim cannot sign it.
	forged := rewrite(t, lines, 2, func(ev *Event) { ev.Detail = "rewritten" })
	cpEv, _ := ParseEvent(forged[5])
	c, _ := ParseCheckpoint(cpEv.Detail)
	c.Hash = cpEv.PrevHash
	forged = rewrite(t, forged, 5, func(ev *Event) { ev.Detail = c.String() })
	_, err = verifyWith(pub, forged)
	wantVerifierError(t, err, 6, "signature does not verify")

	// Another HSM's key.
	otherPub, _ := hsmtest.NewFake().AuditPublicKey(t.Context())
	_, err = verifyWith(otherPub, lines)
	wantVerifierError(t, err, 6, "signature does not verify")

	// A flipped signature bit in the second checkpoint, hashes recomputed.
	tampered := rewrite(t, lines, 11, func(ev *Event) {
		c, err := ParseCheckpoint(ev.Detail)
		if err != nil {
			t.Fatal(err)
		}
		c.Sig[7] ^= 0x40
		ev.Detail = c.String()
	})
	_, err = verifyWith(pub, tampered)
	wantVerifierError(t, err, 12, "signature does not verify")

	// A malformed checkpoint detail.
	garbled := rewrite(t, lines, 5, func(ev *Event) { ev.Detail = "alg=ES256" })
	_, err = verifyWith(pub, garbled)
	wantVerifierError(t, err, 6, "checkpoint")

	// A checkpoint under an algorithm the key does not have.
	renamed := rewrite(t, lines, 5, func(ev *Event) { ev.Detail = strings.Replace(ev.Detail, "alg=ES256", "alg=PS256", 1) })
	_, err = verifyWith(pub, renamed)
	wantVerifierError(t, err, 6, "alg PS256")
}

// A segment verified from an anchor checks the checkpoints in it, and the
// first line may itself be a checkpoint (its claim is checked against the
// anchor-verified prev_hash).
func TestCheckpointVerifierFromAnchor(t *testing.T) {
	signer := hsmtest.NewFake()
	pub, _ := signer.AuditPublicKey(t.Context())
	_, lines := signedTrail(t, signer)
	var v Verifier
	v.SetCheckpointKey(pub)
	v.Anchor(11, hashOfLine(t, lines[10]))
	if err := v.AddReader(bytes.NewReader(bytes.Join(lines[11:], []byte("\n")))); err != nil {
		t.Fatal(err)
	}
	if res := v.Result(); res.Checkpoints != 1 || res.LastCheckpoint != 12 {
		t.Fatalf("%+v", res)
	}
}

func TestCheckpointSignerFailure(t *testing.T) {
	signer := hsmtest.NewFake()
	l := newTestLog(t, &fakeStore{}, "", newClock())
	record(t, l, 0, 2)
	signer.FailNext(hsm.ErrUnavailable) // AuditPublicKey
	if _, _, err := l.Checkpoint(t.Context(), signer); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Checkpoint with the HSM down: %v", err)
	}
	signer.DropAuditKey()
	if _, _, err := l.Checkpoint(t.Context(), signer); !errors.Is(err, hsm.ErrAuditKeyNotFound) {
		t.Fatalf("Checkpoint without the key: %v", err)
	}
	if got := len(bytes.Split(bytes.TrimSpace(export(t, l)), []byte("\n"))); got != 2 {
		t.Fatalf("%d events after failed checkpoints, want 2", got)
	}
}

// storedSignedChain is a database holding events and checkpoints: n
// events, then a checkpoint every `every` events.
func storedSignedChain(t *testing.T, signer hsm.AuditSigner, n, every int) *fakeStore {
	t.Helper()
	s := &fakeStore{}
	l, err := New(t.Context(), s, Options{Logger: testLogger(t), Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += every {
		record(t, l, i, every)
		if _, _, err := l.Checkpoint(t.Context(), signer); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

func startSigned(t *testing.T, s *fakeStore, key any, tail uint64) (*Log, error) {
	t.Helper()
	l, err := New(t.Context(), s, Options{Logger: testLogger(t), Now: newClock().Now,
		VerifyOnStart: true, VerifyTail: tail, CheckpointKey: key})
	if err == nil {
		t.Cleanup(func() { _ = l.Close() })
	}
	return l, err
}

// Start-up verifies synchronously from the newest checkpoint, not just the
// newest VerifyTail events: 40 events with a checkpoint after every 10
// (seqs 11, 22, 33, 44), then 5 more: head 49.
func TestStartupFromCheckpoint(t *testing.T) {
	signer := hsmtest.NewFake()
	pub, _ := signer.AuditPublicKey(t.Context())
	build := func() *fakeStore {
		s := storedSignedChain(t, signer, 40, 10)
		l, err := New(t.Context(), s, Options{Logger: testLogger(t), Now: newClock().Now})
		if err != nil {
			t.Fatal(err)
		}
		record(t, l, 40, 5)
		_ = l.Close()
		return s
	}

	// Clean: starts, and knows the newest checkpoint.
	s := build()
	l, err := startSigned(t, s, pub, 2)
	if err != nil {
		t.Fatalf("clean start: %v", err)
	}
	waitBackground(t, l)
	if l.bgErr != nil {
		t.Fatalf("background pass: %v", l.bgErr)
	}
	if got := l.lastCheckpoint.Load(); got != 44 {
		t.Fatalf("last checkpoint %d, want 44", got)
	}

	// Seq 46 edited (outside the 2-event tail, after the checkpoint): the
	// tail alone would start and leave it to the background; from the
	// checkpoint the start is refused.
	s = build()
	editStored(t, s, 46, false)
	if _, err := startSigned(t, s, nil, 2); err != nil {
		t.Fatalf("tail-only start should not see seq 46: %v", err)
	}
	_, err = startSigned(t, s, pub, 2)
	wantStartRefused(t, err, 46)

	// The newest checkpoint under another key: refused at its seq.
	s = build()
	other, _ := hsmtest.NewFake().AuditPublicKey(t.Context())
	_, err = startSigned(t, s, other, 2)
	wantStartRefused(t, err, 44)
	if !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("refusal does not say the signature failed: %v", err)
	}

	// The database rewritten before the newest checkpoint with every hash
	// recomputed: the sync part passes the chain, the checkpoint claim
	// does not.
	s = build()
	rewriteStored(t, s, 40)
	_, err = startSigned(t, s, pub, 2)
	wantStartRefused(t, err, 44)

	// Rewritten further back: every later hash changed, so the newest
	// checkpoint's claim fails too, before vaultd serves.
	s = build()
	rewriteStored(t, s, 3)
	_, err = startSigned(t, s, pub, 2)
	wantStartRefused(t, err, 44)

	// An edit before the newest checkpoint that leaves the hashes alone
	// is the full background pass's to find; Record is refused after.
	s = build()
	editStored(t, s, 3, false)
	l, err = startSigned(t, s, pub, 2)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	waitBackground(t, l)
	var ce *ChainError
	if !errors.As(l.bgErr, &ce) || ce.Seq != 3 {
		t.Fatalf("background pass = %v, want a break at seq 3", l.bgErr)
	}
}

// rewriteStored edits stored event seq and recomputes every hash from it
// to the head, as a rewriter with write access to the database would.
func rewriteStored(t *testing.T, s *fakeStore, seq uint64) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := make([][]byte, len(s.recs))
	for i, r := range s.recs {
		lines[i] = r.Data
	}
	lines = rewrite(t, lines, int(seq-1), func(ev *Event) { ev.Detail = fmt.Sprintf("rewritten %d", seq) })
	for i := range s.recs {
		ev, err := ParseEvent(lines[i])
		if err != nil {
			t.Fatal(err)
		}
		s.recs[i].Data, s.recs[i].Hash = lines[i], ev.Hash
	}
}
