package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sync/errgroup"
)

// A task is one part of the running daemon, run in its own goroutine until
// the daemon stops (SPIRE runs its subsystems the same way, as a list of
// tasks). A task that returns an error stops the daemon.
type task struct {
	name string
	run  func(ctx context.Context) error
}

// errStop is how the signals task asks for a shutdown: an error, so that
// it ends the tasks' context like a failure would, but not a failure.
var errStop = errors.New("stop requested")

// runTasks runs tasks and loops in one errgroup. The tasks share a context
// that ends when ctx does, when a task fails or when a stop is requested
// (errStop); then drain runs, which must make every task return, and only
// after it does the loops' context end, so the health and watchdog loops
// keep watching while in-flight calls drain. started runs once every task
// has been started. The result is the first task's error (nil for a stop).
func runTasks(ctx context.Context, tasks, loops []task, started, drain func()) error {
	g, stopCtx := errgroup.WithContext(ctx)
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	for _, t := range tasks {
		g.Go(func() error { return t.run(stopCtx) })
	}
	for _, t := range loops {
		g.Go(func() error { return t.run(loopCtx) })
	}
	started()
	<-stopCtx.Done()
	drain()
	stopLoops()
	if err := g.Wait(); !errors.Is(err, errStop) {
		return err
	}
	return nil
}

// tasks are the daemon's parts that stop it when they end: the API server
// over TCP, the HTTP/3 server, the ops listener and the signal handler.
func (d *daemon) tasks(s *servers, sigs <-chan os.Signal) []task {
	ts := []task{d.serveTask("api", func() error { return s.api.ServeTLS(s.tcpLn, "", "") })}
	if s.h3 != nil {
		ts = append(ts, d.serveTask("http3", func() error { return s.h3.Serve(s.udpConn) }))
	}
	if s.opsS != nil {
		ts = append(ts, d.serveTask("ops", func() error { return s.opsS.Serve(s.opsLn) }))
	}
	if s.conn != nil {
		ts = append(ts, d.serveTask("connect", func() error { return s.conn.ServeTLS(s.connLn, "", "") }))
	}
	return append(ts, task{"signals", func(ctx context.Context) error { return d.signals(ctx, sigs) }})
}

// loops are the daemon's background parts: they run until the drain is
// over and never stop it. (The service's own background work, the
// last_used_at flush and detached refreshes, belongs to vault.Service: it
// starts in vault.New and ends in its Close, which build's closers call.)
func (d *daemon) loops(healthInterval time.Duration) []task {
	retention := newRetentionMetrics(d.metrics.Registry)
	return []task{
		{"watchdog", func(ctx context.Context) error { d.watchdog(ctx); return nil }},
		{"health", func(ctx context.Context) error { d.healthLoop(ctx, healthInterval); return nil }},
		{"audit-retention", func(ctx context.Context) error { d.retentionLoop(ctx, retention); return nil }},
		{"connect-sweep", func(ctx context.Context) error { d.connectSweep(ctx, time.Hour); return nil }},
		{"lifecycle-sweep", func(ctx context.Context) error { d.lifecycleSweep(ctx); return nil }},
		{"refresh-ahead", func(ctx context.Context) error { d.refreshAhead(ctx); return nil }},
		{"revocations", func(ctx context.Context) error { d.revocationLoop(ctx, time.Now); return nil }},
		{"webhooks", func(ctx context.Context) error { d.webhooks.run(ctx); return nil }},
		{"audit-checkpoint", func(ctx context.Context) error {
			d.cp.loop(ctx, func() time.Duration { return d.cfg.Load().Audit.CheckpointInterval.Duration() })
			return nil
		}},
	}
}

// serveTask runs a server until the drain shuts it down; any other end is
// a listener failure, which stops the daemon.
func (d *daemon) serveTask(name string, serve func() error) task {
	return task{name, func(context.Context) error {
		err := serve()
		if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		err = fmt.Errorf("%s: %w", name, err)
		d.log.Error("listener failed", "err", err)
		return err
	}}
}

// signals turns SIGHUP into a reload and SIGTERM or SIGINT into a stop.
func (d *daemon) signals(ctx context.Context, sigs <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(ctx)
				continue
			}
			d.log.Info("shutting down", "signal", sig.String())
			return errStop
		}
	}
}

// announceReady logs the start-up line and tells systemd READY=1; the
// listeners are bound and served by then.
func (d *daemon) announceReady(s *servers) {
	opsAddr := ""
	if s.opsLn != nil {
		opsAddr = s.opsLn.Addr().String()
	}
	connAddr := ""
	if s.connLn != nil {
		connAddr = s.connLn.Addr().String()
	}
	d.log.Info("vaultd ready", "version", Version, "listen", s.tcpLn.Addr().String(), "http3", s.udpConn != nil,
		"ops_listen", opsAddr, "connect_listen", connAddr, "kek_version", d.kr.CurrentVersion(), "providers", d.svc.ProviderNames())
	notify(d.log, sddaemon.SdNotifyReady+"\nSTATUS=serving\nMAINPID="+strconv.Itoa(os.Getpid()))
}

// drain is the graceful shutdown: STOPPING=1, new API work refused, then
// the API servers finish their in-flight calls within shutdown_timeout and
// the ops listener (which answers /readyz "draining" meanwhile) closes
// last. Every server task returns once its server is shut down.
func (d *daemon) drain(s *servers, timeout time.Duration) {
	notify(d.log, sddaemon.SdNotifyStopping+"\nSTATUS=draining")
	d.srv.SetDraining()
	shutCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.api.Shutdown(shutCtx); err != nil {
		d.log.Warn("api shutdown incomplete", "err", err)
	}
	if s.conn != nil {
		if err := s.conn.Shutdown(shutCtx); err != nil {
			d.log.Warn("connect shutdown incomplete", "err", err)
		}
	}
	if s.h3 != nil {
		if err := s.h3.Shutdown(shutCtx); err != nil {
			d.log.Warn("http3 shutdown incomplete", "err", err)
		}
		_ = s.h3.Close()
		_ = s.udpConn.Close()
	}
	if s.opsS != nil {
		_ = s.opsS.Shutdown(shutCtx)
	}
}

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
			if !d.watchdogHealthy(err) {
				d.log.Warn("watchdog: not healthy, withholding WATCHDOG=1", "err", err)
				continue
			}
			notify(d.log, sddaemon.SdNotifyWatchdog)
		}
	}
}
