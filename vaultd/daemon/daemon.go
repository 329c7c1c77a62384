// Package daemon runs vaultd: it loads the config, opens the HSM and the
// store, binds the listeners, tells systemd, and turns signals into reload
// and graceful shutdown. cmd/vaultd is a thin main around Run.
//
// It is the wiring: the one package that knows both the config file and
// the running parts. internal/settings reads the values of the file that
// other packages own (hardening, roles, auth styles) and keyring.go builds
// the HSM backend's config; build.go constructs everything, in an order that
// makes start-up failures cheap and clear; tasks.go runs what was built as
// a list of tasks under one errgroup (the API over TCP, HTTP/3, the ops
// listener and the signal handler, plus the watchdog and health loops) and
// drains them on the way out; daemon.go holds Run, the daemon's state and
// SIGHUP's reload.
package daemon

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/settings"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/envelope"
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
	hardening, err := settings.Harden(cfg)
	if err != nil {
		return configError(err)
	}
	d := &daemon{cfgPath: *cfgPath, log: log}
	return d.run(ctx, cfg, hardening, hooks)
}

type daemon struct {
	cfgPath string
	log     *slog.Logger

	kr    hsm.Keyring
	store store
	// sharedStore: the store is a database other nodes share (postgres).
	sharedStore bool
	keys        *envelope.Keys
	audit       *audit.Log
	cp          *checkpointer
	svc         *vault.Service
	srv         *server.Server
	metrics     *server.Metrics
	health      *health
	// webhooks is the notification dispatcher (webhooks.go).
	webhooks *webhooks

	apiTLS atomic.Pointer[tls.Config] // current API TLS config (reloadable)
	// connectTLS is the connect listener's (reloadable; nil without
	// [connect]).
	connectTLS atomic.Pointer[tls.Config]
	cfg        atomic.Pointer[config.Config]
}

// run builds the daemon and runs its tasks until it stops: construction
// (build), hardening, then the tasks, and READY=1 once the listeners are
// bound and served. Whatever build opened is closed in reverse order on
// every exit path.
func (d *daemon) run(ctx context.Context, cfg *config.Config, hardening harden.Options, hooks Hooks) error {
	d.cfg.Store(cfg)
	var cl closers
	defer cl.close()
	s, err := d.build(ctx, cfg, hardening, &cl)
	if err != nil {
		return err
	}
	if hooks.AfterListen != nil {
		if err := hooks.AfterListen(ctx, hardening, d.log); err != nil {
			return fmt.Errorf("hardening: %w", err)
		}
	}
	// Signals are caught before READY=1 is announced: a SIGTERM right after
	// readiness must drain, not kill the process with the default action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	// Key events vaultctl left while an earlier vaultd held the database
	// happened before this start: they go first. A start that cannot be
	// audited does not serve.
	d.recordPending(ctx, cfg)
	if err := d.record(ctx, audit.ActionServiceStart, audit.OutcomeSuccess, d.startDetail()); err != nil {
		return fmt.Errorf("audit service.start: %w", err)
	}

	err = runTasks(ctx, d.tasks(s, sigs), d.loops(cfg.HSM.HealthInterval.Duration()),
		func() { d.announceReady(s) },
		func() { d.drain(s, cfg.Server.ShutdownTimeout.Duration()) })
	// After the drain, before the closers: the service's last events and
	// the shutdown checkpoint follow, and the checkpoint signs this one.
	if err != nil {
		_ = d.record(ctx, audit.ActionServiceStop, audit.OutcomeFailure, "stopped by a failure")
	} else {
		_ = d.record(ctx, audit.ActionServiceStop, audit.OutcomeSuccess, "drained")
	}
	d.log.Info("vaultd stopped")
	return err
}

// reload re-reads the config and swaps TLS material, principals,
// tenant-context keys and providers. A bad config is refused whole and
// the running one kept. Both are audited as config.reload; key events
// vaultctl left meanwhile (kek-rotate says to reload) are recorded first.
func (d *daemon) reload(ctx context.Context) {
	log := d.log
	notify(log, fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sddaemon.SdNotifyReloading, monotonicUsec()))
	defer notify(log, sddaemon.SdNotifyReady)
	d.recordPending(ctx, d.cfg.Load())
	cfg, err := config.Load(d.cfgPath, config.ModeDaemon)
	if err == nil {
		err = d.apply(ctx, cfg)
	}
	if err != nil {
		d.metrics.Reload(false)
		_ = d.record(ctx, audit.ActionConfigReload, audit.OutcomeFailure, reloadRefusedDetail(err))
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
	if _, err := settings.Harden(cfg); err != nil {
		return err
	}
	old := d.cfg.Load()
	if cfg.Server.Listen != old.Server.Listen || cfg.HSM != old.HSM || cfg.Storage != old.Storage {
		d.log.Warn("listen address, [hsm] and [storage] changes need a restart; ignored on reload")
	}
	tlsConf, err := buildTLS(cfg)
	if err != nil {
		return err
	}
	if (cfg.Connect == nil) != (old.Connect == nil) || (cfg.Connect != nil && cfg.Connect.Listen != old.Connect.Listen) {
		d.log.Warn("adding, removing or moving the [connect] listener needs a restart; ignored on reload")
	}
	connTLS, err := buildConnectTLS(cfg)
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
	// Everything is built; only the swaps remain, which cannot fail. A
	// change that cannot be audited is not made.
	if err := d.record(ctx, audit.ActionConfigReload, audit.OutcomeSuccess, reloadDiff(old, cfg)); err != nil {
		return fmt.Errorf("%w: %w", errReloadUnaudited, err)
	}
	d.apiTLS.Store(tlsConf)
	if connTLS != nil && d.connectTLS.Load() != nil {
		d.connectTLS.Store(connTLS)
	}
	d.srv.SetIdentity(ident)
	d.srv.SetForwarders(fwd) // before the providers: a new provider is never without one
	d.svc.SetProviders(providers)
	if d.connectTLS.Load() != nil {
		// The listener stays as started; its settings (public_url,
		// return_to, session_ttl) follow the file.
		d.svc.SetConnect(connectSettings(cfg))
	}
	d.cfg.Store(cfg)
	return nil
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
