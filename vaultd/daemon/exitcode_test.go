package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/devpki"
	"github.com/vaultd/vaultd/internal/softhsmtest"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/config"
)

// hsmErr builds an error the way the hsm/pkcs11 backend reports one.
func hsmErr(kind error, code uint) error {
	return &hsm.Error{Msg: `hsm: token "vaultd": login`, Kind: kind, Cause: pkcs11.Error(code)}
}

// TestExitCode: the one classification of start-up failures. A rejected
// PIN is 77 and a configuration problem 78, which the unit never restarts;
// everything else is 1, which it does (within its start limit).
func TestExitCode(t *testing.T) {
	_, cfgErr := config.Parse([]byte("[server]\nlisten = 1\n"), "", config.ModeSyntax)
	_, missingErr := config.Load(filepath.Join(t.TempDir(), "absent.toml"), config.ModeDaemon)
	pinErr := func() error {
		h := config.HSMConfig{PINFile: filepath.Join(t.TempDir(), "absent.pin")}
		_, err := h.LoadPIN()
		return err
	}()
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"help", flag.ErrHelp, ExitOK},

		{"pin incorrect", hsmErr(hsm.ErrWrongPIN, pkcs11.CKR_PIN_INCORRECT), ExitCredential},
		{"pin invalid", hsmErr(hsm.ErrWrongPIN, pkcs11.CKR_PIN_INVALID), ExitCredential},
		{"pin len range", hsmErr(hsm.ErrWrongPIN, pkcs11.CKR_PIN_LEN_RANGE), ExitCredential},
		{"pin locked", hsmErr(hsm.ErrPINLocked, pkcs11.CKR_PIN_LOCKED), ExitCredential},
		{"pin expired", hsmErr(hsm.ErrPINLocked, pkcs11.CKR_PIN_EXPIRED), ExitCredential},
		{"empty pin", &hsm.Error{Msg: "hsm: empty PIN", Kind: hsm.ErrWrongPIN}, ExitCredential},
		{"pin wrapped", fmt.Errorf("keyring: %w", hsmErr(hsm.ErrWrongPIN, pkcs11.CKR_PIN_INCORRECT)), ExitCredential},
		// Credential wins over configuration: a PIN error must never be
		// retried, whatever else it is marked as.
		{"pin marked config", configError(hsmErr(hsm.ErrWrongPIN, pkcs11.CKR_PIN_INCORRECT)), ExitCredential},

		{"config parse", cfgErr, ExitConfig},
		{"config missing", missingErr, ExitConfig},
		{"pin file missing", pinErr, ExitConfig},
		{"marked", configError(errors.New("server certificate x: tls: failed to parse private key")), ExitConfig},
		{"marked wrapped", fmt.Errorf("start: %w", configError(errors.New("x"))), ExitConfig},
		{"flag", configError(errors.New("flag provided but not defined: -x")), ExitConfig},
		{"token not found", &hsm.Error{Msg: "hsm: not present", Kind: hsm.ErrTokenNotFound}, ExitConfig},
		{"token not present", hsmErr(hsm.ErrTokenNotFound, pkcs11.CKR_TOKEN_NOT_PRESENT), ExitConfig},
		{"kek not found", &hsm.Error{Msg: "hsm: no KEK", Kind: hsm.ErrKEKNotFound}, ExitConfig},
		{"audit key not found", &hsm.Error{Msg: "hsm: no audit key", Kind: hsm.ErrAuditKeyNotFound}, ExitConfig},
		{"audit key invalid", &hsm.Error{Msg: "hsm: bad audit key", Kind: hsm.ErrAuditKeyInvalid}, ExitConfig},
		{"kek invalid", &hsm.Error{Msg: "hsm: KEK extractable", Kind: hsm.ErrKEKInvalid}, ExitConfig},

		{"hsm unavailable", hsmErr(hsm.ErrUnavailable, pkcs11.CKR_DEVICE_ERROR), ExitFailure},
		{"hsm login other", hsmErr(hsm.ErrUnavailable, pkcs11.CKR_USER_ALREADY_LOGGED_IN), ExitFailure},
		{"hsm module", &hsm.Error{Msg: "hsm: module", Kind: hsm.ErrModule}, ExitFailure},
		{"store locked", &bolt.LockedError{Path: "/var/lib/vaultd/vault.db"}, ExitFailure},
		{"store corrupt", fmt.Errorf("%w: truncated", storage.ErrCorrupt), ExitFailure},
		{"listen", fmt.Errorf("listen 127.0.0.1:8443: %w", &net.OpError{Op: "listen", Err: errors.New("address already in use")}), ExitFailure},
		{"canceled", context.Canceled, ExitFailure},
		{"plain", errors.New("listener failed"), ExitFailure},
		// A message that merely talks about a PIN or a config is not one.
		{"text only", errors.New("config: wrong PIN"), ExitFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(tc.err); got != tc.want {
				t.Fatalf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// TestConfigErrorKeepsMessage: marking an error changes its class, not the
// start-up line, and keeps its own chain.
func TestConfigErrorKeepsMessage(t *testing.T) {
	inner := fmt.Errorf("client_ca: %w", os.ErrNotExist)
	err := configError(inner)
	if err.Error() != inner.Error() {
		t.Fatalf("message %q, want %q", err, inner)
	}
	if !errors.Is(err, ErrConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chain lost: %v", err)
	}
	if configError(nil) != nil {
		t.Fatal("configError(nil) != nil")
	}
}

// runFixture is a config that passes ModeDaemon validation, with real TLS
// material and a SoftHSM token, so Run gets as far as each failure.
type runFixture struct {
	dir, cfgPath string
	tok          softhsmtest.Token
	vals         map[string]string
}

func newRunFixture(t *testing.T) *runFixture {
	t.Helper()
	dir := t.TempDir()
	conf := softhsmtest.NewConf(t)
	tok := conf.NewToken(t)
	// The module reads SOFTHSM2_CONF when it is initialised, i.e. on
	// every hsm.Open here (each one fails and releases the module).
	t.Setenv("SOFTHSM2_CONF", conf.Path)
	ca, err := devpki.NewCA("exitcode test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := srv.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ca.crt"), string(ca.CertPEM))
	write(t, filepath.Join(dir, "hsm.pin"), tok.PIN+"\n")
	return &runFixture{dir: dir, cfgPath: filepath.Join(dir, "vaultd.toml"), tok: tok, vals: map[string]string{
		"listen": "127.0.0.1:0", "tls_cert": cert, "tls_key": key, "client_ca": filepath.Join(dir, "ca.crt"),
		"module": tok.Module, "token_label": tok.Label, "pin_file": filepath.Join(dir, "hsm.pin"),
		"kek_label": "vaultd-kek", "path": filepath.Join(dir, "vault.db"),
	}}
}

func (f *runFixture) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	v := f.vals
	text := fmt.Sprintf("[server]\nlisten = %q\nhttp3 = false\ntls_cert = %q\ntls_key = %q\nclient_ca = %q\n\n"+
		"[hsm]\nmodule = %q\ntoken_label = %q\npin_file = %q\nkek_label = %q\n\n[storage]\npath = %q\n",
		v["listen"], v["tls_cert"], v["tls_key"], v["client_ca"], v["module"], v["token_label"], v["pin_file"], v["kek_label"], v["path"])
	write(t, f.cfgPath, text)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// Every case fails before Run serves; a bug that made one start
	// would return when the deadline cancels ctx.
	err := Run(ctx, append([]string{"-config", f.cfgPath}, args...), io.Discard, &out, Hooks{})
	if err == nil {
		t.Fatalf("Run succeeded; logs:\n%s", out.String())
	}
	logs := out.String() + err.Error()
	if strings.Contains(logs, f.tok.PIN) || strings.Contains(logs, f.tok.SOPin) {
		t.Fatalf("a PIN appears in the output: %s", logs)
	}
	return logs, err
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRunExitCodes: Run's real failures classify as the unit expects, from
// the command line through the files to the HSM login.
func TestRunExitCodes(t *testing.T) {
	f := newRunFixture(t)
	set := func(t *testing.T, key, val string) {
		old := f.vals[key]
		f.vals[key] = val
		t.Cleanup(func() { f.vals[key] = old })
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) []string // extra args
		want  int
		words []string
	}{
		{"bad flag", func(t *testing.T) []string { return []string{"-no-such-flag"} }, ExitConfig, []string{"no-such-flag"}},
		{"bad log level", func(t *testing.T) []string { return []string{"-log-level", "chatty"} }, ExitConfig, []string{"log-level"}},
		{"help", func(t *testing.T) []string { return []string{"-h"} }, ExitOK, nil},
		{"config invalid", func(t *testing.T) []string { set(t, "listen", "127.0.0.1"); return nil }, ExitConfig, []string{"server.listen"}},
		{"tls key garbage", func(t *testing.T) []string {
			p := filepath.Join(t.TempDir(), "garbage.key")
			write(t, p, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
			set(t, "tls_key", p)
			return nil
		}, ExitConfig, []string{"server certificate"}},
		{"client ca not pem", func(t *testing.T) []string {
			p := filepath.Join(t.TempDir(), "ca.crt")
			write(t, p, "not a certificate\n")
			set(t, "client_ca", p)
			return nil
		}, ExitConfig, []string{"client_ca"}},
		{"pin file empty", func(t *testing.T) []string {
			p := filepath.Join(t.TempDir(), "hsm.pin")
			write(t, p, "\n")
			set(t, "pin_file", p)
			return nil
		}, ExitConfig, []string{"pin"}},
		{"wrong pin", func(t *testing.T) []string {
			p := filepath.Join(t.TempDir(), "hsm.pin")
			write(t, p, "000000\n")
			set(t, "pin_file", p)
			return nil
		}, ExitCredential, []string{"wrong pin"}},
		{"token label not found", func(t *testing.T) []string { set(t, "token_label", "no-such-token"); return nil }, ExitConfig, []string{"no-such-token"}},
		{"kek missing", func(t *testing.T) []string { return nil }, ExitConfig, []string{"vaultctl init"}}, // the fresh token has no KEK
		{"port in use", func(t *testing.T) []string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			set(t, "listen", l.Addr().String())
			return nil
		}, ExitFailure, []string{"listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, err := f.run(t, tc.setup(t)...)
			if got := ExitCode(err); got != tc.want {
				t.Fatalf("ExitCode = %d, want %d: %v", got, tc.want, err)
			}
			for _, w := range tc.words {
				if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
					t.Fatalf("error %q does not mention %q\n%s", err, w, logs)
				}
			}
		})
	}
}

// unitSettings reads a systemd unit file into section -> key -> values.
func unitSettings(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if out[section] == nil {
				out[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse %q", path, line)
			}
			out[section][strings.TrimSpace(k)] = append(out[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func one(t *testing.T, u map[string]map[string][]string, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s: want exactly one setting, got %q", section, key, v)
	}
	return v[0]
}

// seconds parses the plain forms the unit uses ("5s", "10min", "30").
func seconds(t *testing.T, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.Replace(s, "min", "m", 1))
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// TestUnitRestartPolicy: the packaged unit (nfpm ships systemd/ as is)
// does not restart on the exit codes ExitCode gives a rejected PIN and a
// bad configuration, and its start limit can actually stop the restarts
// on everything else: the automatic restarts alone fill the burst within
// the interval.
func TestUnitRestartPolicy(t *testing.T) {
	u := unitSettings(t, filepath.Join("..", "..", "systemd", "vaultd.service"))
	if got := one(t, u, "Service", "Restart"); got != "on-failure" {
		t.Fatalf("Restart=%s", got)
	}
	prevent := strings.Fields(one(t, u, "Service", "RestartPreventExitStatus"))
	for _, code := range []int{ExitCredential, ExitConfig} {
		found := false
		for _, p := range prevent {
			found = found || p == strconv.Itoa(code)
		}
		if !found {
			t.Errorf("RestartPreventExitStatus=%s lacks %d", strings.Join(prevent, " "), code)
		}
	}
	for _, p := range prevent {
		if p == strconv.Itoa(ExitFailure) {
			t.Errorf("RestartPreventExitStatus lists %d: transient failures must be restarted", ExitFailure)
		}
	}
	// Start limits live in [Unit]; in [Service] systemd ignores them.
	if len(u["Service"]["StartLimitIntervalSec"])+len(u["Service"]["StartLimitBurst"]) > 0 {
		t.Error("StartLimit*= belong in [Unit]")
	}
	interval := seconds(t, one(t, u, "Unit", "StartLimitIntervalSec"))
	burst, err := strconv.Atoi(one(t, u, "Unit", "StartLimitBurst"))
	if err != nil || burst < 1 {
		t.Fatalf("StartLimitBurst=%s", one(t, u, "Unit", "StartLimitBurst"))
	}
	restartDelay := seconds(t, one(t, u, "Service", "RestartSec"))
	if interval <= 0 || time.Duration(burst)*restartDelay >= interval {
		t.Errorf("StartLimitBurst=%d x RestartSec=%v does not fit in StartLimitIntervalSec=%v: the limit would never stop the restarts",
			burst, restartDelay, interval)
	}
}

// TestManPageExitStatus: vaultd(8) documents the exit codes the unit acts on.
func TestManPageExitStatus(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "man", "vaultd.8"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), ".SH EXIT STATUS\n")
	if !ok {
		t.Fatal("vaultd.8 has no EXIT STATUS section")
	}
	section, _, _ := strings.Cut(after, "\n.SH ")
	for _, code := range []int{ExitOK, ExitFailure, ExitCredential, ExitConfig} {
		if !strings.Contains(section, strconv.Itoa(code)) {
			t.Errorf("EXIT STATUS does not mention %d:\n%s", code, section)
		}
	}
	if !strings.Contains(section, "RestartPreventExitStatus") {
		t.Errorf("EXIT STATUS does not say the unit does not restart on them:\n%s", section)
	}
}
