package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/internal/devpki"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/softhsmtest"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// upstreamBody is the small JSON answer every scenario gets from the
// upstream, directly or through a proxy.
var upstreamBody = []byte(`{"id":"0031000000abcDE","name":"Ada Lovelace","email":"ada@example.test","ok":true}`)

// pki holds the bench's one CA and the files vaultd and nginx read.
type pki struct {
	dir    string
	ca     *devpki.CA
	server tls.Certificate
}

func newPKI(dir string) (*pki, error) {
	ca, err := devpki.NewCA("vaultd bench CA")
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, ca: ca}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	srv, err := ca.Server("localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if _, _, err := srv.WriteFiles(dir, "server"); err != nil {
		return nil, err
	}
	if p.server, err = srv.TLSCertificate(); err != nil {
		return nil, err
	}
	for _, c := range []struct{ name, cn string }{{"app", "app-acme"}, {"operator", "ops-admin"}} {
		l, err := ca.Client(c.cn, "")
		if err != nil {
			return nil, err
		}
		if _, _, err := l.WriteFiles(dir, c.name); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// clientTLS presents the named client certificate (or none for "").
func (p *pki) clientTLS(name string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.ca.Pool()}
	if name != "" {
		c, err := tls.LoadX509KeyPair(p.path(name+".crt"), p.path(name+".key"))
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// upstream is the provider stand-in: oauthtest's token and revocation
// endpoints, plus /api/ answering upstreamBody to any request that carries
// a Bearer token the provider issued. It is the same handler for every
// scenario, so the comparison is of what sits in front of it.
type upstream struct {
	prov  *oauthtest.Provider
	srv   *http.Server
	addr  string
	calls atomic.Int64
	bad   atomic.Int64
}

func newUpstream(p *pki) (*upstream, error) {
	u := &upstream{prov: oauthtest.NewProvider(oauthtest.Config{})}
	mux := http.NewServeMux()
	ph := u.prov.Handler()
	mux.Handle("/token", ph)
	mux.Handle("/revoke", ph)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !u.prov.AccessTokenValid(secret.NewString(tok)) {
			u.bad.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(upstreamBody)))
		_, _ = w.Write(upstreamBody)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.addr = ln.Addr().String()
	u.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.server}, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = u.srv.ServeTLS(ln, "", "") }()
	return u, nil
}

func (u *upstream) url(path string) string { return "https://localhost:" + port(u.addr) + path }

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// freePort finds a port free on both TCP and UDP (vaultd serves HTTP/3 on
// the API port). It is released before use; a collision fails loudly.
func freePort() (string, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		l.Close()
		if err == nil {
			u.Close()
			return fmt.Sprint(p), nil
		}
	}
	return "", errors.New("no free TCP+UDP port")
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// vaultd is the real daemon, started from the built binary.
type vaultd struct {
	bin, ctl   string
	dir        string
	config     string
	db         string
	softhsmEnv string
	// The SoftHSM token, for the scale fixture's offline sealing.
	hsmModule, hsmLabel string
	hsmPIN              secret.String
	api, ops            string
	// configText and listen are kept so that node can derive another
	// node's config; logName is the start-up log's file in dir.
	configText, listen, audit string
	logName                   string
	cmd                       *exec.Cmd
	exited                    chan struct{}
	logFile                   *os.File
}

const refreshMargin = "60s"

// setupVaultd makes a SoftHSM token, writes the config ([audit] sync =
// syncMode, bbolt in dir), runs vaultctl init.
func setupVaultd(dir, binDir string, p *pki, up *upstream, syncMode string) (*vaultd, error) {
	return setupVaultdOn(dir, binDir, p, up, syncMode, "")
}

// setupVaultdOn is setupVaultd with the [storage] section's body given
// ("" for bbolt in dir); vaultctl init then also creates the PostgreSQL
// schema.
func setupVaultdOn(dir, binDir string, p *pki, up *upstream, syncMode, storageSection string) (*vaultd, error) {
	v := &vaultd{bin: filepath.Join(binDir, "vaultd"), ctl: filepath.Join(binDir, "vaultctl"), dir: dir, logName: "vaultd.log"}
	module, err := softhsmtest.Module()
	if err != nil {
		return nil, err
	}
	util, err := softhsmtest.Util()
	if err != nil {
		return nil, err
	}
	tokDir := filepath.Join(dir, "softhsm-tokens")
	if err := os.MkdirAll(tokDir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokDir+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return nil, err
	}
	v.softhsmEnv = "SOFTHSM2_CONF=" + conf
	label, pin := "bench-"+randHex(4), randHex(12)
	v.hsmModule, v.hsmLabel, v.hsmPIN = module, label, secret.NewString(pin)
	cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", randHex(12))
	cmd.Env = append(os.Environ(), v.softhsmEnv)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm2-util: %w: %s", err, out)
	}
	pinPath := filepath.Join(dir, "hsm.pin")
	secretPath := filepath.Join(dir, "client-secret")
	if err := os.WriteFile(pinPath, []byte(pin+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(secretPath, []byte(up.prov.ClientSecret().Reveal()+"\n"), 0o600); err != nil {
		return nil, err
	}
	listenPort, err := freePort()
	if err != nil {
		return nil, err
	}
	v.db = filepath.Join(dir, "vault.db")
	v.config = filepath.Join(dir, "vaultd.toml")
	v.listen, v.audit = "127.0.0.1:"+listenPort, filepath.Join(dir, "audit.jsonl")
	if storageSection == "" {
		storageSection = fmt.Sprintf("path = %q", v.db)
	}
	base := "https://localhost:" + port(up.addr)
	cfg := fmt.Sprintf(`[server]
listen     = %q
http3      = true
tls_cert   = %q
tls_key    = %q
client_ca  = %q
ops_listen = "127.0.0.1:0"

[hsm]
module      = %q
token_label = %q
pin_file    = %q
kek_label   = "vaultd-kek"

[storage]
%s

[audit]
file = %q
sync = %q

[harden]
mlock   = "required"
seccomp = "enforce"

[[principals]]
subject_cn = "app-acme"
roles      = ["app"]
tenant     = "acme"

[[principals]]
subject_cn = "ops-admin"
roles      = ["operator"]

[providers.example]
token_url          = %q
revocation_url     = %q
api_base_url       = %q
client_id          = %q
client_secret_file = %q
auth_style         = "basic"
scopes             = ["contacts.read", "contacts.write"]
refresh_margin     = %q
ca_file            = %q
`, v.listen, p.path("server.crt"), p.path("server.key"), p.path("ca.crt"),
		module, label, pinPath, storageSection, v.audit, syncMode,
		base+"/token", base+"/revoke", base+"/api", up.prov.ClientID(), secretPath, refreshMargin, p.path("ca.crt"))
	v.configText = cfg
	if err := os.WriteFile(v.config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd = exec.Command(v.ctl, "init", "-config", v.config)
	cmd.Env = append(os.Environ(), v.softhsmEnv)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vaultctl init: %w: %s", err, out)
	}
	return v, nil
}

// node is another vaultd (not started) on v's database, HSM token, PKI and
// provider, with a listener, an audit mirror and a log of its own: a
// second node behind a load balancer. It only makes sense on a shared
// (PostgreSQL) store.
func (v *vaultd) node(i int) (*vaultd, error) {
	pt, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &vaultd{bin: v.bin, ctl: v.ctl, dir: v.dir, db: v.db, softhsmEnv: v.softhsmEnv,
		hsmModule: v.hsmModule, hsmLabel: v.hsmLabel, hsmPIN: v.hsmPIN,
		listen: "127.0.0.1:" + pt, audit: filepath.Join(v.dir, fmt.Sprintf("audit-node%d.jsonl", i)),
		config: filepath.Join(v.dir, fmt.Sprintf("vaultd-node%d.toml", i)), logName: fmt.Sprintf("vaultd-node%d.log", i)}
	txt := strings.Replace(v.configText, fmt.Sprintf("listen     = %q", v.listen), fmt.Sprintf("listen     = %q", n.listen), 1)
	txt = strings.Replace(txt, fmt.Sprintf("file = %q", v.audit), fmt.Sprintf("file = %q", n.audit), 1)
	if txt == v.configText {
		return nil, errors.New("node: the config template changed")
	}
	n.configText = txt
	if err := os.WriteFile(n.config, []byte(txt), 0o600); err != nil {
		return nil, err
	}
	return n, nil
}

// start runs vaultd (with pprof on its ops listener) and waits for its
// "vaultd ready" line, bounded.
func (v *vaultd) start() error {
	lf, err := os.Create(filepath.Join(v.dir, v.logName))
	if err != nil {
		return err
	}
	v.logFile = lf
	cmd := exec.Command(v.bin, "-config", v.config)
	cmd.Env = append(os.Environ(), v.softhsmEnv, "VAULTD_PPROF=1")
	pr, pw := io.Pipe()
	// The log goes through a pipe, as to journald in production, and
	// only its start-up part and warnings reach the file: a per-request
	// log file on the database's filesystem would ride along with every
	// fdatasync (ext4 data=ordered) and bill vaultd for the harness.
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return err
	}
	v.cmd, v.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(v.exited) }()
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			var m map[string]any
			isJSON := json.Unmarshal(line, &m) == nil
			if !sent || !isJSON || m["level"] != "INFO" {
				_, _ = lf.Write(append(line, '\n'))
			}
			if !sent && isJSON && m["msg"] == "vaultd ready" {
				ready <- m
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case m := <-ready:
		v.api = "https://localhost:" + port(fmt.Sprint(m["listen"]))
		v.ops = "http://" + fmt.Sprint(m["ops_listen"])
		return nil
	case <-v.exited:
		return fmt.Errorf("vaultd exited during start-up; see %s", lf.Name())
	case <-time.After(60 * time.Second):
		return errors.New("vaultd: no ready line within 60s")
	}
}

func (v *vaultd) stop() {
	if v.cmd == nil {
		return
	}
	_ = v.cmd.Process.Signal(os.Interrupt)
	select {
	case <-v.exited:
	case <-time.After(30 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.exited
	}
	v.cmd = nil
	_ = v.logFile.Close()
}

// hsmOps sums vaultd_hsm_operations_total over all ops.
func (v *vaultd) hsmOps(ctx context.Context) (float64, error) {
	body, err := httpGet(ctx, v.ops+"/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "vaultd_hsm_operations_total{") {
			continue
		}
		var f float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &f); err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += f
		found = true
	}
	if !found {
		return 0, errors.New("vaultd_hsm_operations_total missing from /metrics")
	}
	return sum, nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return string(b), nil
}

// nginx is the baseline reverse proxy: mTLS HTTP/2 in, a static
// Authorization header added, HTTPS keepalive to the same upstream.
type nginx struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

func startNginx(bin, dir string, p *pki, up *upstream, staticToken string) (*nginx, error) {
	np, err := freePort()
	if err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read the bench's 0600 key files
	}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf(`%s
worker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path       %[2]s/tmp/proxy;
    fastcgi_temp_path     %[2]s/tmp/fastcgi;
    uwsgi_temp_path       %[2]s/tmp/uwsgi;
    scgi_temp_path        %[2]s/tmp/scgi;
    upstream api {
        server %[3]s;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:%[4]s ssl http2;
        ssl_protocols TLSv1.3;
        ssl_certificate     %[5]s;
        ssl_certificate_key %[6]s;
        ssl_client_certificate %[7]s;
        ssl_verify_client on;
        location / {
            proxy_pass https://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer %[8]s";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %[7]s;
            proxy_ssl_session_reuse on;
        }
    }
}
`, user, dir, up.addr, np, p.path("server.crt"), p.path("server.key"), p.path("ca.crt"), staticToken)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	lf, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "logs", "error.log"))
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &nginx{addr: "127.0.0.1:" + np, cmd: cmd, exited: make(chan struct{}), dir: dir}
	go func() { _ = cmd.Wait(); lf.Close(); close(n.exited) }()
	// Ready when the port accepts (bounded).
	for i := 0; i < 100; i++ {
		select {
		case <-n.exited:
			b, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			s, _ := os.ReadFile(filepath.Join(dir, "logs", "stderr.log"))
			return nil, fmt.Errorf("nginx exited: %s%s", b, s)
		default:
		}
		if c, err := net.DialTimeout("tcp", n.addr, 100*time.Millisecond); err == nil {
			c.Close()
			return n, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.stop()
	return nil, errors.New("nginx did not listen within 5s")
}

func (n *nginx) url(path string) string { return "https://localhost:" + port(n.addr) + path }

func (n *nginx) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt) // SIGINT: nginx's fast shutdown
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}
