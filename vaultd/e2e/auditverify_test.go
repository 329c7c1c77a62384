package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// auditTrail makes a running vaultd record a handful of events and returns
// the unfiltered export (GET /v1/audit) as lines.
func auditTrail(t *testing.T, e *Env) []string {
	t.Helper()
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	e.StoreToken(AppAcme, "crm")
	e.StoreToken(AppGlobex, "g1")
	for range 2 {
		wantStatus(t, do(t, e.HTTP(AppAcme), "GET", e.API+"/v1/integrations/crm/proxy/contacts", nil), 200)
	}
	r := do(t, e.HTTP(Auditor), "GET", e.API+"/v1/audit", nil)
	wantStatus(t, r, 200)
	lines := strings.Split(strings.TrimRight(string(r.Body), "\n"), "\n")
	if len(lines) < 6 {
		t.Fatalf("only %d events", len(lines))
	}
	return lines
}

func writeAuditLines(t *testing.T, dir, name string, lines []string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	must(t, os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	return f
}

func ctlFails(t *testing.T, e *Env, want []string, args ...string) {
	t.Helper()
	out, err := e.Ctl(args...)
	if err == nil {
		t.Fatalf("vaultctl %v passed, want a failure: %s", args, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("vaultctl %v: output does not contain %q:\n%s", args, w, out)
		}
	}
}

func ctlOK(t *testing.T, e *Env, args ...string) string {
	t.Helper()
	out, err := e.Ctl(args...)
	if err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("vaultctl %v: %v\n%s", args, err, out)
	}
	return out
}

// TestAdversarialAuditVerifyUnanchored: removing the first lines of the
// mirror or of an export must not verify as "ok"; -from-anchor with the
// hash of the event before the cut does; an export split in two files
// verifies across the boundary, and a gap between the files does not.
func TestAdversarialAuditVerifyUnanchored(t *testing.T) {
	e := New(t, Options{})
	export := auditTrail(t, e)
	must(t, e.Stop())
	mirrorData, err := os.ReadFile(e.AuditPath)
	must(t, err)
	mirror := strings.Split(strings.TrimRight(string(mirrorData), "\n"), "\n")
	ctlOK(t, e, "audit", "verify", e.AuditPath)

	for name, lines := range map[string][]string{"mirror": mirror, "export": export} {
		t.Run(name, func(t *testing.T) {
			k := len(lines) / 2 // keep seq k+1 onwards
			cut := writeAuditLines(t, e.Dir, name+"-head-truncated.jsonl", lines[k:])
			ctlFails(t, e, []string{"unanchored", fmt.Sprintf("first event is seq %d, not 1", k+1), fmt.Sprintf("-from-anchor %d:", k)},
				"audit", "verify", cut)

			prev := parseNDJSON(t, []byte(lines[k-1]))[0].s("hash")
			out := ctlOK(t, e, "audit", "verify", "-from-anchor", fmt.Sprintf("%d:%s", k, prev), cut)
			if !strings.Contains(out, fmt.Sprintf("last seq %d", len(lines))) {
				t.Fatalf("anchored verify: %s", out)
			}
			// An anchor that does not match (the hash of another event).
			other := parseNDJSON(t, []byte(lines[k-2]))[0].s("hash")
			ctlFails(t, e, []string{fmt.Sprintf("seq %d", k+1)}, "audit", "verify", "-from-anchor", fmt.Sprintf("%d:%s", k, other), cut)

			first := writeAuditLines(t, e.Dir, name+"-part1.jsonl", lines[:k])
			ctlOK(t, e, "audit", "verify", first, cut)
			// Seq k+1 is in neither file.
			gap := writeAuditLines(t, e.Dir, name+"-part2-gap.jsonl", lines[k+1:])
			ctlFails(t, e, []string{fmt.Sprintf("seq %d", k+1)}, "audit", "verify", first, gap)
		})
	}
}

// TestAdversarialAuditTamperedStoreRefusesStart: an event edited inside the
// bbolt database while vaultd was stopped makes vaultd refuse to start with
// one line naming that seq, and leaves the mirror (the honest copy) as it
// was. With [audit] verify_on_start = false the operator can still bring
// it up, knowingly.
func TestAdversarialAuditTamperedStoreRefusesStart(t *testing.T) {
	e := New(t, Options{})
	lines := auditTrail(t, e)
	must(t, e.Stop())
	mirrorBefore, err := os.ReadFile(e.AuditPath)
	must(t, err)
	seq := uint64(len(lines) / 2)

	editStoredEvent(t, e.DBPath, seq, func(v []byte) []byte {
		return bytes.Replace(v, []byte(`"detail":"`), []byte(`"detail":"nothing to see `), 1)
	})
	line := startRefused(t, e)
	for _, w := range []string{fmt.Sprintf("chain broken at seq %d", seq), "audit"} {
		if !strings.Contains(line, w) {
			t.Fatalf("start-up error does not mention %q: %s", w, line)
		}
	}
	mirrorAfter, err := os.ReadFile(e.AuditPath)
	must(t, err)
	if !bytes.Equal(mirrorBefore, mirrorAfter) {
		t.Fatal("the mirror was rewritten from the tampered database")
	}
	if m, _ := filepath.Glob(e.AuditPath + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("mirror renamed: %v", m)
	}

	// The operator's way out once the incident is handled.
	text, err := os.ReadFile(e.ConfigPath)
	must(t, err)
	off := strings.Replace(string(text), "[audit]\n", "[audit]\nverify_on_start = false\n", 1)
	if off == string(text) {
		t.Fatal("no [audit] table in the config")
	}
	must(t, os.WriteFile(e.ConfigPath, []byte(off), 0o600))
	if err := e.TryStart(); err != nil {
		t.Fatalf("vaultd with verify_on_start = false: %v\n%s", err, e.Logs())
	}
	must(t, e.Stop())
	must(t, os.WriteFile(e.ConfigPath, text, 0o600))
}

// TestAdversarialAuditDeletedEventRefusesStart: deleting an event from the
// database (and nothing else) is a gap the start-up check names.
func TestAdversarialAuditDeletedEventRefusesStart(t *testing.T) {
	e := New(t, Options{})
	lines := auditTrail(t, e)
	must(t, e.Stop())
	seq := uint64(len(lines) / 2)
	editStoredEvent(t, e.DBPath, seq, func([]byte) []byte { return nil })
	line := startRefused(t, e)
	if !strings.Contains(line, fmt.Sprintf("chain broken at seq %d", seq)) {
		t.Fatalf("start-up error does not name seq %d: %s", seq, line)
	}
}

// editStoredEvent rewrites (or, when edit returns nil, deletes) the audit
// record seq in a stopped vaultd's database.
func editStoredEvent(t *testing.T, path string, seq uint64, edit func([]byte) []byte) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	must(t, err)
	defer func() { must(t, db.Close()) }()
	key := binary.BigEndian.AppendUint64(nil, seq)
	must(t, db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		if b == nil {
			return errors.New("no audit bucket")
		}
		v := b.Get(key)
		if v == nil {
			return fmt.Errorf("no audit record %d", seq)
		}
		nv := edit(bytes.Clone(v))
		if nv == nil {
			return b.Delete(key)
		}
		if bytes.Equal(nv, v) {
			return fmt.Errorf("edit of seq %d changed nothing", seq)
		}
		return b.Put(key, nv)
	}))
}

// startRefused starts vaultd, which must exit non-zero before it is ready,
// and returns the last line it wrote (the error).
func startRefused(t *testing.T, e *Env) string {
	t.Helper()
	if err := e.TryStart(); err == nil {
		e.Stop()
		t.Fatalf("vaultd started on a tampered audit trail; logs:\n%s", e.Logs())
	}
	var ee *exec.ExitError
	if !errors.As(e.exitErr, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("vaultd did not exit non-zero: %v", e.exitErr)
	}
	out := strings.Split(strings.TrimRight(e.Logs(), "\n"), "\n")
	t.Logf("vaultd refused to start: %s", out[len(out)-1])
	return out[len(out)-1]
}
