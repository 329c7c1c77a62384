package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/client"
)

// TestOnlineBackupAndRestore: `vaultctl backup` takes a verified snapshot
// from the running vaultd while proxied traffic goes on; only an operator
// may; the backup is audited (and holds its own event), holds no
// plaintext secret, never overwrites a file; and a vaultd started on the
// restored file serves the integrations it holds with the same HSM KEK.
func TestOnlineBackupAndRestore(t *testing.T) {
	e := New(t, Options{})
	ctlAPI := func(name string) []string {
		return []string{"-server", e.API, "-cert", filepath.Join(e.PKIDir, name+".crt"),
			"-key", filepath.Join(e.PKIDir, name+".key"), "-ca", filepath.Join(e.PKIDir, "ca.crt")}
	}
	e.CreateTenant("acme")
	e.CreateTenant("globex")
	tokA := e.StoreToken(AppAcme, "crm")
	tokG := e.StoreToken(AppGlobex, "crm")

	// Traffic during the backup: writers (audit appends) keep committing
	// while the snapshot's read transaction is open.
	// (Plain requests, not obProxy: t.Fatal must not run off the test's
	// goroutine.)
	hc := e.HTTP(AppAcme)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				select {
				case <-stop:
					return
				default:
				}
				code := -1 // transport error
				if resp, err := hc.Get(e.API + "/v1/integrations/crm/proxy/contacts/1"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		}()
	}

	dir := filepath.Join(e.Dir, "backups")
	must(t, os.MkdirAll(dir, 0o700))
	out := filepath.Join(dir, "vault-1.db")
	res, err := e.Ctl(append([]string{"backup", "-out", out}, ctlAPI(Operator)...)...)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("vaultctl backup: %v\n%s", err, res)
	}
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Fatalf("proxied calls during the backup: %v (want only 200s)", statuses)
	}
	for _, want := range []string{"backup " + out + ": ", "sha256 ", "verified: bbolt check ok, 2 tenant(s), audit chain ok"} {
		if !strings.Contains(res, want) {
			t.Fatalf("vaultctl backup output lacks %q:\n%s", want, res)
		}
	}
	st, err := os.Stat(out)
	must(t, err)
	if st.Mode().Perm() != 0o600 || st.Size() == 0 {
		t.Fatalf("backup file mode %v size %d", st.Mode().Perm(), st.Size())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("backup dir holds %d entries (a partial file left behind?)", len(ents))
	}

	t.Run("no_plaintext_secret", func(t *testing.T) {
		b, err := os.ReadFile(out)
		must(t, err)
		for what, s := range map[string]string{
			"acme access token": tokA.AccessToken.Reveal(), "acme refresh token": tokA.RefreshToken.Reveal(),
			"globex access token": tokG.AccessToken.Reveal(), "globex refresh token": tokG.RefreshToken.Reveal(),
			"HSM PIN": e.Token.PIN, "client secret": e.Provider.ClientSecret().Reveal(),
		} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("backup holds the %s in plaintext", what)
			}
		}
	})

	t.Run("never_overwrites", func(t *testing.T) {
		before, err := os.ReadFile(out)
		must(t, err)
		res, err := e.Ctl(append([]string{"backup", "-out", out}, ctlAPI(Operator)...)...)
		if err == nil || !strings.Contains(res, "exists") {
			t.Fatalf("backup onto an existing file: err %v\n%s", err, res)
		}
		after, err := os.ReadFile(out)
		must(t, err)
		if !bytes.Equal(before, after) {
			t.Fatal("existing backup file changed")
		}
	})

	t.Run("damaged_file_refused_by_verifier", func(t *testing.T) {
		b, err := os.ReadFile(out)
		must(t, err)
		bad := filepath.Join(e.Dir, "cut.db")
		must(t, os.WriteFile(bad, b[:len(b)/3], 0o600))
		res, err := e.Ctl("__verify-backup", bad)
		if err == nil || !strings.Contains(res, "truncated") {
			t.Fatalf("verifier on a cut file: %v\n%s", err, res)
		}
	})

	t.Run("operator_only", func(t *testing.T) {
		for _, who := range []string{AppAcme, Auditor, AuditorAcme} {
			_, err := e.Client(who).Backup(t.Context(), new(bytes.Buffer))
			if !client.IsCode(err, api.CodeForbidden) {
				t.Errorf("%s: backup answered %v, want forbidden", who, err)
			}
		}
		r := do(t, e.HTTP(Operator), http.MethodPost, e.API+"/v1/admin/backup", nil)
		wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	})

	t.Run("audited", func(t *testing.T) {
		var export bytes.Buffer
		must(t, e.Client(Auditor).Audit(t.Context(), client.AuditQuery{Action: "store.backup"}, &export))
		lines := parseNDJSON(t, export.Bytes())
		if len(lines) == 0 {
			t.Fatal("no store.backup event")
		}
		l := lines[0]
		if l.s("actor") != "ops-admin" || l.s("outcome") != "success" || l.s("tenant_id") != "" {
			t.Fatalf("store.backup event: %v", l.m)
		}
	})

	// Written after the backup: the restored database must not have it.
	e.StoreToken(AppAcme, "late")

	t.Run("restore", func(t *testing.T) {
		if err := e.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		b, err := os.ReadFile(out)
		must(t, err)
		must(t, os.WriteFile(e.DBPath, b, 0o600))
		e.Start()
		for app, want := range map[string]int{AppAcme: http.StatusOK, AppGlobex: http.StatusOK} {
			if r := obProxy(t, e, e.HTTP(app), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != want {
				t.Errorf("%s crm after restore: %d %s", app, r.Status, r.Body)
			}
		}
		if r := obProxy(t, e, e.HTTP(AppAcme), "late", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("integration stored after the backup answered %d after restore, want 404", r.Status)
		}
		// The restored trail holds the backup's own event and still chains.
		var export bytes.Buffer
		must(t, e.Client(Auditor).Audit(t.Context(), client.AuditQuery{}, &export))
		f := filepath.Join(e.Dir, "restored-export.jsonl")
		must(t, os.WriteFile(f, export.Bytes(), 0o600))
		if out, err := e.Ctl("audit", "verify", f); err != nil {
			t.Fatalf("audit verify after restore: %v\n%s", err, out)
		}
		if !bytes.Contains(export.Bytes(), []byte(`"action":"store.backup"`)) {
			t.Error("restored trail lacks the backup's own store.backup event")
		}
		// The mirror held events the restored database lacks: kept aside
		// as evidence, and rewritten from the database.
		if kept, _ := filepath.Glob(e.AuditPath + ".corrupt-*"); len(kept) != 1 {
			t.Errorf("mirror after restore: %d .corrupt-* files kept, want 1", len(kept))
		}
		if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
			t.Fatalf("audit verify of the rewritten mirror: %v\n%s", err, out)
		}
	})
}
