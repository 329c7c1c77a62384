// Package e2e runs the real vaultd and vaultctl binaries against a real
// SoftHSM token, real bbolt files and real TLS 1.3 on 127.0.0.1, with a
// local fake OAuth provider (vaultd/oauth/oauthtest) standing in for
// Salesforce & co. Every test gets its own token, database, PKI and
// config in t.TempDir().
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/vaultd/vaultd/internal/devpki"
	"github.com/vaultd/vaultd/internal/ocktest"
	"github.com/vaultd/vaultd/internal/softhsmtest"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// Principal certificate names made for every Env.
const (
	AppAcme      = "app-acme"     // app, tenant fixed to "acme"
	AppGlobex    = "app-globex"   // app, tenant fixed to "globex"
	AppMulti     = "app-multi"    // app, URI SAN, tenant from the tenant-context JWT
	Operator     = "operator"     // operator (CN ops-admin)
	Auditor      = "auditor"      // auditor, all tenants
	AuditorAcme  = "auditor-acme" // auditor bound to acme
	Stranger     = "stranger"     // chains to the CA but is no principal
	Rogue        = "rogue"        // from another CA
	MultiURI     = "spiffe://vaultd.test/app/multi"
	JWTIssuer    = "https://auth.vaultd.test"
	JWTAudience  = "vaultd"
	ProviderName = "example"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries builds vaultd and vaultctl once per test process.
func Binaries(t testing.TB) (vaultd, vaultctl string) {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "vaultd-e2e-bin-")
		if binErr != nil {
			return
		}
		root, err := repoRoot()
		if err != nil {
			binErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/vaultd", "./cmd/vaultctl")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "vaultd"), filepath.Join(binDir, "vaultctl")
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		dir = filepath.Dir(dir)
	}
	return "", fmt.Errorf("go.mod not found above the test directory")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Options tunes an Env.
type Options struct {
	Mlock   string // default "required"
	Seccomp string // default "enforce"
	// ExtraConfig is appended to the generated config (more providers...).
	ExtraConfig string
	// ProviderConfig replaces the generated [providers.example] body keys
	// that follow the URLs and credentials (e.g. refresh_margin).
	RefreshMargin string // default "60s"
	AuthStyle     string // default "basic"
	NoStart       bool   // set up and init, but do not start vaultd
	NoInit        bool   // do not run vaultctl init
	AuditFile     bool   // mirror the audit trail to Dir/audit.jsonl (default true via !NoAuditFile)
	NoAuditFile   bool
	// Env is added to vaultd's environment (e.g. NOTIFY_SOCKET).
	Env []string
	// MaxBodyBytes sets [server] max_body_bytes (0: the default). It is a
	// field rather than ExtraConfig because ExtraConfig lands inside the
	// last [providers.*] table.
	MaxBodyBytes int64
	// RequestTimeout sets [server] request_timeout ("": the default).
	RequestTimeout string
	// HSMHealthInterval sets [hsm] health_interval ("": the default).
	HSMHealthInterval string
	// CheckpointInterval sets [audit] checkpoint_interval ("": the default).
	CheckpointInterval string
	// AuditExtra is appended to the [audit] section (e.g. `sync = "always"`).
	AuditExtra string
	// OpenCryptoki runs against openCryptoki's soft token (internal/ocktest:
	// no AES-GCM, no key wrap, no EC) instead of a fresh SoftHSM token. The
	// token is shared, so the Env's KEK label is its own.
	OpenCryptoki bool
}

// Env is one running (or runnable) vaultd with everything around it.
type Env struct {
	t          testing.TB
	Dir        string
	Vaultd     string
	Vaultctl   string
	ConfigPath string
	DBPath     string
	AuditPath  string
	PINPath    string
	Token      softhsmtest.Token // with OpenCryptoki: the openCryptoki token's module, label and PIN
	KEKLabel   string            // [hsm] kek_label
	Provider   *oauthtest.Provider
	CA         *devpki.CA
	PKIDir     string
	JWTKey     *ecdsa.PrivateKey
	Opts       Options

	listen, opsListen string

	API string // https://127.0.0.1:port (valid while running)
	Ops string // http://127.0.0.1:port

	mu      sync.Mutex
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	exitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// New sets up an Env and, unless opts.NoStart, starts vaultd.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.Mlock == "" {
		opts.Mlock = "required"
	}
	if opts.Seccomp == "" {
		opts.Seccomp = "enforce"
	}
	if opts.RefreshMargin == "" {
		opts.RefreshMargin = "60s"
	}
	if opts.AuthStyle == "" {
		opts.AuthStyle = oauth.AuthStyleBasic
	}
	vd, vc := Binaries(t)
	dir := t.TempDir()
	e := &Env{t: t, Dir: dir, Vaultd: vd, Vaultctl: vc, Opts: opts, KEKLabel: "vaultd-kek"}
	if opts.OpenCryptoki {
		ock := ocktest.Need(t)
		// No SOFTHSM2_CONF: openCryptoki's module finds pkcsslotd itself.
		e.Token = softhsmtest.Token{Module: ock.Module, Label: ock.Label, PIN: ock.PIN}
		e.KEKLabel = ock.KeyLabel("e2e")
	} else {
		e.Token = softhsmtest.NewConf(t).NewToken(t)
	}
	e.Provider = oauthtest.New(t, oauthtest.Config{TLS: true, AuthStyle: opts.AuthStyle})

	// PKI: one CA for clients and the server; another for the rogue cert.
	e.PKIDir = filepath.Join(dir, "pki")
	must(t, os.MkdirAll(e.PKIDir, 0o700))
	ca, err := devpki.NewCA("vaultd e2e CA")
	must(t, err)
	e.CA = ca
	must(t, os.WriteFile(filepath.Join(e.PKIDir, "ca.crt"), ca.CertPEM, 0o644))
	srv, err := ca.Server("localhost", "127.0.0.1", "::1")
	must(t, err)
	_, _, err = srv.WriteFiles(e.PKIDir, "server")
	must(t, err)
	for _, c := range []struct{ name, cn, uri string }{
		{AppAcme, "app-acme", ""}, {AppGlobex, "app-globex", ""}, {AppMulti, "app-multi", MultiURI},
		{Operator, "ops-admin", ""}, {Auditor, "auditor", ""}, {AuditorAcme, "auditor-acme", ""},
		{Stranger, "stranger", ""},
	} {
		l, err := ca.Client(c.cn, c.uri)
		must(t, err)
		_, _, err = l.WriteFiles(e.PKIDir, c.name)
		must(t, err)
	}
	rogueCA, err := devpki.NewCA("rogue CA")
	must(t, err)
	rl, err := rogueCA.Client("ops-admin", "")
	must(t, err)
	_, _, err = rl.WriteFiles(e.PKIDir, Rogue)
	must(t, err)

	// Tenant-context signing key and JWKS.
	e.JWTKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &e.JWTKey.PublicKey, KeyID: "e2e-1", Algorithm: string(jose.ES256), Use: "sig"}}}
	jwksJSON, err := json.Marshal(jwks)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "jwks.json"), jwksJSON, 0o644))

	// Provider trust and secret.
	must(t, os.WriteFile(filepath.Join(dir, "provider-ca.pem"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Provider.Certificate().Raw}), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "client-secret"), []byte(e.Provider.ClientSecret().Reveal()+"\n"), 0o600))

	e.PINPath = filepath.Join(dir, "hsm.pin")
	must(t, os.WriteFile(e.PINPath, []byte(e.Token.PIN+"\n"), 0o600))
	e.DBPath = filepath.Join(dir, "vault.db")
	if !opts.NoAuditFile {
		e.AuditPath = filepath.Join(dir, "audit.jsonl")
	}
	e.listen, e.opsListen = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	e.ConfigPath = filepath.Join(dir, "vaultd.toml")
	must(t, os.WriteFile(e.ConfigPath, []byte(e.ConfigText()), 0o600))

	t.Cleanup(func() { e.Stop() })
	if !opts.NoInit {
		out, err := e.Ctl("init", "-config", e.ConfigPath)
		if err != nil {
			t.Fatalf("vaultctl init: %v\n%s", err, out)
		}
	}
	if !opts.NoStart {
		e.Start()
	}
	return e
}

// ConfigText renders the config file for this Env.
func (e *Env) ConfigText() string {
	server := ""
	if e.Opts.MaxBodyBytes > 0 {
		server = fmt.Sprintf("max_body_bytes = %d\n", e.Opts.MaxBodyBytes)
	}
	if e.Opts.RequestTimeout != "" {
		server += fmt.Sprintf("request_timeout = %q\n", e.Opts.RequestTimeout)
	}
	hsmExtra := ""
	if e.Opts.HSMHealthInterval != "" {
		hsmExtra = fmt.Sprintf("health_interval = %q\n", e.Opts.HSMHealthInterval)
	}
	audit := ""
	if e.AuditPath != "" {
		audit = fmt.Sprintf("[audit]\nfile = %q\n", e.AuditPath)
	}
	if e.Opts.CheckpointInterval != "" {
		if audit == "" {
			audit = "[audit]\n"
		}
		audit += fmt.Sprintf("checkpoint_interval = %q\n", e.Opts.CheckpointInterval)
	}
	if e.Opts.AuditExtra != "" {
		if audit == "" {
			audit = "[audit]\n"
		}
		audit += e.Opts.AuditExtra + "\n"
	}
	return fmt.Sprintf(`[server]
listen     = %q
http3      = true
tls_cert   = %q
tls_key    = %q
client_ca  = %q
ops_listen = %q
shutdown_timeout = "20s"
%s
[hsm]
module      = %q
token_label = %q
pin_file    = %q
kek_label   = %q
%s
[storage]
path = %q

%s
[harden]
mlock   = %q
seccomp = %q

[tenant_context]
jwks_file    = %q
issuer       = %q
audience     = %q
tenant_claim = "tenant_id"
max_lifetime = "5m"

[[principals]]
subject_cn = "app-acme"
roles      = ["app"]
tenant     = "acme"

[[principals]]
subject_cn = "app-globex"
roles      = ["app"]
tenant     = "globex"

[[principals]]
uri_san = %q
roles   = ["app"]
tenant  = ""

[[principals]]
subject_cn = "ops-admin"
roles      = ["operator"]

[[principals]]
subject_cn = "auditor"
roles      = ["auditor"]

[[principals]]
subject_cn = "auditor-acme"
roles      = ["auditor"]
tenant     = "acme"

[providers.%s]
token_url          = %q
revocation_url     = %q
api_base_url       = %q
client_id          = %q
client_secret_file = %q
auth_style         = %q
scopes             = ["contacts.read", "contacts.write"]
refresh_margin     = %q
ca_file            = %q
%s`,
		e.listen, filepath.Join(e.PKIDir, "server.crt"), filepath.Join(e.PKIDir, "server.key"), filepath.Join(e.PKIDir, "ca.crt"),
		e.opsListen, server, e.Token.Module, e.Token.Label, e.PINPath, e.KEKLabel, hsmExtra, e.DBPath, audit, e.Opts.Mlock, e.Opts.Seccomp,
		filepath.Join(e.Dir, "jwks.json"), JWTIssuer, JWTAudience, MultiURI,
		ProviderName, e.Provider.TokenURL(), e.Provider.RevocationURL(), e.Provider.APIBaseURL(),
		e.Provider.ClientID(), filepath.Join(e.Dir, "client-secret"), e.Opts.AuthStyle, e.Opts.RefreshMargin,
		filepath.Join(e.Dir, "provider-ca.pem"), e.Opts.ExtraConfig)
}

// Ctl runs vaultctl with SOFTHSM2_CONF set and returns its combined output.
func (e *Env) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Vaultctl, args...)
	cmd.Env = append(os.Environ(), e.Token.Env())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Start starts vaultd and waits until it is ready (bounded).
func (e *Env) Start() {
	e.t.Helper()
	if err := e.TryStart(); err != nil {
		e.t.Fatalf("vaultd did not start: %v\nlogs:\n%s", err, e.Logs())
	}
}

// TryStart starts vaultd and waits for its "vaultd ready" line or its exit.
func (e *Env) TryStart() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return fmt.Errorf("already running")
	}
	cmd := exec.Command(e.Vaultd, "-config", e.ConfigPath)
	cmd.Env = append(append(os.Environ(), e.Token.Env()), e.Opts.Env...)
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	cmd.Stdout = logs
	cmd.Stderr = io.MultiWriter(logs, pw)
	if err := cmd.Start(); err != nil {
		return err
	}
	e.cmd, e.logs, e.exited = cmd, logs, make(chan struct{})
	go func() {
		e.exitErr = cmd.Wait()
		pw.Close()
		close(e.exited)
	}()
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			var m map[string]any
			if !sent && json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "vaultd ready" {
				ready <- m
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case m := <-ready:
		e.API = "https://" + fmt.Sprint(m["listen"])
		if ops, _ := m["ops_listen"].(string); ops != "" {
			e.Ops = "http://" + ops
		}
		return nil
	case <-e.exited:
		e.cmd = nil
		return fmt.Errorf("vaultd exited: %v", e.exitErr)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("no ready line within 60s")
	}
}

// Logs returns everything vaultd wrote so far (all runs of the current
// process only).
func (e *Env) Logs() string {
	if e.logs == nil {
		return ""
	}
	return e.logs.String()
}

// Signal sends sig to the running vaultd.
func (e *Env) Signal(sig syscall.Signal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		_ = e.cmd.Process.Signal(sig)
	}
}

// Stop sends SIGTERM and waits for a clean exit (bounded); it returns the
// process's exit error (nil for exit 0).
func (e *Env) Stop() error {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	e.mu.Lock()
	e.cmd = nil
	e.mu.Unlock()
	return e.exitErr
}

// Kill9 kills vaultd with SIGKILL and waits for it.
func (e *Env) Kill9() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
	e.mu.Lock()
	e.cmd = nil
	e.mu.Unlock()
}

// Pid is the running vaultd's pid (0 when stopped).
func (e *Env) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return 0
	}
	return e.cmd.Process.Pid
}

// TLSConfig is a client TLS config presenting the named principal's cert.
func (e *Env) TLSConfig(name string) *tls.Config {
	e.t.Helper()
	tc, err := client.LoadTLS(filepath.Join(e.PKIDir, name+".crt"), filepath.Join(e.PKIDir, name+".key"), filepath.Join(e.PKIDir, "ca.crt"))
	must(e.t, err)
	return tc
}

// Client is a vaultd API client authenticated as the named principal.
func (e *Env) Client(name string) *client.Client {
	e.t.Helper()
	c, err := client.New(e.API, client.Options{TLSConfig: e.TLSConfig(name)})
	must(e.t, err)
	return c
}

// HTTP is a raw HTTP/1.1+2 client presenting the named principal's cert.
func (e *Env) HTTP(name string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: e.TLSConfig(name), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 256},
		Timeout:   60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// JWT signs a tenant-context assertion with the Env's key. mutate may
// change the claims before signing.
func (e *Env) JWT(tenant, sub string, mutate func(c map[string]any)) string {
	e.t.Helper()
	now := time.Now()
	claims := map[string]any{
		"iss": JWTIssuer, "aud": JWTAudience, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"tenant_id": tenant,
	}
	if sub != "" {
		claims["sub"] = sub
	}
	if mutate != nil {
		mutate(claims)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: e.JWTKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "e2e-1"))
	must(e.t, err)
	s, err := jwt.Signed(sig).Claims(claims).Serialize()
	must(e.t, err)
	return s
}

// CreateTenant provisions a tenant as the operator.
func (e *Env) CreateTenant(id string) {
	e.t.Helper()
	if _, err := e.Client(Operator).CreateTenant(context.Background(), id); err != nil {
		e.t.Fatalf("create tenant %s: %v", id, err)
	}
}

// StoreToken issues a provider grant and stores it as integration id of
// the app principal's tenant; it returns the token pair.
func (e *Env) StoreToken(app, id string, scopes ...string) oauth.Token {
	e.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"contacts.read"}
	}
	tok := e.Provider.IssueInitialToken(scopes)
	if _, err := e.Client(app).StoreToken(context.Background(), id, ProviderName, oauthtest.TokenResponseJSON(tok)); err != nil {
		e.t.Fatalf("store token: %v", err)
	}
	return tok
}

// OpsGet fetches an ops endpoint.
func (e *Env) OpsGet(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.Ops + path)
	must(e.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Addr is the API's host:port.
func (e *Env) Addr() string { return strings.TrimPrefix(e.API, "https://") }

// UDPAddr resolves the API address for HTTP/3.
func (e *Env) UDPAddr() *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", e.Addr())
	must(e.t, err)
	return a
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1 (the API
// serves HTTP/3 on the same port). The port is released before vaultd
// binds it; a collision in between fails the test loudly, not silently.
func freePort(t testing.TB) string {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return fmt.Sprint(port)
		}
	}
	t.Fatal("no free TCP+UDP port on 127.0.0.1")
	return ""
}
