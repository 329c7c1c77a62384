package ctl

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// signedExport records 4 events, a checkpoint (seq 5), 4 events, a
// checkpoint (seq 10) and 2 events, and returns the export's lines and
// the signer's public key as a PEM file.
func signedExport(t *testing.T, signer hsm.AuditSigner) (lines []string, pemFile string) {
	t.Helper()
	ctx := t.Context()
	st, err := bolt.Open(ctx, filepath.Join(t.TempDir(), "vault.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log, err := audit.New(ctx, st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(n int) {
		for range n {
			if _, err := log.Record(ctx, audit.Event{TenantID: "acme", Actor: "t", Action: audit.ActionTenantRead, Outcome: audit.OutcomeSuccess}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cp := func() {
		if _, ok, err := log.Checkpoint(ctx, signer); err != nil || !ok {
			t.Fatalf("Checkpoint: %v, %v", ok, err)
		}
	}
	rec(4)
	cp()
	rec(4)
	cp()
	rec(2)
	var b strings.Builder
	if err := log.Query(ctx, audit.Filter{Limit: audit.MaxLimit}, func(line []byte) error { b.Write(line); return nil }); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	return lines, pubkeyFile(t, signer)
}

func pubkeyFile(t *testing.T, signer hsm.AuditSigner) string {
	t.Helper()
	pub, err := signer.AuditPublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "audit.pub")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// rewriteFrom edits line i and recomputes every hash from there.
func rewriteFrom(t *testing.T, lines []string, i int, edit func(*audit.Event)) []string {
	t.Helper()
	out := append([]string(nil), lines...)
	prev := ""
	for j := i; j < len(out); j++ {
		ev, err := audit.ParseEvent([]byte(out[j]))
		if err != nil {
			t.Fatal(err)
		}
		if j == i {
			edit(&ev)
		} else {
			ev.PrevHash = prev
		}
		if ev.Hash, err = audit.ComputeHash(ev); err != nil {
			t.Fatal(err)
		}
		b, err := jsonLine(ev)
		if err != nil {
			t.Fatal(err)
		}
		out[j], prev = b, ev.Hash
	}
	return out
}

func jsonLine(ev audit.Event) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func TestAuditVerifyPubkey(t *testing.T) {
	signer := hsmtest.NewFake()
	lines, pub := signedExport(t, signer)
	n := len(lines)
	file := writeLines(t, lines, 0, n)

	out, err := runVerify("-pubkey", pub, file)
	wantVerifyOK(t, out, err, n, n)
	if !strings.Contains(out, "ok: 2 signed checkpoints verify, the last at seq 10") {
		t.Fatalf("output does not report the checkpoints: %q", out)
	}
	// Flags after the files, as elsewhere.
	out, err = runVerify(file, "-pubkey", pub)
	wantVerifyOK(t, out, err, n, n)

	// Rewritten with recomputed hashes: the chain passes, -pubkey fails
	// at the first checkpoint after the edit.
	rewritten := writeLines(t, rewriteFrom(t, lines, 1, func(ev *audit.Event) { ev.Detail = "rewritten" }), 0, n)
	out, err = runVerify(rewritten)
	wantVerifyOK(t, out, err, n, n)
	out, err = runVerify("-pubkey", pub, rewritten)
	wantVerifyFails(t, out, err, "chain broken at seq 5", "checkpoint")

	// Edited after the first checkpoint: fails at the second.
	late := writeLines(t, rewriteFrom(t, lines, 6, func(ev *audit.Event) { ev.Detail = "late" }), 0, n)
	out, err = runVerify("-pubkey", pub, late)
	wantVerifyFails(t, out, err, "chain broken at seq 10")

	// Another key.
	out, err = runVerify("-pubkey", pubkeyFile(t, hsmtest.NewFake()), file)
	wantVerifyFails(t, out, err, "chain broken at seq 5", "signature does not verify")

	// A tampered signature, hashes recomputed.
	tampered := writeLines(t, rewriteFrom(t, lines, 9, func(ev *audit.Event) {
		c, err := audit.ParseCheckpoint(ev.Detail)
		if err != nil {
			t.Fatal(err)
		}
		c.Sig[0] ^= 1
		ev.Detail = c.String()
	}), 0, n)
	out, err = runVerify("-pubkey", pub, tampered)
	wantVerifyFails(t, out, err, "chain broken at seq 10", "signature does not verify")

	// Every checkpoint dropped and the rest re-chained: refused.
	var kept []string
	for _, l := range lines {
		if !strings.Contains(l, audit.ActionCheckpoint) {
			kept = append(kept, l)
		}
	}
	stripped := make([]string, len(kept))
	prev := ""
	for i, l := range kept {
		ev, _ := audit.ParseEvent([]byte(l))
		ev.Seq = uint64(i + 1)
		if i > 0 {
			ev.PrevHash = prev
		}
		ev.Hash, _ = audit.ComputeHash(ev)
		stripped[i], _ = jsonLine(ev)
		prev = ev.Hash
	}
	strippedFile := writeLines(t, stripped, 0, len(stripped))
	out, err = runVerify(strippedFile)
	wantVerifyOK(t, out, err, len(stripped), len(stripped))
	out, err = runVerify("-pubkey", pub, strippedFile)
	wantVerifyFails(t, out, err, "no signed checkpoint")

	// -from-anchor and several files still work with -pubkey.
	out, err = runVerify("-pubkey", pub, "-from-anchor", fmt.Sprintf("3:%s", lineHash(t, lines[2])), writeLines(t, lines, 3, 7), writeLines(t, lines, 7, n))
	wantVerifyOK(t, out, err, n-3, n)

	// Not a key file.
	out, err = runVerify("-pubkey", file, file)
	wantVerifyFails(t, out, err, "PUBLIC KEY")
}
