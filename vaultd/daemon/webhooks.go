package daemon

import (
	"context"
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
}

type webhookCache struct {
	cfg   *config.Config
	hooks []whnotify.Webhook
}

// newWebhooks builds the dispatcher and reads its cursor (before the API
// serves: no state change may fall between the cursor and the first
// tail).
func (d *daemon) newWebhooks(ctx context.Context) (*webhooks, error) {
	w := &webhooks{cfg: d.cfg.Load}
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

// run is the dispatcher's loop.
func (w *webhooks) run(ctx context.Context) { w.d.Run(ctx) }

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
