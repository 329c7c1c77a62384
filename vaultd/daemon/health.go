package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// health watches the HSM and the store between requests. The DEK cache lets
// warm tenants work without touching the HSM; without a watch, an HSM that
// is unplugged, wiped or locked would go unnoticed until each cached DEK's
// TTL ran out. A failed HSM check evicts every cached plaintext DEK, so the
// fail-closed rule (HSM trouble refuses the call) holds within one
// health_interval, and pulling the HSM works as a kill switch.
type health struct {
	hsmDown   atomic.Bool
	storeDown atomic.Bool
	hsmUp     prometheus.Gauge
	evictions prometheus.Counter
}

func newHealth(reg prometheus.Registerer) *health {
	h := &health{
		hsmUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vaultd_hsm_up",
			Help: "1 when the last HSM check (round trip, login, current KEK object) passed, else 0.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vaultd_dek_cache_hsm_evictions_total",
			Help: "Times every cached plaintext DEK was evicted because an HSM check failed.",
		}),
	}
	h.hsmUp.Set(1)
	reg.MustRegister(h.hsmUp, h.evictions)
	return h
}

// errStoreUnavailable is ready's answer for a store that failed its check.
var errStoreUnavailable = errors.New("store: unavailable")

// watchdogHealthy says whether ready's answer still feeds systemd's
// watchdog. A shared database (postgres) that is away is not this node's
// fault and a restart cannot cure it: the node keeps refusing calls (503,
// /readyz 503) and recovers by itself when the database returns, instead
// of every node being killed and failing to start meanwhile.
func (d *daemon) watchdogHealthy(err error) bool {
	return err == nil || (d.sharedStore && errors.Is(err, errStoreUnavailable))
}

// ready reports whether the HSM session and the store work (GET /readyz,
// the watchdog and the health loop all come here). The returned errors are
// fixed texts, safe for /readyz's JSON reason; causes go to the log.
func (d *daemon) ready(ctx context.Context) error {
	if err := d.kr.Ping(ctx); err != nil {
		// A caller that hung up (a /readyz client) says nothing about the
		// HSM; a deadline does: a hung HSM is trouble.
		if errors.Is(err, context.Canceled) {
			return hsm.ErrUnavailable
		}
		d.keys.EvictAll()
		d.health.evictions.Inc()
		d.health.hsmUp.Set(0)
		if !d.health.hsmDown.Swap(true) {
			d.log.Error("hsm check failed: every cached data key evicted; calls that need one are refused until the HSM answers", "err", err)
		}
		return hsm.ErrUnavailable
	}
	d.health.hsmUp.Set(1)
	if d.health.hsmDown.Swap(false) {
		d.log.Info("hsm check passes again")
	}
	if err := d.store.Ping(ctx); err != nil {
		if !d.health.storeDown.Swap(true) && !errors.Is(err, context.Canceled) {
			d.log.Error("store check failed", "err", err)
		}
		return errStoreUnavailable
	}
	if d.health.storeDown.Swap(false) {
		d.log.Info("store check passes again")
	}
	if err := d.audit.Broken(); err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			return fmt.Errorf("audit: chain broken at seq %d", ce.Seq)
		}
		return errors.New("audit: chain broken")
	}
	return nil
}

// healthLoop runs ready every interval until ctx ends.
func (d *daemon) healthLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, min(interval, 5*time.Second))
			_ = d.ready(cctx)
			cancel()
		}
	}
}
