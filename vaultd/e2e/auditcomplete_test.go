package e2e

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
)

// auditQuery runs GET /v1/audit as the auditor with the raw query and
// returns the lines.
func auditQuery(t *testing.T, e *Env, query string) []auditLine {
	t.Helper()
	r := do(t, e.HTTP(Auditor), http.MethodGet, e.API+"/v1/audit?"+query, nil)
	wantStatus(t, r, http.StatusOK)
	return parseNDJSON(t, r.Body)
}

func actionLines(t *testing.T, e *Env, action string) []auditLine {
	t.Helper()
	return auditQuery(t, e, "action="+action+"&limit=10000")
}

// TestAuditCompleteness: the trail says when vaultd started and stopped,
// what a reload changed, which keys vaultctl created (directly, or left
// beside the database while vaultd ran), who read the trail; and the
// export filters by actor, outcome and request_id.
func TestAuditCompleteness(t *testing.T) {
	e := New(t, Options{})

	// vaultctl init ran with the database free: its key.create events are
	// in the trail, before vaultd's service.start.
	keys := actionLines(t, e, "key.create")
	if len(keys) != 2 || keys[0].s("detail") != "kek label=vaultd-kek version=1" ||
		keys[1].s("detail") != "audit_signing_key label=vaultd-kek-audit" || keys[0].s("actor") != "vaultctl" {
		t.Fatalf("key.create after init: %+v", keys)
	}
	starts := actionLines(t, e, "service.start")
	if len(starts) != 1 || starts[0].s("actor") != "vaultd" || starts[0].seq() <= keys[1].seq() ||
		!strings.Contains(starts[0].s("detail"), "kek_version=1") {
		t.Fatalf("service.start: %+v", starts)
	}

	// kek-rotate while vaultd holds the database: the event waits beside
	// it until the reload kek-rotate asks for.
	out, err := e.Ctl("kek-rotate", "-config", e.ConfigPath)
	pending := e.DBPath + ".audit-pending"
	if err != nil || !strings.Contains(out, pending) {
		t.Fatalf("kek-rotate: %v\n%s", err, out)
	}
	if fi, err := os.Stat(pending); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pending file: %v %v", fi, err)
	}

	// The reload adds a principal, changes one's roles and removes another.
	cfg, err := os.ReadFile(e.ConfigPath)
	must(t, err)
	text := strings.Replace(string(cfg), "[[principals]]\nsubject_cn = \"auditor-acme\"\nroles      = [\"auditor\"]\ntenant     = \"acme\"\n", "", 1)
	text = strings.Replace(text, "subject_cn = \"ops-admin\"\nroles      = [\"operator\"]", "subject_cn = \"ops-admin\"\nroles      = [\"operator\", \"auditor\"]", 1)
	text = strings.Replace(text, "[providers.", "[[principals]]\nsubject_cn = \"siem-2\"\nroles = [\"auditor\"]\n\n[providers.", 1)
	must(t, os.WriteFile(e.ConfigPath, []byte(text), 0o600))
	e.Signal(syscall.SIGHUP)
	waitLog(t, e, `"kek_version":2`)

	keys = actionLines(t, e, "key.create")
	if len(keys) != 3 || !strings.HasPrefix(keys[2].s("detail"), "kek label=vaultd-kek version=2 pending_since=") {
		t.Fatalf("key.create after kek-rotate and reload: %+v", keys)
	}
	if _, err := os.Stat(pending); !os.IsNotExist(err) {
		t.Fatalf("pending file left after the reload: %v", err)
	}
	reloads := actionLines(t, e, "config.reload")
	want := "principals +subject_cn=siem-2 (auditor), -subject_cn=auditor-acme, ~subject_cn=ops-admin (operator -> auditor,operator)"
	if len(reloads) != 1 || reloads[0].s("outcome") != "success" || reloads[0].s("detail") != want || reloads[0].seq() <= keys[2].seq() {
		t.Fatalf("config.reload: %+v\nwant detail %q", reloads, want)
	}

	// A refused reload is audited too, naming the key, not the value.
	must(t, os.WriteFile(e.ConfigPath, []byte(strings.Replace(text, "shutdown_timeout = \"20s\"", "shutdown_timeout = \"s3cr3t\"", 1)), 0o600))
	e.Signal(syscall.SIGHUP)
	waitLog(t, e, "reload refused")
	reloads = actionLines(t, e, "config.reload")
	if len(reloads) != 2 || reloads[1].s("outcome") != "failure" || !strings.HasPrefix(reloads[1].s("detail"), "refused: invalid config at line ") ||
		strings.Contains(string(reloads[1].raw), "s3cr3t") {
		t.Fatalf("refused reload: %+v", reloads)
	}

	// The new filters: exact matches, validated.
	e.CreateTenant("acme")
	denied := do(t, e.HTTP(AppGlobex), http.MethodGet, e.API+"/v1/tenants", nil)
	wantStatus(t, denied, http.StatusForbidden)
	rid := denied.Header.Get("X-Request-Id")
	byRID := auditQuery(t, e, "request_id="+rid)
	if len(byRID) != 1 || byRID[0].s("action") != "auth.denied" || byRID[0].s("request_id") != rid {
		t.Fatalf("request_id=%s: %+v", rid, byRID)
	}
	for _, l := range auditQuery(t, e, "outcome=denied&limit=10000") {
		if l.s("outcome") != "denied" {
			t.Fatalf("outcome=denied returned %s", l.raw)
		}
	}
	byActor := auditQuery(t, e, "actor=ops-admin&action=tenant.create")
	if len(byActor) != 1 || byActor[0].s("tenant_id") != "acme" {
		t.Fatalf("actor=ops-admin: %+v", byActor)
	}
	if got := auditQuery(t, e, "actor=vaultd&action=service.start"); len(got) != 1 {
		t.Fatalf("actor=vaultd: %+v", got)
	}
	for _, bad := range []string{"outcome=ok", "actor=" + url.QueryEscape("a\nb"), "request_id=" + url.QueryEscape("a b")} {
		r := do(t, e.HTTP(Auditor), http.MethodGet, e.API+"/v1/audit?"+bad, nil)
		wantStatus(t, r, http.StatusBadRequest)
	}

	// Every export above was recorded: who, the filters, the count; an
	// export's own request id finds its audit.read.
	rid = lastRequestID(t, e)
	reads := auditQuery(t, e, "action=audit.read&request_id="+rid)
	if len(reads) != 1 || reads[0].s("actor") != "auditor" || reads[0].s("detail") != "action=tenant.create events=1" {
		t.Fatalf("audit.read of request %s: %+v", rid, reads)
	}
	found := false
	for _, l := range auditQuery(t, e, "action=audit.read&actor=auditor&limit=10000") {
		status, _ := l.m["http_status"].(float64)
		if l.s("detail") == "action=tenant.create actor=ops-admin events=1" && l.s("outcome") == "success" && status == 200 {
			found = true
		}
	}
	if !found {
		t.Fatal("no audit.read for the actor export")
	}

	// service.stop, signed by the shutdown checkpoint that follows it.
	if err := e.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, e.Logs())
	}
	mirror, err := os.ReadFile(e.AuditPath)
	must(t, err)
	lines := parseNDJSON(t, mirror)
	n := len(lines)
	if n < 2 || lines[n-2].s("action") != "service.stop" || lines[n-2].s("outcome") != "success" || lines[n-1].s("action") != "audit.checkpoint" {
		t.Fatalf("the trail does not end with service.stop then the checkpoint:\n%s\n%s", lines[n-2].raw, lines[n-1].raw)
	}
	if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

// lastRequestID runs one export and returns its request id.
func lastRequestID(t *testing.T, e *Env) string {
	t.Helper()
	r := do(t, e.HTTP(Auditor), http.MethodGet, e.API+"/v1/audit?action=tenant.create", nil)
	wantStatus(t, r, http.StatusOK)
	return r.Header.Get("X-Request-Id")
}
