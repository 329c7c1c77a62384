package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/settings"
	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/catalog"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/server"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// closers are what construction opened, closed in reverse order on every
// exit path: the service (whose Close waits for detached refreshes) before
// the audit log, the DEK cache, the store and the HSM session, and the
// listeners last.
type closers []func()

func (c *closers) add(f func()) { *c = append(*c, f) }

func (c *closers) close() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}

// servers are the listeners construction bound and the HTTP servers that
// serve them; the tasks run them.
type servers struct {
	tcpLn   net.Listener
	udpConn net.PacketConn // nil without HTTP/3
	opsLn   net.Listener   // nil without ops_listen
	connLn  net.Listener   // nil without [connect]

	api  *http.Server
	h3   *http3.Server // nil without HTTP/3
	opsS *http.Server  // nil without ops_listen
	conn *http.Server  // nil without [connect]
}

// build opens everything vaultd runs on, in the order that makes failures
// cheap and clear: what needs only files and ports first (a bad TLS key or
// a taken port fails at once with one line, before the HSM is opened and
// before the HSM and store log anything), then the HSM, the store, the DEK
// cache, the audit log, the service and the HTTP servers. What it opens is
// added to cl.
func (d *daemon) build(ctx context.Context, cfg *config.Config, hardening harden.Options, cl *closers) (*servers, error) {
	log := d.log
	// Identity, TLS and provider files passed validation as readable; one
	// that does not parse is a configuration error too (exit 78).
	ident, err := buildIdentity(cfg)
	if err != nil {
		return nil, configError(err)
	}
	tlsConf, err := buildTLS(cfg)
	if err != nil {
		return nil, configError(err)
	}
	d.apiTLS.Store(tlsConf)
	connTLS, err := buildConnectTLS(cfg)
	if err != nil {
		return nil, configError(err)
	}
	d.connectTLS.Store(connTLS)
	providers, fwd, err := buildProviders(cfg, log)
	if err != nil {
		return nil, configError(err)
	}
	s := &servers{}
	// Listeners: systemd socket activation when present, else bind.
	s.tcpLn, s.udpConn, err = listen(cfg.Server.Listen, cfg.Server.HTTP3)
	if err != nil {
		return nil, err
	}
	cl.add(func() {
		_ = s.tcpLn.Close()
		if s.udpConn != nil {
			_ = s.udpConn.Close()
		}
	})
	if cfg.Server.OpsListen != "" {
		s.opsLn, err = net.Listen("tcp", cfg.Server.OpsListen)
		if err != nil {
			return nil, fmt.Errorf("ops listener %s: %w", cfg.Server.OpsListen, err)
		}
		cl.add(func() { _ = s.opsLn.Close() })
	}
	if s.connLn, err = listenConnect(cfg); err != nil {
		return nil, err
	}
	if s.connLn != nil {
		cl.add(func() { _ = s.connLn.Close() })
	}

	// A truncated database is a file problem too: say so before the HSM.
	// So is an unreadable DSN file (PostgreSQL is reached after the HSM).
	var dsn secret.String
	if cfg.Storage.Backend == config.BackendPostgres {
		if dsn, err = cfg.Storage.LoadDSN(); err != nil {
			return nil, err
		}
	} else if err := bolt.Preflight(cfg.Storage.Path); err != nil {
		return nil, err
	}

	pin, err := cfg.HSM.LoadPIN()
	if err != nil {
		return nil, err
	}
	d.kr, err = openKeyring(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return nil, err
	}
	cl.add(func() { _ = d.kr.Close() })
	signer, auditKey, err := auditSigner(ctx, d.kr)
	if err != nil {
		return nil, err
	}

	locker, err := d.openStore(ctx, cfg, dsn, cl)
	if err != nil {
		return nil, err
	}

	d.metrics = server.NewMetrics(nil)
	d.health = newHealth(d.metrics.Registry)
	d.keys, err = envelope.NewKeys(withTenantKeys(newCountingKeyring(d.kr, d.metrics.Registry), d.kr), envelope.Options{Logger: log, RequireLock: hardening.Mlock == harden.MlockRequired})
	if err != nil {
		return nil, fmt.Errorf("data key cache: %w", err)
	}
	cl.add(func() { d.keys.Close() })

	// VerifyOnStart: a broken chain in the database refuses the start.
	// [audit] sync = "batch": token-use events go through a WAL beside
	// the database, fsynced within sync_interval (audit/wal.go).
	walPath := auditWALPath(cfg, log)
	d.audit, err = audit.New(ctx, d.store, audit.Options{MirrorPath: cfg.Audit.File, Logger: log,
		VerifyOnStart: cfg.Audit.VerifyOnStart, Registerer: d.metrics.Registry, CheckpointKey: auditKey,
		WALPath: walPath, SyncInterval: cfg.Audit.SyncInterval.Duration()})
	if err != nil {
		return nil, err
	}
	cl.add(func() { _ = d.audit.Close() })
	// Added before the service: closers run in reverse, so the shutdown
	// checkpoint follows the service's last events (detached refreshes).
	d.cp = newCheckpointer(log, d.audit, signer, d.metrics.Registry)
	cl.add(d.cp.final)

	d.svc, err = vault.New(vault.Options{
		Store: d.store, Keys: d.keys, KEKVersion: d.kr.CurrentVersion, Audit: d.audit,
		Providers: providers, Logger: log, Metrics: d.metrics, Connect: connectSettings(cfg),
		Keyring: d.kr, Lifecycle: lifecycleSettings(cfg), Locker: locker,
		Sweeps: func() vault.SweepSettings { return sweepSettings(d.cfg.Load()) },
	})
	if err != nil {
		return nil, err
	}
	cl.add(func() { _ = d.svc.Close() })
	if d.webhooks, err = d.newWebhooks(ctx); err != nil {
		return nil, err
	}

	port := s.tcpLn.Addr().(*net.TCPAddr).Port
	altSvc := ""
	if s.udpConn != nil {
		altSvc = fmt.Sprintf(`h3=":%d"; ma=86400`, port)
	}
	d.srv = server.New(server.Options{
		Logger: log, Vault: d.svc, Audit: d.audit, Forwarders: fwd, Metrics: d.metrics,
		Identity: ident, MaxBodyBytes: cfg.Server.MaxBodyBytes, AltSvc: altSvc,
		Ready: d.ready, Backup: d.backupFunc(),
		Webhooks: d.webhooks.d,
	})
	d.httpServers(s)
	return s, nil
}

// httpServers builds the API's HTTP/1.1+2 and HTTP/3 servers and the ops
// server for the listeners in s.
func (d *daemon) httpServers(s *servers) {
	api := d.srv.APIHandler()
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The live config is looked up per handshake so SIGHUP can swap
		// certificates and the client CA without dropping connections.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return d.apiTLS.Load(), nil },
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := d.apiTLS.Load()
			return &c.Certificates[0], nil
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	s.api = &http.Server{
		Handler:           api,
		TLSConfig:         base,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	if s.udpConn != nil {
		h3conf := &tls.Config{
			MinVersion: tls.VersionTLS13,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c := d.apiTLS.Load().Clone()
				c.NextProtos = []string{http3.NextProtoH3}
				return c, nil
			},
		}
		s.h3 = &http3.Server{Handler: api, TLSConfig: http3.ConfigureTLSConfig(h3conf), IdleTimeout: 120 * time.Second}
	}
	if s.opsLn != nil {
		s.opsS = &http.Server{Handler: opsHandler(d.srv.OpsHandler()), ReadHeaderTimeout: 5 * time.Second}
	}
	if s.connLn != nil {
		s.conn = d.connectServer(d.srv.ConnectHandler(d.svc))
	}
}

func buildTLS(cfg *config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("server certificate %s: %w", cfg.Server.TLSCert, err)
	}
	caPEM, err := os.ReadFile(cfg.Server.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client_ca %s: no PEM certificates", cfg.Server.ClientCA)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

func buildIdentity(cfg *config.Config) (server.Identity, error) {
	ps, err := settings.Principals(cfg)
	if err != nil {
		return server.Identity{}, err
	}
	dir, err := policy.NewDirectory(ps)
	if err != nil {
		return server.Identity{}, err
	}
	id := server.Identity{Directory: dir}
	if tc := cfg.TenantContext; tc != nil {
		jwks, err := policy.LoadJWKSFile(tc.JWKSFile)
		if err != nil {
			return server.Identity{}, err
		}
		v, err := policy.NewVerifier(policy.VerifierConfig{
			JWKS: jwks, Issuer: tc.Issuer, Audience: tc.Audience, TenantClaim: tc.TenantClaim,
			MaxLifetime: tc.MaxLifetime.Duration(), ClockSkew: tc.ClockSkew.Duration(),
		})
		if err != nil {
			return server.Identity{}, fmt.Errorf("tenant_context: %w", err)
		}
		id.Verifier = v
	}
	return id, nil
}

// buildProviders makes each provider's OAuth client and outbound
// forwarder. Each trusts its own roots only: its ca_file's certificates
// when set, else the system roots. A CA one provider needs must never
// vouch for another provider's hosts (it would receive that provider's
// tokens and client secret), so no pool is shared or mutated.
func buildProviders(cfg *config.Config, log *slog.Logger) (vault.Providers, map[string]*proxy.Forwarder, error) {
	// The file merged with the catalog templates it names (keys written in
	// the file win), each value read by its owner's parser.
	merged, err := settings.Providers(cfg)
	if err != nil {
		return nil, nil, err
	}
	ps := vault.Providers{}
	fwds := map[string]*proxy.Forwarder{}
	for _, name := range cfg.ProviderNames() {
		p := merged[name]
		pool := p.RootCAs
		if pool == nil {
			roots, err := x509.SystemCertPool() // a fresh copy per call
			if err != nil || roots == nil {
				roots = x509.NewCertPool()
			}
			pool = roots
		}
		hc := &http.Client{
			Timeout: p.Timeout.Duration(),
			Transport: &http.Transport{
				Proxy:               nil, // token and revocation calls go straight to the provider
				TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
				ForceAttemptHTTP2:   true,
				MaxIdleConnsPerHost: 8,
				IdleConnTimeout:     90 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		var base *url.URL
		if !strings.Contains(p.APIBaseURL, "{") {
			// A template's per-connection base ({subdomain}, a host from
			// the token response) is fixed per integration instead.
			if base, err = url.Parse(p.APIBaseURL); err != nil {
				return nil, nil, fmt.Errorf("provider %s: api_base_url: %w", name, err)
			}
		}
		var hostRule *catalog.HostRule
		if p.APIHostFromToken != nil {
			r := *p.APIHostFromToken
			hostRule = &r
		}
		ps[name] = &vault.Provider{
			Name: name,
			Endpoint: oauth.Endpoint{
				TokenURL: p.TokenURL, RevocationURL: p.RevocationURL, ClientID: p.ClientID,
				ClientSecret: p.ClientSecret, AuthStyle: p.AuthStyle, Timeout: p.Timeout.Duration(), HTTPClient: hc,
				ScopeSeparator: p.ScopeSeparator, ResponseFields: p.ResponseFields,
			},
			APIBase:          base,
			APIBaseURL:       p.APIBaseURL,
			Scopes:           p.Scopes,
			RefreshMargin:    p.RefreshMargin.Duration(),
			DefaultLifetime:  p.DefaultTokenLifetime.Duration(),
			AuthorizationURL: p.AuthorizationURL,
			Grant:            p.Grant,
			PKCE:             p.PKCE,
			AuthorizeParams:  p.AuthorizeParams,
			Params:           p.Params,
			APIHostFromToken: hostRule,
			Issuer:           p.Issuer,

			RefreshAhead:        p.RefreshAhead,
			RefreshTokenMaxIdle: p.RefreshTokenMaxIdle.Duration(),
		}
		fwds[name] = proxy.NewForwarder(proxy.ForwarderOptions{
			Timeout:   cfg.Server.RequestTimeout.Duration(),
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
			Logger:    log,
		})
	}
	return ps, fwds, nil
}

// backupFunc is GET /v1/admin/backup's snapshot: the store's online
// backup, nil (the route answers 503) for a backend without one (postgres:
// PostgreSQL's own tools back it up).
func (d *daemon) backupFunc() server.BackupFunc {
	b, ok := d.store.(storage.Backuper)
	if !ok {
		return nil
	}
	// The pending token-use events are committed first, so the snapshot
	// holds every event recorded before it.
	return func(ctx context.Context, w io.Writer) (int64, error) {
		if err := d.audit.Flush(ctx); err != nil {
			return 0, err
		}
		return b.Backup(ctx, w)
	}
}
