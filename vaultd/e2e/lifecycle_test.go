package e2e

import (
	"context"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// notifySocket is a unixgram socket standing in for systemd's
// NOTIFY_SOCKET; every datagram's lines arrive on msgs.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// sun_path is ~108 bytes: t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "vdn")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "n.sock"), msgs: make(chan string, 256)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l != "" {
					select {
					case ns.msgs <- l:
					default: // never block the daemon's notify on a slow test
					}
				}
			}
		}
	}()
	return ns
}

// expect waits (bounded) for the state line want, skipping others
// (STATUS=, MAINPID=, MONOTONIC_USEC=...). It returns the skipped lines.
func (ns *notifySocket) expect(t *testing.T, want string) []string {
	t.Helper()
	var skipped []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-ns.msgs:
			if m == want {
				return skipped
			}
			skipped = append(skipped, m)
		case <-timeout:
			t.Fatalf("no %s from vaultd within 30s (got %q)", want, skipped)
			return nil
		}
	}
}

// states filters skipped lines down to the state changes.
func notifyStates(lines []string) []string {
	var out []string
	for _, l := range lines {
		for _, s := range []string{"READY=1", "RELOADING=1", "STOPPING=1"} {
			if l == s {
				out = append(out, l)
			}
		}
	}
	return out
}

// waitLog waits (bounded) until vaultd's log contains s.
func waitLog(t *testing.T, e *Env, s string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if strings.Contains(e.Logs(), s) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("log line %q not seen:\n%s", s, e.Logs())
}

// pipeCall starts a proxied POST whose body is written through a pipe;
// the request stays in flight until finish is called.
type pipeCall struct {
	pw   *io.PipeWriter
	done chan obResult
	err  chan error
}

func startPipeCall(e *Env, hc *http.Client, id string) *pipeCall {
	pr, pw := io.Pipe()
	pc := &pipeCall{pw: pw, done: make(chan obResult, 1), err: make(chan error, 1)}
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.API+"/v1/integrations/"+id+"/proxy/slow-upload", pr)
		resp, err := hc.Do(req)
		if err != nil {
			pc.err <- err
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			pc.err <- err
			return
		}
		pc.done <- obResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}()
	return pc
}

func (pc *pipeCall) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(pc.pw, s); err != nil {
		t.Fatalf("request body write: %v", err)
	}
}

func (pc *pipeCall) finish(t *testing.T) obResult {
	t.Helper()
	pc.pw.Close()
	select {
	case r := <-pc.done:
		return r
	case err := <-pc.err:
		t.Fatalf("in-flight request failed: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("in-flight request did not complete")
	}
	return obResult{}
}

// TestReloadNotifyAndDrain: systemd notifications around start, SIGHUP
// and SIGTERM; a reload swaps the server certificate for new connections
// while an open HTTP/2 connection (with a request in flight) carries on,
// adds a principal, and refuses a broken config whole; SIGTERM lets an
// in-flight proxied request finish, then vaultd exits 0.
func TestReloadNotifyAndDrain(t *testing.T) {
	ns := newNotifySocket(t)
	e := New(t, Options{Env: []string{"NOTIFY_SOCKET=" + ns.path}})
	ns.expect(t, "READY=1")
	if code, body := e.OpsGet("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz after READY=1: %d %s", code, body)
	}
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")

	// One HTTP/2 connection, kept open across the reload.
	hc := e.HTTP(AppAcme)
	var connAddr atomic.Value
	traced := func() context.Context {
		return httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { connAddr.Store(ci.Conn.LocalAddr().String()) },
		})
	}
	serialOf := func(c *http.Client) (*big.Int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(traced(), http.MethodGet, e.API+"/v1/integrations/crm", nil)
		resp, err := c.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("GET integration: %d %s", resp.StatusCode, resp.Proto)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber, connAddr.Load().(string)
	}
	oldSerial, oldConn := serialOf(hc)
	inflight := startPipeCall(e, hc, "crm")
	inflight.write(t, "before-reload;")

	// New server certificate and a new principal, on disk.
	leaf, err := e.CA.Server("localhost", "127.0.0.1", "::1")
	must(t, err)
	_, _, err = leaf.WriteFiles(e.PKIDir, "server")
	must(t, err)
	nl, err := e.CA.Client("app-new", "")
	must(t, err)
	_, _, err = nl.WriteFiles(e.PKIDir, "app-new")
	must(t, err)
	newcomer := e.HTTP("app-new")
	if r := obDo(t, newcomer, http.MethodGet, e.API+"/v1/integrations", nil, nil); r.Status != http.StatusForbidden {
		t.Fatalf("unknown principal before reload: %d", r.Status)
	}
	good := strings.Replace(e.ConfigText(), "[providers.",
		"[[principals]]\nsubject_cn = \"app-new\"\nroles = [\"app\"]\ntenant = \"acme\"\n\n[providers.", 1)
	must(t, os.WriteFile(e.ConfigPath, []byte(good), 0o600))

	e.Signal(syscall.SIGHUP)
	ns.expect(t, "RELOADING=1")
	if s := notifyStates(ns.expect(t, "READY=1")); len(s) != 0 {
		t.Fatalf("unexpected states between RELOADING=1 and READY=1: %v", s)
	}
	waitLog(t, e, "configuration reloaded")

	// The open connection carries on: same connection, old certificate,
	// and the request that was in flight completes.
	serial, conn := serialOf(hc)
	if conn != oldConn || serial.Cmp(oldSerial) != 0 {
		t.Fatalf("the open HTTP/2 connection was replaced (conn %s -> %s)", oldConn, conn)
	}
	inflight.write(t, "after-reload")
	if r := inflight.finish(t); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "before-reload;after-reload") {
		t.Fatalf("request in flight across the reload: %d %s", r.Status, r.Body)
	}
	// New connections get the new certificate.
	newSerial, _ := serialOf(e.HTTP(AppAcme))
	if newSerial.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("new connection served serial %v, want the reloaded %v", newSerial, leaf.Cert.SerialNumber)
	}
	// The new principal works.
	if r := obProxy(t, e, e.HTTP("app-new"), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("new principal after reload: %d %s", r.Status, r.Body)
	}

	// Broken configs are refused whole; the running one stays.
	for i, broken := range []string{
		"this is [not toml",
		strings.Replace(good, filepath.Join(e.PKIDir, "server.crt"), filepath.Join(e.PKIDir, "missing.crt"), 1),
		strings.Replace(good, `subject_cn = "app-new"`, `subject_cn = "app-new"`+"\nbogus_key = 1", 1),
	} {
		must(t, os.WriteFile(e.ConfigPath, []byte(broken), 0o600))
		before := strings.Count(e.Logs(), "reload refused")
		e.Signal(syscall.SIGHUP)
		ns.expect(t, "RELOADING=1")
		ns.expect(t, "READY=1")
		for j := 0; j < 100 && strings.Count(e.Logs(), "reload refused") == before; j++ {
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Count(e.Logs(), "reload refused") != before+1 {
			t.Fatalf("broken config %d: no 'reload refused' log line:\n%s", i, e.Logs())
		}
		if r := obProxy(t, e, e.HTTP("app-new"), "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("broken config %d: service or old config lost: %d %s", i, r.Status, r.Body)
		}
	}
	if got := obMetric(t, e, `vaultd_config_reloads_total{outcome="failure"}`); got != 3 {
		t.Fatalf("failed reloads counted %v, want 3", got)
	}
	for _, l := range strings.Split(e.Logs(), "\n") {
		if strings.Contains(l, "reload refused") && (strings.Contains(l, e.Token.PIN) || strings.Contains(l, tok.AccessToken.Reveal())) {
			t.Fatal("a reload error line carries a secret")
		}
	}
	must(t, os.WriteFile(e.ConfigPath, []byte(good), 0o600))

	// SIGTERM: STOPPING=1, the in-flight call completes, exit 0.
	inflight = startPipeCall(e, hc, "crm")
	inflight.write(t, "before-term;")
	// Let the request reach the handler (its headers and first bytes
	// are on the wire; this is not a timing assertion).
	time.Sleep(300 * time.Millisecond)
	e.Signal(syscall.SIGTERM)
	ns.expect(t, "STOPPING=1")
	inflight.write(t, "after-term")
	if r := inflight.finish(t); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "before-term;after-term") {
		t.Fatalf("request in flight at SIGTERM: %d %s", r.Status, r.Body)
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, e.Logs())
	}
	if !strings.Contains(e.Logs(), "vaultd stopped") {
		t.Fatalf("no clean stop logged:\n%s", e.Logs())
	}
}

// TestKill9DuringRefresh kills vaultd with SIGKILL while concurrent
// callers keep several integrations refreshing, then restarts it on the
// same database and HSM token.
//
// With refresh-token rotation OFF every integration must work after the
// restart: whatever refresh was cut short, the stored refresh token is
// still good. With rotation ON (oauthtest invalidates the old refresh
// token the moment it answers) a crash that falls between the provider's
// answer and our commit leaves the store with a refresh token the
// provider has already retired: the next refresh gets invalid_grant and
// the integration goes reauthorization_required. That is the correct,
// fail-closed outcome (the vault cannot invent the lost token), so there
// every integration must either work or be reauthorization_required with
// last_error invalid_grant -- nothing else (no 503, no corrupt record).
func TestKill9DuringRefresh(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")
	ids := []string{"k1", "k2", "k3", "k4", "k5", "k6"}

	checkDB := func(t *testing.T) {
		t.Helper()
		db, err := bbolt.Open(e.DBPath, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("bbolt open after kill -9: %v", err)
		}
		defer db.Close()
		err = db.View(func(tx *bbolt.Tx) error {
			for cerr := range tx.Check() {
				return cerr
			}
			return nil
		})
		if err != nil {
			t.Fatalf("bbolt consistency check: %v", err)
		}
	}

	// hammer keeps every integration refreshing (each refresh answers
	// expires_in 30 < the 60s margin, so the next call refreshes again)
	// and kills vaultd once plenty of refreshes have happened.
	hammer := func(t *testing.T) {
		t.Helper()
		e.Provider.SetExpiresIn(dueSoon)
		start := e.Provider.RefreshCount()
		hc := e.HTTP(AppAcme)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var ok atomic.Int64
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest(http.MethodGet, e.API+"/v1/integrations/"+ids[(g+i)%len(ids)]+"/proxy/contacts/1", nil)
					resp, err := hc.Do(req)
					if err != nil {
						continue // vaultd is being killed
					}
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
					}
					resp.Body.Close()
				}
			}()
		}
		for i := 0; i < 400 && e.Provider.RefreshCount()-start < 60; i++ {
			time.Sleep(25 * time.Millisecond)
		}
		e.Kill9()
		close(stop)
		wg.Wait()
		if e.Provider.RefreshCount()-start < 10 || ok.Load() == 0 {
			t.Fatalf("too little refresh traffic before the kill: %d refreshes, %d ok", e.Provider.RefreshCount()-start, ok.Load())
		}
		e.Provider.SetExpiresIn(longLived)
		checkDB(t)
		e.Start()
	}

	t.Run("rotation_off_all_work", func(t *testing.T) {
		e.Provider.SetRotation(false)
		for _, id := range ids {
			refreshStore(t, e, id, dueSoon)
		}
		hammer(t)
		hc := e.HTTP(AppAcme)
		for _, id := range ids {
			if r := obProxy(t, e, hc, id, http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
				t.Errorf("%s after restart: %d %s", id, r.Status, r.Body)
			}
			if md := refreshMD(t, e, id); md.Status != "active" {
				t.Errorf("%s after restart: %+v", id, md)
			}
		}
	})

	t.Run("rotation_on_work_or_reauth", func(t *testing.T) {
		e.Provider.SetRotation(true)
		for _, id := range ids {
			refreshStore(t, e, id, dueSoon)
		}
		hammer(t)
		hc := e.HTTP(AppAcme)
		working := 0
		for _, id := range ids {
			r := obProxy(t, e, hc, id, http.MethodGet, "contacts/1", nil, nil)
			md := refreshMD(t, e, id)
			switch {
			case r.Status == http.StatusOK && md.Status == "active":
				working++
			case r.Status == http.StatusConflict && r.Code() == "reauthorization_required" &&
				md.Status == "reauthorization_required" && md.LastError == "invalid_grant":
				t.Logf("%s: crash fell between the provider's rotation and the commit: reauthorization_required (fail closed)", id)
			default:
				t.Errorf("%s after restart: %d %s, metadata %+v", id, r.Status, r.Body, md)
			}
		}
		t.Logf("%d of %d integrations survived the crash with rotation on", working, len(ids))
	})

	if err := e.Stop(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	// The audit mirror written across two SIGKILLs still chains.
	if out, err := e.Ctl("audit", "verify", e.AuditPath); err != nil {
		t.Fatalf("audit verify after kill -9: %v\n%s", err, out)
	}
}
