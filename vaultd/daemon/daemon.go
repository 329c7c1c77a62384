// Package daemon runs vaultd: it loads the config, opens the HSM and the
// store, binds the listeners, tells systemd, and turns signals into reload
// and graceful shutdown. cmd/vaultd is a thin main around Run.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/server"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// Version is set at build time (-ldflags "-X ...daemon.Version=...").
var Version = "dev"

// Hooks lets cmd/vaultd run process hardening at the right moment, and
// lets tests of this package, which run in the test process, leave it out.
type Hooks struct {
	// AfterListen runs once the HSM session, store and listeners are up
	// and before the first request is served, with [harden] as options
	// (harden.Apply).
	AfterListen func(ctx context.Context, opts harden.Options, log *slog.Logger) error
}

// Run is vaultd's main. It returns nil after a clean shutdown.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, hooks Hooks) error {
	fs := flag.NewFlagSet("vaultd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file")
	showVersion := fs.Bool("version", false, "print the version and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return configError(err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "vaultd", Version)
		return nil
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return configError(fmt.Errorf("bad -log-level %q", *logLevel))
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	cfg, err := config.Load(*cfgPath, config.ModeDaemon)
	if err != nil {
		return err
	}
	hardening, err := hardenOptions(cfg)
	if err != nil {
		return configError(err)
	}
	d := &daemon{cfgPath: *cfgPath, log: log}
	return d.run(ctx, cfg, hardening, hooks)
}

type daemon struct {
	cfgPath string
	log     *slog.Logger

	kr      hsm.Keyring
	store   *bolt.Store
	keys    *envelope.Keys
	audit   *audit.Log
	svc     *vault.Service
	srv     *server.Server
	metrics *server.Metrics
	health  *health

	apiTLS atomic.Pointer[tls.Config] // current API TLS config (reloadable)
	cfg    atomic.Pointer[config.Config]
}

func (d *daemon) run(ctx context.Context, cfg *config.Config, hardening harden.Options, hooks Hooks) (err error) {
	log := d.log
	d.cfg.Store(cfg)

	// Closers run in reverse order on every exit path.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// Everything that needs only files and ports is checked first: a bad
	// TLS key or a taken port fails at once with one line, before the HSM
	// is opened (and before the HSM and store log anything).
	// Identity, TLS and provider files passed validation as readable; one
	// that does not parse is a configuration error too (exit 78).
	ident, err := buildIdentity(cfg)
	if err != nil {
		return configError(err)
	}
	tlsConf, err := buildTLS(cfg)
	if err != nil {
		return configError(err)
	}
	d.apiTLS.Store(tlsConf)
	providers, fwd, err := buildProviders(cfg, log)
	if err != nil {
		return configError(err)
	}
	// Listeners: systemd socket activation when present, else bind.
	tcpLn, udpConn, err := listen(cfg.Server.Listen, cfg.Server.HTTP3)
	if err != nil {
		return err
	}
	closers = append(closers, func() {
		_ = tcpLn.Close()
		if udpConn != nil {
			_ = udpConn.Close()
		}
	})
	var opsLn net.Listener
	if cfg.Server.OpsListen != "" {
		opsLn, err = net.Listen("tcp", cfg.Server.OpsListen)
		if err != nil {
			return fmt.Errorf("ops listener %s: %w", cfg.Server.OpsListen, err)
		}
		closers = append(closers, func() { _ = opsLn.Close() })
	}

	// A truncated database is a file problem too: say so before the HSM.
	if err := bolt.Preflight(cfg.Storage.Path); err != nil {
		return err
	}

	pin, err := cfg.HSM.LoadPIN()
	if err != nil {
		return err
	}
	d.kr, err = openKeyring(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = d.kr.Close() })

	d.store, err = bolt.Open(ctx, cfg.Storage.Path, bolt.Options{LockTimeout: cfg.Storage.LockTimeout.Duration(), Logger: log})
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = d.store.Close() })

	d.metrics = server.NewMetrics(nil)
	d.health = newHealth(d.metrics.Registry)
	d.keys, err = envelope.NewKeys(newCountingKeyring(d.kr, d.metrics.Registry), envelope.Options{Logger: log, RequireLock: hardening.Mlock == harden.MlockRequired})
	if err != nil {
		return fmt.Errorf("data key cache: %w", err)
	}
	closers = append(closers, func() { d.keys.Close() })

	// VerifyOnStart: a broken chain in the database refuses the start.
	d.audit, err = audit.New(ctx, d.store, audit.Options{MirrorPath: cfg.Audit.File, Logger: log,
		VerifyOnStart: cfg.Audit.VerifyOnStart, Registerer: d.metrics.Registry})
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = d.audit.Close() })

	d.svc, err = vault.New(vault.Options{
		Store: d.store, Keys: d.keys, KEKVersion: d.kr.CurrentVersion, Audit: d.audit,
		Providers: providers, Logger: log, Metrics: d.metrics,
	})
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = d.svc.Close() })

	port := tcpLn.Addr().(*net.TCPAddr).Port
	altSvc := ""
	if udpConn != nil {
		altSvc = fmt.Sprintf(`h3=":%d"; ma=86400`, port)
	}
	d.srv = server.New(server.Options{
		Logger: log, Vault: d.svc, Audit: d.audit, Forwarders: fwd, Metrics: d.metrics,
		Identity: ident, MaxBodyBytes: cfg.Server.MaxBodyBytes, AltSvc: altSvc,
		Ready: d.ready, Backup: d.store.Backup,
	})

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
	httpSrv := &http.Server{
		Handler:           api,
		TLSConfig:         base,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var h3 *http3.Server
	if udpConn != nil {
		h3conf := &tls.Config{
			MinVersion: tls.VersionTLS13,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c := d.apiTLS.Load().Clone()
				c.NextProtos = []string{http3.NextProtoH3}
				return c, nil
			},
		}
		h3 = &http3.Server{Handler: api, TLSConfig: http3.ConfigureTLSConfig(h3conf), IdleTimeout: 120 * time.Second}
	}

	var opsSrv *http.Server
	if opsLn != nil {
		opsSrv = &http.Server{Handler: opsHandler(d.srv.OpsHandler()), ReadHeaderTimeout: 5 * time.Second}
	}

	if hooks.AfterListen != nil {
		if err := hooks.AfterListen(ctx, hardening, log); err != nil {
			return fmt.Errorf("hardening: %w", err)
		}
	}

	errc := make(chan error, 3)
	var wg sync.WaitGroup
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	serve("api", func() error { return httpSrv.ServeTLS(tcpLn, "", "") })
	if h3 != nil {
		serve("http3", func() error { return h3.Serve(udpConn) })
	}
	if opsSrv != nil {
		serve("ops", func() error { return opsSrv.Serve(opsLn) })
	}

	// Signals are caught before READY=1 is announced: a SIGTERM right after
	// readiness must drain, not kill the process with the default action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	opsAddr := ""
	if opsLn != nil {
		opsAddr = opsLn.Addr().String()
	}
	log.Info("vaultd ready", "version", Version, "listen", tcpLn.Addr().String(), "http3", udpConn != nil,
		"ops_listen", opsAddr, "kek_version", d.kr.CurrentVersion(), "providers", d.svc.ProviderNames())
	notify(log, sddaemon.SdNotifyReady+"\nSTATUS=serving\nMAINPID="+strconv.Itoa(os.Getpid()))

	wdCtx, wdStop := context.WithCancel(ctx)
	defer wdStop()
	go d.watchdog(wdCtx)
	go d.healthLoop(wdCtx, cfg.HSM.HealthInterval.Duration())

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			log.Error("listener failed", "err", err)
			break loop
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(ctx)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		}
	}

	// Graceful drain: stop accepting, let in-flight calls finish.
	notify(log, sddaemon.SdNotifyStopping+"\nSTATUS=draining")
	d.srv.SetDraining()
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration())
	defer cancel()
	if err := httpSrv.Shutdown(shutCtx); err != nil {
		log.Warn("api shutdown incomplete", "err", err)
	}
	if h3 != nil {
		if err := h3.Shutdown(shutCtx); err != nil {
			log.Warn("http3 shutdown incomplete", "err", err)
		}
		_ = h3.Close()
		_ = udpConn.Close()
	}
	if opsSrv != nil {
		_ = opsSrv.Shutdown(shutCtx)
	}
	wg.Wait()
	log.Info("vaultd stopped")
	return runErr
}

// ready is /readyz: the HSM session and the store both answer.
// watchdog pings systemd only while the service is healthy, so a wedged
// HSM or store gets the unit restarted.
func (d *daemon) watchdog(ctx context.Context) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, interval/3)
			err := d.ready(cctx)
			cancel()
			if err != nil {
				d.log.Warn("watchdog: not healthy, withholding WATCHDOG=1", "err", err)
				continue
			}
			notify(d.log, sddaemon.SdNotifyWatchdog)
		}
	}
}

// reload re-reads the config and swaps TLS material, principals,
// tenant-context keys and providers. A bad config is refused whole and
// the running one kept.
func (d *daemon) reload(ctx context.Context) {
	log := d.log
	notify(log, fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sddaemon.SdNotifyReloading, monotonicUsec()))
	defer notify(log, sddaemon.SdNotifyReady)
	cfg, err := config.Load(d.cfgPath, config.ModeDaemon)
	if err == nil {
		err = d.apply(ctx, cfg)
	}
	if err != nil {
		d.metrics.Reload(false)
		log.Error("reload refused; keeping the running configuration", "err", err)
		return
	}
	// KEK versions made by `vaultctl kek-rotate` since start: new wraps
	// use the newest. Failing to read them is not a reason to refuse the
	// rest of the reload; the current set stays.
	if err := reloadKEKs(ctx, d.kr); err != nil {
		log.Error("reload: KEK versions not re-read; keeping the current set", "err", err)
	}
	d.metrics.Reload(true)
	log.Info("configuration reloaded", "providers", d.svc.ProviderNames(), "kek_version", d.kr.CurrentVersion())
}

func (d *daemon) apply(ctx context.Context, cfg *config.Config) error {
	// [harden] changes need a restart, but a file start-up would refuse is
	// refused here too.
	if _, err := hardenOptions(cfg); err != nil {
		return err
	}
	old := d.cfg.Load()
	if cfg.Server.Listen != old.Server.Listen || cfg.HSM != old.HSM || cfg.Storage.Path != old.Storage.Path {
		d.log.Warn("listen address, [hsm] and [storage] changes need a restart; ignored on reload")
	}
	tlsConf, err := buildTLS(cfg)
	if err != nil {
		return err
	}
	ident, err := buildIdentity(cfg)
	if err != nil {
		return err
	}
	providers, fwd, err := buildProviders(cfg, d.log)
	if err != nil {
		return err
	}
	if cfg.Audit.File != old.Audit.File {
		d.log.Warn("[audit] file changes need a restart; reopening the current mirror")
	}
	if err := d.audit.Reopen(ctx); err != nil {
		d.log.Warn("audit mirror reopen failed", "err", err)
	}
	d.apiTLS.Store(tlsConf)
	d.srv.SetIdentity(ident)
	d.srv.SetForwarders(fwd) // before the providers: a new provider is never without one
	d.svc.SetProviders(providers)
	d.cfg.Store(cfg)
	return nil
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
	ps, err := principals(cfg)
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
	ps := vault.Providers{}
	fwds := map[string]*proxy.Forwarder{}
	for _, name := range cfg.ProviderNames() {
		p := cfg.Providers[name]
		style, err := authStyle(cfg, name)
		if err != nil {
			return nil, nil, err
		}
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
		ps[name] = &vault.Provider{
			Name: name,
			Endpoint: oauth.Endpoint{
				TokenURL: p.TokenURL, RevocationURL: p.RevocationURL, ClientID: p.ClientID,
				ClientSecret: p.ClientSecret, AuthStyle: style, Timeout: p.Timeout.Duration(), HTTPClient: hc,
			},
			APIBase:         p.APIBase,
			Scopes:          p.Scopes,
			RefreshMargin:   p.RefreshMargin.Duration(),
			DefaultLifetime: p.DefaultTokenLifetime.Duration(),
		}
		fwds[name] = proxy.NewForwarder(proxy.ForwarderOptions{
			Timeout:   cfg.Server.RequestTimeout.Duration(),
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
			Logger:    log,
		})
	}
	return ps, fwds, nil
}

func notify(log *slog.Logger, state string) {
	// unsetEnvironment=false: NOTIFY_SOCKET must survive for RELOADING,
	// READY and STOPPING later on.
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}

// monotonicUsec is CLOCK_MONOTONIC in µs: systemd wants it with
// RELOADING=1 (Type=notify-reload semantics).
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}
