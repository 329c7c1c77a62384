package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startFails starts vaultd expecting it to exit non-zero at once, and
// returns its one stderr line.
func (e *Env) startFails(t *testing.T) string {
	t.Helper()
	err := e.TryStart()
	if err == nil {
		e.Stop()
		t.Fatalf("vaultd started; logs:\n%s", e.Logs())
	}
	var ee *exec.ExitError
	if !errors.As(e.exitErr, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("vaultd did not exit non-zero: %v (%v)", err, e.exitErr)
	}
	out := strings.TrimRight(e.Logs(), "\n")
	if out == "" || strings.Contains(out, "\n") {
		t.Fatalf("want exactly one stderr line, got:\n%s", out)
	}
	if strings.Contains(out, e.Token.PIN) || strings.Contains(out, e.Token.SOPin) || strings.Contains(out, e.Provider.ClientSecret().Reveal()) {
		t.Fatalf("a secret appears in the start-up error: %s", out)
	}
	return out
}

func wantMention(t *testing.T, line string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Fatalf("start-up error %q does not mention %q", line, w)
		}
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return sha256.Sum256(b)
}

// TestStartup: bad set-ups make vaultd exit non-zero at once with one
// clear line naming the problem and no secret; vaultctl init is idempotent;
// the PIN file may end with one newline.
func TestStartup(t *testing.T) {
	e := New(t, Options{NoStart: true})
	good := e.ConfigText()
	writeConfig := func(t *testing.T, text string) {
		t.Helper()
		must(t, os.WriteFile(e.ConfigPath, []byte(text), 0o600))
		t.Cleanup(func() { must(t, os.WriteFile(e.ConfigPath, []byte(good), 0o600)) })
	}
	replace := func(t *testing.T, old, new string) {
		t.Helper()
		if !strings.Contains(good, old) {
			t.Fatalf("config lacks %q", old)
		}
		writeConfig(t, strings.Replace(good, old, new, 1))
	}
	writePIN := func(t *testing.T, pin string) {
		t.Helper()
		must(t, os.WriteFile(e.PINPath, []byte(pin), 0o600))
		t.Cleanup(func() { must(t, os.WriteFile(e.PINPath, []byte(e.Token.PIN+"\n"), 0o600)) })
	}

	t.Run("init_idempotent", func(t *testing.T) {
		info1, err := e.Ctl("kek-info", "-config", e.ConfigPath)
		if err != nil {
			t.Fatalf("kek-info: %v\n%s", err, info1)
		}
		db1 := fileSum(t, e.DBPath)
		out, err := e.Ctl("init", "-config", e.ConfigPath)
		if err != nil {
			t.Fatalf("second init: %v\n%s", err, out)
		}
		if !strings.Contains(out, "unchanged") || strings.Contains(out, "created") {
			t.Fatalf("second init output: %s", out)
		}
		info2, err := e.Ctl("kek-info", "-config", e.ConfigPath)
		if err != nil || info1 != info2 {
			t.Fatalf("KEK changed by a second init:\n%s\n%s (%v)", info1, info2, err)
		}
		if fileSum(t, e.DBPath) != db1 {
			t.Fatal("database file changed by a second init")
		}
		if strings.Contains(out+info2, e.Token.PIN) {
			t.Fatal("vaultctl printed the PIN")
		}
	})

	t.Run("unknown_key", func(t *testing.T) {
		replace(t, "[server]\n", "[server]\nlisten_adress = \"127.0.0.1:1\"\n")
		wantMention(t, e.startFails(t), "listen_adress")
	})
	t.Run("unknown_section", func(t *testing.T) {
		writeConfig(t, good+"\n[nonsense]\nx = 1\n")
		wantMention(t, e.startFails(t), "nonsense")
	})
	t.Run("config_missing", func(t *testing.T) {
		must(t, os.Rename(e.ConfigPath, e.ConfigPath+".away"))
		t.Cleanup(func() { must(t, os.Rename(e.ConfigPath+".away", e.ConfigPath)) })
		wantMention(t, e.startFails(t), filepath.Base(e.ConfigPath))
	})
	t.Run("truncated_database", func(t *testing.T) {
		// A partial copy or a full disk: a clear error, not a SIGSEGV
		// inside bbolt's mmap.
		orig, err := os.ReadFile(e.DBPath)
		must(t, err)
		t.Cleanup(func() { must(t, os.WriteFile(e.DBPath, orig, 0o600)) })
		must(t, os.WriteFile(e.DBPath, orig[:2*os.Getpagesize()], 0o600))
		wantMention(t, e.startFails(t), e.DBPath, "truncated")
	})
	t.Run("missing_kek", func(t *testing.T) {
		replace(t, `kek_label   = "vaultd-kek"`, `kek_label   = "never-initialised"`)
		wantMention(t, e.startFails(t), "kek")
	})
	t.Run("wrong_pin", func(t *testing.T) {
		writePIN(t, "987654321\n")
		line := e.startFails(t)
		wantMention(t, line, "pin")
		if strings.Contains(line, "987654321") {
			t.Fatalf("the wrong PIN is printed: %s", line)
		}
	})
	t.Run("pin_two_newlines", func(t *testing.T) {
		// Only one trailing newline is not part of the PIN.
		writePIN(t, e.Token.PIN+"\n\n")
		e.startFails(t)
	})
	t.Run("pin_file_missing", func(t *testing.T) {
		replace(t, e.PINPath, e.PINPath+".missing")
		wantMention(t, e.startFails(t), "pin")
	})
	t.Run("tls_key_missing", func(t *testing.T) {
		key := filepath.Join(e.PKIDir, "server.key")
		replace(t, key, key+".missing")
		wantMention(t, e.startFails(t), "server.key")
	})
	t.Run("tls_key_unreadable", func(t *testing.T) {
		// Root reads anything, so "unreadable" is a directory here.
		dir := filepath.Join(e.Dir, "keydir.key")
		must(t, os.MkdirAll(dir, 0o700))
		replace(t, filepath.Join(e.PKIDir, "server.key"), dir)
		wantMention(t, e.startFails(t), "keydir.key")
	})
	t.Run("tls_key_garbage", func(t *testing.T) {
		bad := filepath.Join(e.Dir, "garbage.key")
		must(t, os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600))
		replace(t, filepath.Join(e.PKIDir, "server.key"), bad)
		line := e.startFails(t)
		wantMention(t, line, "server")
		if strings.Contains(line, "AAAA") {
			t.Fatalf("key content printed: %s", line)
		}
	})
	t.Run("client_secret_missing", func(t *testing.T) {
		p := filepath.Join(e.Dir, "client-secret")
		replace(t, p, p+".missing")
		wantMention(t, e.startFails(t), "client_secret_file")
	})
	t.Run("client_ca_missing", func(t *testing.T) {
		p := filepath.Join(e.PKIDir, "ca.crt")
		replace(t, "client_ca  = "+`"`+p, "client_ca  = "+`"`+p+".missing")
		wantMention(t, e.startFails(t), "client_ca")
	})
	t.Run("port_in_use", func(t *testing.T) {
		l, err := net.Listen("tcp", e.listen)
		must(t, err)
		defer l.Close()
		wantMention(t, e.startFails(t), e.listen)
	})
	t.Run("ops_port_in_use", func(t *testing.T) {
		l, err := net.Listen("tcp", e.opsListen)
		must(t, err)
		defer l.Close()
		wantMention(t, e.startFails(t), e.opsListen)
	})
	t.Run("default_config_path", func(t *testing.T) {
		cmd := exec.Command(e.Vaultd)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "/etc/vaultd/vaultd.toml") {
			t.Fatalf("vaultd without -config: %v %s", err, out)
		}
	})
	t.Run("never_creates_kek", func(t *testing.T) {
		replace(t, `kek_label   = "vaultd-kek"`, `kek_label   = "not-there"`)
		e.startFails(t)
		if out, err := e.Ctl("kek-info", "-config", e.ConfigPath); err == nil {
			t.Fatalf("a KEK appeared after a refused start: %s", out)
		}
	})
	t.Run("pin_from_credentials_directory", func(t *testing.T) {
		// systemd LoadCredential= wins over pin_file.
		writePIN(t, "000000\n")
		cred := t.TempDir()
		must(t, os.WriteFile(filepath.Join(cred, "hsm-pin"), []byte(e.Token.PIN+"\n"), 0o600))
		old := e.Opts.Env
		e.Opts.Env = append(append([]string(nil), old...), "CREDENTIALS_DIRECTORY="+cred)
		defer func() { e.Opts.Env = old }()
		e.Start()
		if err := e.Stop(); err != nil {
			t.Fatalf("exit: %v", err)
		}
	})
	t.Run("starts_with_one_newline", func(t *testing.T) {
		writePIN(t, e.Token.PIN+"\n")
		e.Start()
		defer e.Stop()
		if code, _ := e.OpsGet("/readyz"); code != 200 {
			t.Fatalf("readyz %d", code)
		}
	})
	t.Run("starts_without_newline", func(t *testing.T) {
		writePIN(t, e.Token.PIN)
		e.Start()
		if err := e.Stop(); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	})
}

// TestOps: the plain-HTTP ops listener.
func TestOps(t *testing.T) {
	e := New(t, Options{})
	e.CreateTenant("acme")

	t.Run("healthz", func(t *testing.T) {
		code, body := e.OpsGet("/healthz")
		if code != 200 {
			t.Fatalf("healthz %d %s", code, body)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		code, body := e.OpsGet("/readyz")
		var m map[string]any
		if code != 200 || json.Unmarshal([]byte(body), &m) != nil || m["status"] != "ready" {
			t.Fatalf("readyz %d %s", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(e.Ops + "/metrics")
		must(t, err)
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("metrics %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		s := b.String()
		for _, want := range []string{"# TYPE vaultd_http_requests_total counter", `vaultd_http_requests_total{route="tenants",status="201"} 1`,
			"# HELP vaultd_", "vaultd_auth_denied_total"} {
			if !strings.Contains(s, want) {
				t.Fatalf("metrics lack %q", want)
			}
		}
		if strings.Contains(s, "acme") {
			t.Fatal("a tenant id appears in metrics")
		}
	})
	t.Run("no_tls_and_loopback", func(t *testing.T) {
		host, _, err := net.SplitHostPort(strings.TrimPrefix(e.Ops, "http://"))
		must(t, err)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			t.Fatalf("ops listens on %s", host)
		}
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.Ops, "http://"), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatal("ops listener speaks TLS")
		}
		// The ops listener serves nothing of the API.
		code, _ := e.OpsGet("/v1/tenants/acme")
		if code != 404 {
			t.Fatalf("API path on ops: %d", code)
		}
		// And the API port refuses plain HTTP.
		resp, err := http.Get("http://" + e.Addr() + "/v1/tenants/acme")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Fatalf("plain HTTP on the API port answered %d", resp.StatusCode)
			}
		}
	})
	t.Run("readyz_while_draining", func(t *testing.T) {
		// Hold one API request in flight (a refresh the provider answers
		// slowly), send SIGTERM, and watch readyz turn 503 while the
		// request drains.
		e.Provider.SetExpiresIn(10)
		e.StoreToken(AppAcme, "slow")
		e.Provider.SetRefreshDelay(4 * time.Second)
		before := e.Provider.RefreshCount()
		done := make(chan apiResp, 1)
		go func() {
			done <- doNoFatal(e.HTTP(AppAcme), e.API+"/v1/integrations/slow/proxy/contacts")
		}()
		waitFor(t, func() bool { return e.Provider.RefreshCount() > before })
		e.Signal(syscall.SIGTERM)
		var body string
		waitFor(t, func() bool {
			resp, err := http.Get(e.Ops + "/readyz")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			body = b.String()
			return resp.StatusCode == http.StatusServiceUnavailable
		})
		var m map[string]any
		if json.Unmarshal([]byte(body), &m) != nil || m["reason"] == nil || m["reason"] == "" {
			t.Fatalf("readyz 503 body: %s", body)
		}
		if code, _ := e.OpsGet("/healthz"); code != 200 {
			t.Fatalf("healthz while draining: %d", code)
		}
		r := <-done
		if r.Status != 200 {
			t.Fatalf("in-flight request during drain: %d %s", r.Status, r.Body)
		}
		if err := e.Stop(); err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	})
}

// doNoFatal GETs url from another goroutine (no t.Fatal there).
func doNoFatal(c *http.Client, url string) apiResp {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return apiResp{Body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return apiResp{Status: resp.StatusCode, Header: resp.Header, Body: b.Bytes()}
}

// waitFor polls cond for at most 30s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("condition not reached within 30s")
}
