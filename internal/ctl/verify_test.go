package ctl

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
)

const verifyN = 12

// auditExport records verifyN events (tenants alternating acme, globex)
// and returns the export's lines and the acme-filtered export.
func auditExport(t *testing.T) (lines []string, filtered []byte) {
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
	for i := range verifyN {
		tenant := []string{"acme", "globex"}[i%2]
		if _, err := log.Record(ctx, audit.Event{TenantID: tenant, Actor: "t", Action: audit.ActionTenantRead, Outcome: audit.OutcomeSuccess, HTTPStatus: 200}); err != nil {
			t.Fatal(err)
		}
	}
	query := func(f audit.Filter) []byte {
		var buf bytes.Buffer
		if err := log.Query(ctx, f, func(line []byte) error { buf.Write(line); return nil }); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	all := query(audit.Filter{Limit: audit.MaxLimit})
	lines = strings.Split(strings.TrimSuffix(string(all), "\n"), "\n")
	if len(lines) != verifyN {
		t.Fatalf("%d lines", len(lines))
	}
	return lines, query(audit.Filter{TenantID: "acme", Limit: audit.MaxLimit})
}

// writeLines writes lines[from:to] (seq from+1 .. to) as an NDJSON file.
func writeLines(t *testing.T, lines []string, from, to int) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), fmt.Sprintf("seq-%d-%d.jsonl", from+1, to))
	if err := os.WriteFile(f, []byte(strings.Join(lines[from:to], "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func lineHash(t *testing.T, line string) string {
	t.Helper()
	var ev struct {
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Hash
}

func runVerify(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"audit", "verify"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

func wantVerifyFails(t *testing.T, out string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("verify passed, want a failure with %q: %s", want, out)
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not contain %q", msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Fatalf("error is not one line: %q", msg)
	}
}

func wantVerifyOK(t *testing.T, out string, err error, events, last int) {
	t.Helper()
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("ok: %d events chain (last seq %d", events, last); !strings.HasPrefix(out, want) {
		t.Fatalf("output %q, want it to start with %q", out, want)
	}
}

// A file whose first lines were removed is not a chain from seq 1: verify
// must not report it ok, and says how to check it from a known point.
func TestAuditVerifyHeadTruncated(t *testing.T) {
	lines, _ := auditExport(t)
	whole := writeLines(t, lines, 0, verifyN)
	out, err := runVerify(whole)
	wantVerifyOK(t, out, err, verifyN, verifyN)

	truncated := writeLines(t, lines, 3, verifyN)
	out, err = runVerify(truncated)
	wantVerifyFails(t, out, err, "unanchored", "first event is seq 4, not 1", "-from-anchor 3:")
}

// -from-anchor SEQ:HASH names the expected start: the first event must be
// seq SEQ+1 with prev_hash HASH.
func TestAuditVerifyFromAnchor(t *testing.T) {
	lines, _ := auditExport(t)
	truncated := writeLines(t, lines, 3, verifyN)
	h3 := lineHash(t, lines[2])

	out, err := runVerify("-from-anchor", "3:"+h3, truncated)
	wantVerifyOK(t, out, err, verifyN-3, verifyN)
	// Flags may follow the files, as in the API commands.
	out, err = runVerify(truncated, "-from-anchor", "3:"+h3)
	wantVerifyOK(t, out, err, verifyN-3, verifyN)

	out, err = runVerify("-from-anchor", "3:"+lineHash(t, lines[1]), truncated)
	wantVerifyFails(t, out, err, "seq 4", "anchor")
	out, err = runVerify("-from-anchor", "2:"+lineHash(t, lines[1]), truncated)
	wantVerifyFails(t, out, err, "seq 3")
	out, err = runVerify("-from-anchor", "4:"+lineHash(t, lines[3]), truncated)
	wantVerifyFails(t, out, err, "seq 5")
	// The genesis anchor is the default.
	out, err = runVerify("-from-anchor", "0:"+strings.Repeat("0", 64), writeLines(t, lines, 0, verifyN))
	wantVerifyOK(t, out, err, verifyN, verifyN)

	for _, bad := range []string{"3", "x:" + h3, "3:" + h3[:10], "3:" + strings.ToUpper(h3), "-1:" + h3, ":" + h3} {
		out, err := runVerify("-from-anchor", bad, truncated)
		wantVerifyFails(t, out, err, "-from-anchor")
	}
}

// Several files are one chain, checked across the file boundaries.
func TestAuditVerifySegments(t *testing.T) {
	lines, _ := auditExport(t)
	a, b, c := writeLines(t, lines, 0, 4), writeLines(t, lines, 4, 9), writeLines(t, lines, 9, verifyN)

	out, err := runVerify(a, b, c)
	wantVerifyOK(t, out, err, verifyN, verifyN)

	// A gap between files: seq 5 is in neither.
	out, err = runVerify(a, writeLines(t, lines, 5, verifyN))
	wantVerifyFails(t, out, err, "seq 5")
	// Out of order.
	out, err = runVerify(b, a, c)
	wantVerifyFails(t, out, err, "seq 1")
	// Later segments alone are unanchored, as one file is.
	out, err = runVerify(b, c)
	wantVerifyFails(t, out, err, "unanchored", "first event is seq 5")
	out, err = runVerify("-from-anchor", "4:"+lineHash(t, lines[3]), b, c)
	wantVerifyOK(t, out, err, verifyN-4, verifyN)
	// The error names the file it is in.
	tampered := append([]string(nil), lines...)
	tampered[6] = strings.Replace(tampered[6], `"actor":"t"`, `"actor":"u"`, 1)
	bad := writeLines(t, tampered, 4, 9)
	out, err = runVerify(a, bad, c)
	wantVerifyFails(t, out, err, "seq 7", bad)

	// logrotate compresses old segments: gzip is read as such.
	gz := filepath.Join(t.TempDir(), "audit.jsonl.1.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(strings.Join(lines[:4], "\n") + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gz, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runVerify(gz, b, c)
	wantVerifyOK(t, out, err, verifyN, verifyN)

	out, err = runVerify()
	wantVerifyFails(t, out, err, "usage")
}

// An export filtered by tenant, integration or action skips the other
// events' seqs: it is not a contiguous chain and does not verify. The
// failure says so rather than only reporting a broken chain.
func TestAuditVerifyFilteredExport(t *testing.T) {
	_, filtered := auditExport(t)
	f := filepath.Join(t.TempDir(), "acme.jsonl")
	if err := os.WriteFile(f, filtered, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runVerify(f)
	wantVerifyFails(t, out, err, "seq 2", "filtered")
}
