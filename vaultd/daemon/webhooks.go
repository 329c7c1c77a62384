package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/vaultd/config"
	whnotify "github.com/vaultd/vaultd/vaultd/notify"
)

// webhooks wires [[webhooks]] to the notification dispatcher
// (vaultd/notify): the dispatcher reads the entries of the current config
// every round, so a SIGHUP reload adds, removes or changes webhooks
// without a restart.
type webhooks struct {
	d     *whnotify.Dispatcher
	cfg   func() *config.Config
	cache atomic.Pointer[webhookCache]
	// leaser makes the leaser the dispatcher runs under (lease.go).
	leaser func() leaser
	// leaseEvery is how often a node without the lease tries to take it,
	// and how often its holder checks that it still has it.
	leaseEvery time.Duration
	log        *slog.Logger
	// cursor reads the stored webhook cursor.
	cursor func(context.Context) (uint64, error)
}

type webhookCache struct {
	cfg   *config.Config
	hooks []whnotify.Webhook
}

// newWebhooks builds the dispatcher and reads its cursor (before the API
// serves: no state change may fall between the cursor and the first
// tail).
func (d *daemon) newWebhooks(ctx context.Context) (*webhooks, error) {
	w := &webhooks{cfg: d.cfg.Load, leaser: d.newLeaser, leaseEvery: whnotify.DefaultPollInterval, log: d.log,
		cursor: d.store.WebhookCursor}
	nd, err := whnotify.New(whnotify.Options{
		Store: d.store, Audit: d.audit, Webhooks: w.list, Logger: d.log, Registerer: d.metrics.Registry,
	})
	if err != nil {
		return nil, err
	}
	if err := nd.Init(ctx); err != nil {
		return nil, err
	}
	w.d = nd
	return w, nil
}

// list maps the current config's entries, once per config.
func (w *webhooks) list() []whnotify.Webhook {
	cfg := w.cfg()
	if c := w.cache.Load(); c != nil && c.cfg == cfg {
		return c.hooks
	}
	hooks := make([]whnotify.Webhook, 0, len(cfg.Webhooks))
	for _, e := range cfg.Webhooks {
		sched := make([]time.Duration, len(e.RetrySchedule))
		for i, s := range e.RetrySchedule {
			sched[i] = s.Duration()
		}
		hooks = append(hooks, whnotify.Webhook{
			Key: e.Key, URL: e.Endpoint, Secret: e.Secret, Tenants: e.Tenants, Events: e.Events,
			RetrySchedule: sched, RootCAs: e.RootCAs,
		})
	}
	w.cache.Store(&webhookCache{cfg: cfg, hooks: hooks})
	return hooks
}

// run is the dispatcher's loop, under the webhooks lease: one node of a
// cluster tails the trail and sends at a time, so each notification is
// delivered once. Unlike the other loops' leases, this one is held for
// as long as its node runs (attempts in flight outlive a round, and the
// next holder must not send them again): a node that does not have it
// tries again every leaseEvery; the holder checks as often that its
// session still holds it and, when not, stops its dispatcher (attempts in
// flight are cancelled and sent again by the next holder, with the same
// webhook-id). A new holder first reads the stored cursor (Init): the
// previous holder moved it. With bbolt the lease is always had: the
// dispatcher just runs.
func (w *webhooks) run(ctx context.Context) {
	l := w.leaser()
	defer l.Close()
	if _, single := l.(singleNode); single {
		w.d.Run(ctx)
		return
	}
	every := max(w.leaseEvery, 10*time.Millisecond)
	log := w.log
	failing := false
	for {
		x, ok, err := l.TryLease(ctx, leaseWebhooks)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			log.Warn("webhooks: lease unavailable; retrying", "err", err)
		case ok:
			failing = false
			w.lead(ctx, x, every)
			x.Release()
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// lead runs the dispatcher while x is held and ctx lasts.
func (w *webhooks) lead(ctx context.Context, x lease, every time.Duration) {
	log := w.log
	// The previous holder moved the stored cursor past this node's: read
	// it again (Init). A cursor never stored (0) is left alone: Init would
	// take it for "no webhooks yet" and skip to the head of the trail,
	// past events no node has tailed; this node's own cursor is 0 then
	// too (the first move of a cursor is stored at once).
	c, err := w.cursor(ctx)
	if err == nil && c > 0 {
		err = w.d.Init(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("webhooks: reading the cursor failed; lease given up", "err", err)
		}
		return
	}
	log.Info("webhooks: this node now dispatches")
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.d.Run(rctx)
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			cancel()
			return
		case <-t.C:
			if err := x.Held(ctx); err != nil {
				if ctx.Err() == nil {
					log.Warn("webhooks: lease lost; this node stops dispatching", "err", err)
				}
				cancel()
				<-done
				return
			}
		}
	}
}

// capRetention lowers an audit retention cut-off so that no event a
// notification may still be made of is pruned: those at or after the
// dispatcher's stored cursor, while webhooks are configured. ok is false when the cursor cannot be read;
// the run then prunes nothing (kept events are a lesser harm than lost
// notifications).
func (d *daemon) capRetention(ctx context.Context, before time.Time) (time.Time, bool) {
	if d.webhooks == nil || len(d.webhooks.list()) == 0 {
		// No webhook: no event is waiting to become a notification.
		return before, true
	}
	floor, found, err := d.webhooks.d.RetentionFloor(ctx)
	if err != nil {
		d.log.Error("audit retention: webhook cursor unreadable, nothing pruned", "err", err)
		return before, false
	}
	if found && floor.Before(before) {
		return floor, true
	}
	return before, true
}
