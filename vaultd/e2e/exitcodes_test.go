package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage/bolt"
)

// Exit statuses the systemd unit acts on (RestartPreventExitStatus=77 78).
// Spelled out here rather than imported: the test pins the numbers the
// unit and the documentation promise.
const (
	exitTransient  = 1  // systemd restarts the service
	exitCredential = 77 // EX_NOPERM: the HSM refused the PIN; never retried
	exitConfig     = 78 // EX_CONFIG: an operator must fix something; never retried
)

// startExit starts vaultd expecting a refusal and returns its exit status
// and its one stderr line (startFails checks there is exactly one line and
// no secret in it).
func (e *Env) startExit(t *testing.T) (int, string) {
	t.Helper()
	line := e.startFails(t)
	var ee *exec.ExitError
	if !errors.As(e.exitErr, &ee) {
		t.Fatalf("vaultd exit: %v", e.exitErr)
	}
	return ee.ExitCode(), line
}

// startExitLast is startExit for failures after the HSM and the store
// have logged: the refusal is the last line; no line carries a secret.
func (e *Env) startExitLast(t *testing.T) (int, string) {
	t.Helper()
	if err := e.TryStart(); err == nil {
		e.Stop()
		t.Fatalf("vaultd started; logs:\n%s", e.Logs())
	}
	var ee *exec.ExitError
	if !errors.As(e.exitErr, &ee) {
		t.Fatalf("vaultd exit: %v", e.exitErr)
	}
	out := strings.TrimRight(e.Logs(), "\n")
	for _, sec := range []string{e.Token.PIN, e.Token.SOPin, e.Provider.ClientSecret().Reveal()} {
		// An empty one (a shared token whose SO PIN this Env does not
		// hold) is in every string.
		if sec != "" && strings.Contains(out, sec) {
			t.Fatalf("a secret appears in the start-up output: %s", out)
		}
	}
	lines := strings.Split(out, "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "vaultd: ") {
		t.Fatalf("last line is not the refusal:\n%s", out)
	}
	return ee.ExitCode(), last
}

// startupFixture edits one Env's config and PIN file per subtest and puts
// them back afterwards.
type startupFixture struct {
	e    *Env
	good string
}

func (f *startupFixture) writeConfig(t *testing.T, text string) {
	t.Helper()
	must(t, os.WriteFile(f.e.ConfigPath, []byte(text), 0o600))
	t.Cleanup(func() { must(t, os.WriteFile(f.e.ConfigPath, []byte(f.good), 0o600)) })
}

func (f *startupFixture) replace(t *testing.T, old, new string) {
	t.Helper()
	if !strings.Contains(f.good, old) {
		t.Fatalf("config lacks %q", old)
	}
	f.writeConfig(t, strings.Replace(f.good, old, new, 1))
}

func (f *startupFixture) writePIN(t *testing.T, pin string) {
	t.Helper()
	must(t, os.WriteFile(f.e.PINPath, []byte(pin), 0o600))
	t.Cleanup(func() { must(t, os.WriteFile(f.e.PINPath, []byte(f.e.Token.PIN+"\n"), 0o600)) })
}

// TestAdversarialStartupExitCodes: a start-up failure a restart cannot cure
// exits 77 (the HSM refused the PIN: retrying could lock the PIN out or
// zeroise the token) or 78 (configuration), so the unit's
// RestartPreventExitStatus=77 78 stops the retry loop; anything a restart
// may cure still exits 1. Every refusal stays one line without the PIN.
func TestAdversarialStartupExitCodes(t *testing.T) {
	e := New(t, Options{NoStart: true})
	f := &startupFixture{e: e, good: e.ConfigText()}

	t.Run("wrong_pin_77", func(t *testing.T) {
		f.writePIN(t, "987654321\n")
		code, line := e.startExit(t)
		wantMention(t, line, "pin")
		if strings.Contains(line, "987654321") {
			t.Fatalf("the wrong PIN is printed: %s", line)
		}
		if code != exitCredential {
			t.Fatalf("wrong PIN: exit %d, want %d (%s)", code, exitCredential, line)
		}
	})
	t.Run("wrong_pin_from_credential_77", func(t *testing.T) {
		// The systemd credential is the production path.
		cred := t.TempDir()
		must(t, os.WriteFile(filepath.Join(cred, "hsm-pin"), []byte("55555555\n"), 0o600))
		old := e.Opts.Env
		e.Opts.Env = append(append([]string(nil), old...), "CREDENTIALS_DIRECTORY="+cred)
		defer func() { e.Opts.Env = old }()
		code, line := e.startExit(t)
		if strings.Contains(line, "55555555") {
			t.Fatalf("the wrong PIN is printed: %s", line)
		}
		if code != exitCredential {
			t.Fatalf("wrong PIN credential: exit %d, want %d (%s)", code, exitCredential, line)
		}
	})
	t.Run("pin_too_long_77", func(t *testing.T) {
		// Longer than any token accepts (CKR_PIN_LEN_RANGE or
		// CKR_PIN_INCORRECT, depending on the module): still the PIN.
		long := strings.Repeat("7", 300)
		f.writePIN(t, long+"\n")
		code, line := e.startExit(t)
		if strings.Contains(line, "7777777") {
			t.Fatalf("the PIN is printed: %s", line)
		}
		if code != exitCredential {
			t.Fatalf("over-long PIN: exit %d, want %d (%s)", code, exitCredential, line)
		}
	})

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
		words []string
	}{
		{"config_missing", func(t *testing.T) {
			must(t, os.Rename(e.ConfigPath, e.ConfigPath+".away"))
			t.Cleanup(func() { must(t, os.Rename(e.ConfigPath+".away", e.ConfigPath)) })
		}, []string{filepath.Base(e.ConfigPath)}},
		{"config_unknown_key", func(t *testing.T) {
			f.replace(t, "[server]\n", "[server]\nlisten_adress = \"127.0.0.1:1\"\n")
		}, []string{"listen_adress"}},
		{"config_invalid_value", func(t *testing.T) {
			f.replace(t, `kek_label   = "vaultd-kek"`, `kek_label   = "vaultd-kek"`+"\nmax_sessions = 0")
		}, []string{"hsm.max_sessions"}},
		{"pin_file_missing", func(t *testing.T) {
			f.replace(t, e.PINPath, e.PINPath+".missing")
		}, []string{"pin"}},
		{"pin_file_empty", func(t *testing.T) {
			f.writePIN(t, "\n")
		}, []string{"pin", "empty"}},
		{"tls_key_missing", func(t *testing.T) {
			key := filepath.Join(e.PKIDir, "server.key")
			f.replace(t, key, key+".missing")
		}, []string{"server.key"}},
		{"tls_key_garbage", func(t *testing.T) {
			// Readable, so it passes config validation; the TLS loader
			// refuses it.
			bad := filepath.Join(e.Dir, "garbage.key")
			must(t, os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600))
			f.replace(t, filepath.Join(e.PKIDir, "server.key"), bad)
		}, []string{"server"}},
		{"client_ca_not_pem", func(t *testing.T) {
			bad := filepath.Join(e.Dir, "not-a-ca.crt")
			must(t, os.WriteFile(bad, []byte("not a certificate\n"), 0o600))
			f.replace(t, "client_ca  = "+`"`+filepath.Join(e.PKIDir, "ca.crt"), "client_ca  = "+`"`+bad)
		}, []string{"client_ca"}},
		{"jwks_garbage", func(t *testing.T) {
			bad := filepath.Join(e.Dir, "garbage.jwks")
			must(t, os.WriteFile(bad, []byte("{not json"), 0o600))
			f.replace(t, filepath.Join(e.Dir, "jwks.json"), bad)
		}, []string{"tenant_context", "jwks"}},
		{"client_secret_missing", func(t *testing.T) {
			p := filepath.Join(e.Dir, "client-secret")
			f.replace(t, p, p+".missing")
		}, []string{"client_secret_file"}},
		{"kek_missing", func(t *testing.T) {
			// `vaultctl init` was not run for this label.
			f.replace(t, `kek_label   = "vaultd-kek"`, `kek_label   = "never-initialised"`)
		}, []string{"kek", "vaultctl init"}},
		{"token_label_not_found", func(t *testing.T) {
			f.replace(t, "token_label = "+`"`+e.Token.Label+`"`, `token_label = "no-such-token"`)
		}, []string{"no-such-token"}},
		{"extra_syscall_never_allowed", func(t *testing.T) {
			// Refused when the config is read, not at hardening time
			// (which exited 1, and the unit restarted it).
			f.replace(t, `seccomp = "enforce"`, "seccomp = \"enforce\"\nextra_syscalls = [\"getppid\", \"ptrace\"]")
		}, []string{"harden.extra_syscalls[1]", "never allowed"}},
	} {
		t.Run(tc.name+"_78", func(t *testing.T) {
			tc.setup(t)
			code, line := e.startExit(t)
			wantMention(t, line, tc.words...)
			if code != exitConfig {
				t.Fatalf("exit %d, want %d (%s)", code, exitConfig, line)
			}
		})
	}

	t.Run("bad_flag_78", func(t *testing.T) {
		// A bad ExecStart= line is configuration too.
		cmd := exec.Command(e.Vaultd, "-config", e.ConfigPath, "-log-level", "chatty")
		cmd.Env = append(os.Environ(), e.Token.Env())
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
			t.Fatalf("bad -log-level: %v, want exit %d\n%s", err, exitConfig, out)
		}
		wantMention(t, string(out), "log-level")
	})

	// Failures a later start may not meet: systemd restarts these (within
	// the unit's start limit).
	t.Run("api_port_in_use_1", func(t *testing.T) {
		l, err := net.Listen("tcp", e.listen)
		must(t, err)
		defer l.Close()
		code, line := e.startExit(t)
		wantMention(t, line, e.listen)
		if code != exitTransient {
			t.Fatalf("port in use: exit %d, want %d (%s)", code, exitTransient, line)
		}
	})
	t.Run("store_locked_1", func(t *testing.T) {
		// Another process (an old vaultd still draining) holds the
		// database. This fails after a successful HSM login.
		s, err := bolt.Open(t.Context(), e.DBPath, bolt.Options{})
		must(t, err)
		defer s.Close()
		// The HSM has logged its INFO line by then: the refusal is the
		// last line, not the only one.
		code, line := e.startExitLast(t)
		wantMention(t, line, "locked")
		if code != exitTransient {
			t.Fatalf("store locked: exit %d, want %d (%s)", code, exitTransient, line)
		}
	})

	// After all of that the good set-up still starts: nothing above
	// locked the PIN or changed the token.
	t.Run("good_starts", func(t *testing.T) {
		if err := e.TryStart(); err != nil {
			t.Fatalf("vaultd did not start: %v\nlogs:\n%s", err, e.Logs())
		}
		if err := e.Stop(); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	})
}

// TestAdversarialOpsListen: the ops listener is plain HTTP without client
// certificates, so vaultd refuses to start with a non-loopback ops_listen
// (exit 78, one line naming the key and the opt-in) before binding
// anything; the opt-in key is accepted by the real binary. (The opt-in is
// not started on 0.0.0.0 here: that would bind every interface of the
// test machine; the config unit tests cover it.)
func TestAdversarialOpsListen(t *testing.T) {
	e := New(t, Options{NoStart: true})
	f := &startupFixture{e: e, good: e.ConfigText()}
	opsLine := "ops_listen = " + `"` + e.opsListen + `"`

	refused := func(addr string) func(t *testing.T) {
		return func(t *testing.T) {
			f.replace(t, opsLine, `ops_listen = "`+addr+`"`)
			code, line := e.startExit(t)
			wantMention(t, line, "server.ops_listen", "loopback", "ops_allow_non_loopback")
			if code != exitConfig {
				t.Fatalf("exit %d, want %d (%s)", code, exitConfig, line)
			}
		}
	}
	// Documentation prefixes (RFC 5737, RFC 3849) are on no interface of
	// the test machine: without the check vaultd fails to bind them
	// (exit 1) instead of listening anywhere.
	ok := t.Run("refused_192.0.2.1", refused("192.0.2.1:0"))
	ok = t.Run("refused_2001:db8::1", refused("[2001:db8::1]:0")) && ok
	// Only once those showed the refusal happens: should the check ever
	// regress, these would bind every interface of the test machine.
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		if !ok {
			t.Logf("skipping ops_listen %q: the refusal is not in place", addr)
			continue
		}
		t.Run("refused_"+addr, refused(addr))
	}
	t.Run("opt_in_key_accepted", func(t *testing.T) {
		f.replace(t, opsLine, opsLine+"\nops_allow_non_loopback = true")
		if err := e.TryStart(); err != nil {
			t.Fatalf("vaultd did not start: %v\nlogs:\n%s", err, e.Logs())
		}
		defer e.Stop()
		if code, _ := e.OpsGet("/healthz"); code != 200 {
			t.Fatalf("healthz %d", code)
		}
		if err := e.Stop(); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	})
}
