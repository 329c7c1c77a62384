package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

var auditFields = []string{"seq", "time", "tenant_id", "integration_id", "actor", "on_behalf_of", "action",
	"outcome", "request_id", "target_host", "http_status", "detail", "prev_hash", "hash"}

type auditLine struct {
	raw []byte
	m   map[string]any
}

func (l auditLine) s(k string) string { v, _ := l.m[k].(string); return v }
func (l auditLine) seq() uint64       { v, _ := l.m["seq"].(float64); return uint64(v) }
func (l auditLine) at(t *testing.T) time.Time {
	ts, err := time.Parse(time.RFC3339Nano, l.s("time"))
	must(t, err)
	return ts
}

func parseNDJSON(t *testing.T, b []byte) []auditLine {
	t.Helper()
	var out []auditLine
	for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, line)
		}
		out = append(out, auditLine{raw: line, m: m})
	}
	return out
}

// recomputeHash checks the hash chain of docs/api.md independently of
// vaultd's code:
// sha256(prev_hash "\n" JCS(event without hash)).
func recomputeHash(t *testing.T, l auditLine) string {
	t.Helper()
	var m map[string]json.RawMessage
	must(t, json.Unmarshal(l.raw, &m))
	delete(m, "hash")
	b, err := json.Marshal(m)
	must(t, err)
	canon, err := jcs.Transform(b)
	must(t, err)
	sum := sha256.Sum256(append([]byte(l.s("prev_hash")+"\n"), canon...))
	return hex.EncodeToString(sum[:])
}

// TestAudit: GET /v1/audit (NDJSON, oldest first, every filter, tenant
// scoping), the hash chain, `vaultctl audit verify` on the export and the
// mirror, and vaultctl's API commands against the running daemon.
func TestAudit(t *testing.T) {
	e := New(t, Options{})
	api := e.API
	ctlAPI := func(name string) []string {
		return []string{"-server", e.API, "-cert", filepath.Join(e.PKIDir, name+".crt"),
			"-key", filepath.Join(e.PKIDir, name+".key"), "-ca", filepath.Join(e.PKIDir, "ca.crt")}
	}
	ctl := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		out, err := e.Ctl(append(args, ctlAPI(name)...)...)
		if err != nil {
			t.Fatalf("vaultctl %v: %v\n%s", args, err, out)
		}
		return out
	}

	t.Run("vaultctl_api_commands", func(t *testing.T) {
		var tn map[string]any
		must(t, json.Unmarshal([]byte(ctl(t, Operator, "tenant", "create", "acme")), &tn))
		if tn["id"] != "acme" || tn["status"] != "active" {
			t.Fatalf("tenant create: %v", tn)
		}
		ctl(t, Operator, "tenant", "create", "globex")
		if out := ctl(t, Operator, "tenant", "get", "acme"); !strings.Contains(out, `"dek_version": 1`) {
			t.Fatalf("tenant get: %s", out)
		}
		if out := ctl(t, Operator, "tenant", "list"); !strings.Contains(out, `"globex"`) || !strings.Contains(out, `"acme"`) {
			t.Fatalf("tenant list: %s", out)
		}
		tok := e.Provider.IssueInitialToken([]string{"contacts.read"})
		tf := filepath.Join(e.Dir, "token.json")
		must(t, os.WriteFile(tf, oauthtest.TokenResponseJSON(tok), 0o600))
		out := ctl(t, AppAcme, "integration", "store", "crm", "-provider", ProviderName, "-token-file", tf)
		noTokenIn(t, []byte(out), tok)
		if !strings.Contains(out, `"status": "active"`) {
			t.Fatalf("integration store: %s", out)
		}
		if out := ctl(t, AppAcme, "integration", "get", "crm"); !strings.Contains(out, `"tenant_id": "acme"`) {
			t.Fatalf("integration get: %s", out)
		}
		if out := ctl(t, AppAcme, "integration", "list"); !strings.Contains(out, `"crm"`) {
			t.Fatalf("integration list: %s", out)
		}
		// JWT principals pass -tenant-context.
		out = ctl(t, AppMulti, "integration", "list", "-tenant-context", e.JWT("acme", "cli-user", nil))
		if !strings.Contains(out, `"crm"`) {
			t.Fatalf("integration list with -tenant-context: %s", out)
		}
		// Errors exit non-zero with the code.
		if out, err := e.Ctl(append([]string{"tenant", "create", "acme"}, ctlAPI(Operator)...)...); err == nil || !strings.Contains(out, "conflict") {
			t.Fatalf("duplicate tenant create: %v %s", err, out)
		}
		if out, err := e.Ctl(append([]string{"integration", "list"}, ctlAPI(Operator)...)...); err == nil || !strings.Contains(out, "forbidden") {
			t.Fatalf("operator integration list: %v %s", err, out)
		}
		// Generate more events: a proxied call, a denial, a second tenant.
		e.StoreToken(AppGlobex, "g1")
		e.StoreToken(AppAcme, "erp")
		resp := do(t, e.HTTP(AppAcme), "GET", api+"/v1/integrations/crm/proxy/contacts", nil)
		wantStatus(t, resp, 200)
		wantError(t, do(t, e.HTTP(Stranger), "GET", api+"/v1/integrations", nil), 403, "forbidden")
		time.Sleep(20 * time.Millisecond) // a gap in time for since/until below
		out = ctl(t, AppAcme, "integration", "delete", "erp")
		if !strings.Contains(out, `"revoked_at_provider": true`) {
			t.Fatalf("integration delete: %s", out)
		}
	})

	var all []auditLine
	var allRaw []byte
	t.Run("export_shape_and_chain", func(t *testing.T) {
		r := do(t, e.HTTP(Auditor), "GET", api+"/v1/audit", nil)
		wantStatus(t, r, 200)
		if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Fatalf("Content-Type %q", ct)
		}
		allRaw = r.Body
		all = parseNDJSON(t, r.Body)
		if len(all) < 8 {
			t.Fatalf("only %d events", len(all))
		}
		prev := strings.Repeat("0", 64)
		actions := map[string]bool{}
		for i, l := range all {
			wantKeys(t, l.m, auditFields...)
			if l.seq() != uint64(i+1) {
				t.Fatalf("line %d has seq %d (not oldest first / gap)", i, l.seq())
			}
			if i > 0 && l.at(t).Before(all[i-1].at(t)) {
				t.Fatalf("time goes backwards at seq %d", l.seq())
			}
			if l.s("prev_hash") != prev {
				t.Fatalf("seq %d prev_hash %s, want %s", l.seq(), l.s("prev_hash"), prev)
			}
			if h := recomputeHash(t, l); h != l.s("hash") {
				t.Fatalf("seq %d hash %s, recomputed %s", l.seq(), l.s("hash"), h)
			}
			switch l.s("outcome") {
			case "success", "failure", "denied":
			default:
				t.Fatalf("outcome %q", l.s("outcome"))
			}
			prev = l.s("hash")
			actions[l.s("action")] = true
		}
		for _, a := range []string{"tenant.create", "token.store", "proxy.request", "auth.denied", "integration.delete", "token.revoke"} {
			if !actions[a] {
				t.Fatalf("no %s event in %v", a, actions)
			}
		}
		for _, l := range all {
			if l.s("action") == "proxy.request" && (l.s("target_host") == "" || l.m["http_status"].(float64) != 200) {
				t.Fatalf("proxy.request event %s", l.raw)
			}
		}
		// The vaultctl export is the same stream, plus the audit.read
		// that recorded the export above.
		out, err := e.Ctl(append([]string{"audit", "export"}, ctlAPI(Auditor)...)...)
		rest, ok := strings.CutPrefix(out, string(allRaw))
		if err != nil || !ok {
			t.Fatalf("vaultctl audit export differs (%v)", err)
		}
		if more := parseNDJSON(t, []byte(rest)); len(more) != 1 || more[0].s("action") != "audit.read" ||
			more[0].s("request_id") != r.Header.Get("X-Request-Id") {
			t.Fatalf("vaultctl audit export adds %q, want the first export's audit.read", rest)
		}
	})

	get := func(t *testing.T, who string, q url.Values) []auditLine {
		t.Helper()
		r := do(t, e.HTTP(who), "GET", api+"/v1/audit?"+q.Encode(), nil)
		wantStatus(t, r, 200)
		return parseNDJSON(t, r.Body)
	}
	// expect checks got is exactly the events of all matching keep, in order.
	expect := func(t *testing.T, got []auditLine, keep func(auditLine) bool) {
		t.Helper()
		var want []uint64
		for _, l := range all {
			if keep(l) {
				want = append(want, l.seq())
			}
		}
		var seqs []uint64
		for _, l := range got {
			seqs = append(seqs, l.seq())
		}
		if fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Fatalf("got seqs %v, want %v", seqs, want)
		}
	}
	// Later events (the queries themselves add none, but be safe) are
	// ignored by bounding every query with until.
	var end time.Time
	t.Run("filters", func(t *testing.T) {
		end = all[len(all)-1].at(t).Add(time.Nanosecond)
		u := end.Format(time.RFC3339Nano)
		q := func(kv ...string) url.Values {
			v := url.Values{"until": {u}}
			for i := 0; i+1 < len(kv); i += 2 {
				v.Set(kv[i], kv[i+1])
			}
			return v
		}
		expect(t, get(t, Auditor, q("tenant_id", "acme")), func(l auditLine) bool { return l.s("tenant_id") == "acme" })
		expect(t, get(t, Auditor, q("tenant_id", "globex")), func(l auditLine) bool { return l.s("tenant_id") == "globex" })
		expect(t, get(t, Auditor, q("integration_id", "crm")), func(l auditLine) bool { return l.s("integration_id") == "crm" })
		expect(t, get(t, Auditor, q("action", "token.store")), func(l auditLine) bool { return l.s("action") == "token.store" })
		expect(t, get(t, Auditor, q("tenant_id", "acme", "action", "token.store")), func(l auditLine) bool {
			return l.s("tenant_id") == "acme" && l.s("action") == "token.store"
		})
		n := 0
		expect(t, get(t, Auditor, q("limit", "3")), func(l auditLine) bool { n++; return n <= 3 })
		n = 0
		expect(t, get(t, Auditor, q("action", "token.store", "limit", "2")), func(l auditLine) bool {
			if l.s("action") != "token.store" {
				return false
			}
			n++
			return n <= 2
		})
		// since/until: cut in the middle of the widest gap between events
		// (the pause before the delete), so inclusivity does not matter.
		k := 1
		for i := 1; i < len(all); i++ {
			if all[i].at(t).Sub(all[i-1].at(t)) > all[k].at(t).Sub(all[k-1].at(t)) {
				k = i
			}
		}
		cut := all[k-1].at(t).Add(all[k].at(t).Sub(all[k-1].at(t)) / 2)
		expect(t, get(t, Auditor, q("since", cut.Format(time.RFC3339Nano))), func(l auditLine) bool { return l.seq() > uint64(k) })
		expect(t, get(t, Auditor, url.Values{"until": {cut.Format(time.RFC3339Nano)}}), func(l auditLine) bool { return l.seq() <= uint64(k) })
		// The widest gap may fall anywhere (it depends on scheduling):
		// with the cut after seq 2 only, the window holds seq 2 alone.
		if k >= 2 {
			from := all[1].at(t).Add(-time.Nanosecond).Format(time.RFC3339Nano)
			expect(t, get(t, Auditor, url.Values{"since": {from}, "until": {cut.Format(time.RFC3339Nano)}, "limit": {"2"}}),
				func(l auditLine) bool { return (l.seq() == 2 || l.seq() == 3) && l.seq() <= uint64(k) })
		}
		for _, bad := range []url.Values{{"limit": {"0"}}, {"limit": {"x"}}, {"since": {"yesterday"}}, {"bogus": {"1"}},
			{"tenant_id": {"../x"}}, {"action": {"Bad Action!"}}, {"since": {u}, "until": {u}}} {
			wantError(t, do(t, e.HTTP(Auditor), "GET", api+"/v1/audit?"+bad.Encode(), nil), 400, "bad_request")
		}
		// A well-formed action nobody recorded is an empty export.
		expect(t, get(t, Auditor, q("action", "no.such")), func(auditLine) bool { return false })
	})

	t.Run("tenant_bound_auditor", func(t *testing.T) {
		u := end.Format(time.RFC3339Nano)
		expect(t, get(t, AuditorAcme, url.Values{"until": {u}}), func(l auditLine) bool { return l.s("tenant_id") == "acme" })
		expect(t, get(t, AuditorAcme, url.Values{"until": {u}, "tenant_id": {"acme"}}), func(l auditLine) bool { return l.s("tenant_id") == "acme" })
		wantError(t, do(t, e.HTTP(AuditorAcme), "GET", api+"/v1/audit?tenant_id=globex", nil), 403, "forbidden")
		// A tenant-context JWT does not widen a bound auditor.
		r := do(t, e.HTTP(AuditorAcme), "GET", api+"/v1/audit?until="+url.QueryEscape(u), nil, "X-Tenant-Context", e.JWT("globex", "", nil))
		wantStatus(t, r, 200)
		if bytes.Contains(r.Body, []byte(`"tenant_id":"globex"`)) {
			t.Fatal("bound auditor saw globex events")
		}
		// The unbound auditor sees every tenant.
		got := get(t, Auditor, url.Values{"until": {u}})
		expect(t, got, func(auditLine) bool { return true })
	})

	t.Run("verify_export", func(t *testing.T) {
		f := filepath.Join(e.Dir, "export.jsonl")
		must(t, os.WriteFile(f, allRaw, 0o600))
		if out, err := e.Ctl("audit", "verify", f); err != nil {
			t.Fatalf("verify export: %v\n%s", err, out)
		}
		tamper(t, e, allRaw, 4)
	})

	t.Run("verify_mirror", func(t *testing.T) {
		if err := e.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
			t.Fatalf("verify mirror: %v\n%s", err, out)
		}
		mirror, err := os.ReadFile(e.AuditPath)
		must(t, err)
		ml := parseNDJSON(t, mirror)
		if len(ml) < len(all) {
			t.Fatalf("mirror has %d events, export %d", len(ml), len(all))
		}
		for i := range all {
			if !bytes.Equal(ml[i].raw, all[i].raw) {
				t.Fatalf("mirror line %d differs from the export:\n%s\n%s", i+1, ml[i].raw, all[i].raw)
			}
		}
		tamper(t, e, mirror, 2)
	})
}

// tamper edits event seq in a copy of data in several ways and checks that
// vaultctl audit verify fails naming that seq.
func tamper(t *testing.T, e *Env, data []byte, seq int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) <= seq {
		t.Fatalf("only %d lines", len(lines))
	}
	edits := map[string]func(string) string{
		"detail": func(l string) string { return strings.Replace(l, `"detail":"`, `"detail":"x`, 1) },
		"actor":  func(l string) string { return strings.Replace(l, `"actor":"`, `"actor":"z`, 1) },
		"hash": func(l string) string {
			i := strings.Index(l, `"hash":"`) + len(`"hash":"`)
			c := "0"
			if l[i] == '0' {
				c = "1"
			}
			return l[:i] + c + l[i+1:]
		},
	}
	for name, edit := range edits {
		cp := append([]string(nil), lines...)
		cp[seq-1] = edit(cp[seq-1])
		if cp[seq-1] == lines[seq-1] {
			t.Fatalf("edit %s changed nothing", name)
		}
		f := filepath.Join(e.Dir, "tampered-"+name+".jsonl")
		must(t, os.WriteFile(f, []byte(strings.Join(cp, "\n")+"\n"), 0o600))
		out, err := e.Ctl("audit", "verify", f)
		if err == nil {
			t.Fatalf("verify accepted a %s edit at seq %d: %s", name, seq, out)
		}
		if !strings.Contains(out, fmt.Sprintf("seq %d", seq)) {
			t.Fatalf("verify of a %s edit at seq %d does not name it: %s", name, seq, out)
		}
	}
	// A deleted line breaks the chain at the next seq.
	cp := append(append([]string(nil), lines[:seq-1]...), lines[seq:]...)
	f := filepath.Join(e.Dir, "tampered-delete.jsonl")
	must(t, os.WriteFile(f, []byte(strings.Join(cp, "\n")+"\n"), 0o600))
	if out, err := e.Ctl("audit", "verify", f); err == nil ||
		!(strings.Contains(out, fmt.Sprintf("seq %d", seq)) || strings.Contains(out, fmt.Sprintf("seq %d", seq+1))) {
		t.Fatalf("verify after deleting seq %d: %v %s", seq, err, out)
	}
}
