package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRetentionArchiveAndRestart: with a tiny [audit] retention and an
// archive_dir, vaultd prunes its audit trail from the database after
// archiving it as segments; the segments and an export of what remains
// verify with vaultctl as one chain from seq 1, the export alone is
// unanchored, a backup of the pruned database verifies, and vaultd
// restarts cleanly on it (start-up verification, mirror check).
func TestRetentionArchiveAndRestart(t *testing.T) {
	e := New(t, Options{NoStart: true})
	archive := filepath.Join(e.Dir, "audit-archive")
	cfg, err := os.ReadFile(e.ConfigPath)
	must(t, err)
	text := strings.Replace(string(cfg), "[audit]\n", "[audit]\nretention = \"1s\"\narchive_dir = \""+archive+"\"\n", 1)
	if text == string(cfg) {
		t.Fatal("no [audit] section in the generated config")
	}
	must(t, os.WriteFile(e.ConfigPath, []byte(text), 0o600))
	e.Start()
	ctlAPI := func(name string) []string {
		return []string{"-server", e.API, "-cert", filepath.Join(e.PKIDir, name+".crt"),
			"-key", filepath.Join(e.PKIDir, name+".key"), "-ca", filepath.Join(e.PKIDir, "ca.crt")}
	}

	auditTrail(t, e)
	// The prune runs about every second; poll (bounded) until one has
	// archived and pruned events, as the metric reports.
	pruned := regexp.MustCompile(`(?m)^vaultd_audit_pruned_events_total (\d+)`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, metrics := e.OpsGet("/metrics")
		if m := pruned.FindStringSubmatch(metrics); m != nil && m[1] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no events pruned within 60s; logs:\n%s", e.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, metrics := e.OpsGet("/metrics"); !strings.Contains(metrics, "vaultd_audit_archive_failures_total 0") {
		t.Fatalf("archive failures reported:\n%s", metrics)
	}

	// The export holds what remains. Pruning goes on meanwhile, so take
	// the segments that end before the export's first event: those were
	// written before the events they hold left the database.
	r := do(t, e.HTTP(Auditor), "GET", e.API+"/v1/audit", nil)
	wantStatus(t, r, 200)
	var first struct {
		Seq uint64 `json:"seq"`
	}
	must(t, json.Unmarshal([]byte(strings.SplitN(string(r.Body), "\n", 2)[0]), &first))
	if first.Seq <= 1 {
		t.Fatalf("export starts at seq %d after a prune", first.Seq)
	}
	exportPath := filepath.Join(t.TempDir(), "export.jsonl")
	must(t, os.WriteFile(exportPath, r.Body, 0o600))
	all, err := filepath.Glob(filepath.Join(archive, "audit-*.jsonl"))
	must(t, err)
	var segs []string
	for _, s := range all { // lexical order is chain order
		if firstSeq(t, s) < first.Seq {
			segs = append(segs, s)
		}
		fi, err := os.Stat(s)
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("segment %s has mode %v", s, fi.Mode())
		}
	}
	if len(segs) == 0 {
		t.Fatalf("no archive segment before seq %d: %v", first.Seq, all)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("archive dir: %v, %v", fi.Mode(), err)
	}
	out := ctlOK(t, e, append(append([]string{"audit", "verify"}, segs...), exportPath)...)
	t.Logf("%d segments + export: %s", len(segs), strings.TrimSpace(out))
	ctlFails(t, e, []string{"unanchored"}, "audit", "verify", exportPath)

	// A backup of the pruned database verifies (from its anchor).
	backup := filepath.Join(t.TempDir(), "vault.db")
	if res, err := e.Ctl(append([]string{"backup", "-out", backup}, ctlAPI(Operator)...)...); err != nil {
		t.Fatalf("vaultctl backup of a pruned store: %v\n%s", err, res)
	}

	// A restart verifies the pruned chain and keeps the mirror, which
	// holds the whole trail from seq 1.
	must(t, e.Stop())
	e.Start()
	wantStatus(t, do(t, e.HTTP(AppAcme), "GET", e.API+"/v1/integrations/crm/proxy/contacts", nil), 200)
	must(t, e.Stop())
	if m, _ := filepath.Glob(e.AuditPath + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("mirror moved aside on a pruned store: %v\nlogs:\n%s", m, e.Logs())
	}
	ctlOK(t, e, "audit", "verify", e.AuditPath)
}

// firstSeq reads the first seq from a segment's name.
func firstSeq(t *testing.T, path string) uint64 {
	t.Helper()
	parts := strings.Split(strings.TrimSuffix(filepath.Base(path), ".jsonl"), "-")
	if len(parts) != 3 {
		t.Fatalf("segment name %s", path)
	}
	n, err := strconv.ParseUint(parts[1], 10, 64)
	must(t, err)
	return n
}
