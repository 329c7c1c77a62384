package notify

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// Sentinel errors.
var (
	// ErrNotFound: no delivery has that id.
	ErrNotFound = errors.New("notify: no such delivery")
	// ErrBadStatus: a status filter that is not pending, delivered or
	// failed.
	ErrBadStatus = errors.New("notify: status must be pending, delivered or failed")
)

// Defaults of Options.
const (
	DefaultPollInterval   = time.Second
	DefaultConcurrency    = 4
	DefaultPerWebhook     = 2
	DefaultAttemptTimeout = 10 * time.Second
	DefaultRetain         = 7 * 24 * time.Hour
)

// Bounds of one round. A round reads at most maxScan events and queues at
// most about maxBatch deliveries (an event's deliveries are never split);
// the next round goes on from there. The pending list is read maxDue at a
// time.
const (
	maxScan  = 1024
	maxBatch = 256
	maxDue   = 64
	// maxDueScan bounds how far past busy receivers' deliveries one round
	// looks for deliveries it can start.
	maxDueScan  = 4096
	pruneBatch  = 500
	pruneRounds = 20
	pruneEvery  = time.Hour
	// cursorEvery: a cursor that moved over events that notify nobody is
	// stored at most this often (a crash reads those events again, which
	// queues nothing), so a busy trail costs no write per poll.
	cursorEvery = 30 * time.Second
)

// Webhook is one [[webhooks]] entry as the dispatcher uses it.
type Webhook struct {
	// Key is the entry's stable short id (deliveries name it).
	Key string
	URL *url.URL
	// Secret is the decoded HMAC key (the bytes after "whsec_").
	Secret secret.Bytes
	// Tenants selects tenants (none: every tenant).
	Tenants []string
	// Events are type patterns (Match; none: every type).
	Events []string
	// RetrySchedule are the delays before each retry; after the last one
	// fails, the delivery is dead-lettered.
	RetrySchedule []time.Duration
	// RootCAs, when set, are the only roots trusted for https (else the
	// system's).
	RootCAs *x509.CertPool
}

// Store is what the dispatcher reads and writes: the audit trail and the
// deliveries with their cursor.
type Store interface {
	storage.DeliveryStore
	ScanAudit(ctx context.Context, afterSeq uint64, fn func(storage.AuditRecord) (bool, error)) error
	AuditHead(ctx context.Context) (storage.AuditHead, error)
}

// integrationGetter is optional on the Store: with it a body names the
// provider of an event whose detail does not.
type integrationGetter interface {
	GetIntegration(ctx context.Context, tenantID, id string) (storage.Integration, error)
}

// Auditor records an audit event committed with a write (audit.Log).
type Auditor interface {
	RecordWith(ctx context.Context, ev audit.Event, commit func(build storage.AuditFunc) (storage.AuditRecord, error)) (audit.Event, error)
}

// Options configure a Dispatcher. Store and Audit are required.
type Options struct {
	Store Store
	Audit Auditor
	// Webhooks returns the configured webhooks; it is called every round,
	// so a reload takes effect without a restart. nil: none.
	Webhooks   func() []Webhook
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (time.Now if nil); tests inject one.
	Now func() time.Time
	// PollInterval is how often the trail and the due deliveries are
	// looked at.
	PollInterval time.Duration
	// Concurrency bounds the attempts in flight; PerWebhook bounds them
	// per webhook, so one hanging receiver cannot hold every worker.
	Concurrency, PerWebhook int
	// AttemptTimeout bounds one attempt, connection to answer.
	AttemptTimeout time.Duration
	// Retain is how long delivered and failed deliveries are kept.
	Retain time.Duration
}

// Dispatcher tails the audit trail into deliveries and sends them.
type Dispatcher struct {
	store   Store
	audit   Auditor
	hooks   func() []Webhook
	log     *slog.Logger
	m       *metrics
	now     func() time.Time
	poll    time.Duration
	timeout time.Duration
	retain  time.Duration
	conc    int
	perHook int

	tailMu sync.Mutex // one Tail at a time
	cursor uint64     // events up to here are handled (in memory)
	// sweepReasons: a sweep's reason, read from its integration.sweep
	// event, waiting for the integration.delete that follows it.
	sweepReasons reasons
	persisted    uint64 // the stored cursor
	persistedAt  time.Time

	mu       sync.Mutex
	inflight map[string]bool // delivery ids being attempted
	perKey   map[string]int  // attempts in flight per webhook key
	clients  map[string]clientEntry
	failing  bool // a round failed; logged once until one succeeds

	wg   sync.WaitGroup // attempts in flight
	wake chan struct{}
}

type clientEntry struct {
	url    string
	roots  *x509.CertPool
	client *http.Client
}

type hook struct {
	Webhook
	client *http.Client
}

// New makes a Dispatcher; Init must run before Run or Tail.
func New(o Options) (*Dispatcher, error) {
	if o.Store == nil || o.Audit == nil {
		return nil, errors.New("notify: a store and an audit log are required")
	}
	d := &Dispatcher{
		store: o.Store, audit: o.Audit, hooks: o.Webhooks, log: o.Logger, now: o.Now,
		poll: o.PollInterval, timeout: o.AttemptTimeout, retain: o.Retain,
		conc: o.Concurrency, perHook: o.PerWebhook,
		inflight: map[string]bool{}, perKey: map[string]int{}, clients: map[string]clientEntry{},
		wake: make(chan struct{}, 1),
	}
	if d.hooks == nil {
		d.hooks = func() []Webhook { return nil }
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.poll <= 0 {
		d.poll = DefaultPollInterval
	}
	if d.timeout <= 0 {
		d.timeout = DefaultAttemptTimeout
	}
	if d.retain <= 0 {
		d.retain = DefaultRetain
	}
	if d.conc <= 0 {
		d.conc = DefaultConcurrency
	}
	if d.perHook <= 0 {
		d.perHook = DefaultPerWebhook
	}
	d.perHook = min(d.perHook, d.conc)
	d.m = newMetrics(o.Registerer)
	return d, nil
}

// Init reads the stored cursor. A store that never had one starts at the
// current head of the trail: the events from before webhooks existed are
// history, not news. Run it before the API serves, so that no state change
// can fall in between.
func (d *Dispatcher) Init(ctx context.Context) error {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	c, err := d.store.WebhookCursor(ctx)
	if err != nil {
		return fmt.Errorf("notify: webhook cursor: %w", err)
	}
	if c == 0 {
		head, err := d.store.AuditHead(ctx)
		if err != nil {
			return fmt.Errorf("notify: audit head: %w", err)
		}
		if head.Seq > 0 {
			if err := d.store.EnqueueDeliveries(ctx, head.Seq, nil); err != nil {
				return fmt.Errorf("notify: set the webhook cursor: %w", err)
			}
			c = head.Seq
		}
	}
	d.cursor, d.persisted, d.persistedAt = c, c, d.now()
	pending, err := d.store.ListDeliveries(ctx, storage.DeliveryPending, 0)
	if err != nil {
		return fmt.Errorf("notify: pending deliveries: %w", err)
	}
	d.m.pending.Set(float64(len(pending)))
	return nil
}

// Run tails and delivers until ctx ends, then waits for the attempts in
// flight (which ctx's end cancels; a cancelled attempt is not counted and
// is sent again after the next start).
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.poll)
	defer t.Stop()
	var lastPrune time.Time
	for {
		d.round(ctx)
		if now := d.now(); now.Sub(lastPrune) >= pruneEvery {
			lastPrune = now
			d.prune(ctx)
		}
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

// round tails what is new (a bounded number of passes) and starts the due
// attempts.
func (d *Dispatcher) round(ctx context.Context) {
	var err error
	for range 8 {
		var more bool
		if _, more, err = d.Tail(ctx); err != nil || !more {
			break
		}
	}
	if err == nil {
		_, err = d.DeliverDue(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err != nil && ctx.Err() == nil && !d.failing:
		d.failing = true
		d.log.Error("webhooks: dispatcher round failed; retrying every poll", "err", err)
	case err == nil && d.failing:
		d.failing = false
		d.log.Info("webhooks: dispatcher recovered")
	}
}

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Tail reads the trail after the cursor once (bounded), queues a delivery
// per matching webhook for each event that means a notification, and
// stores them with the new cursor in one transaction. more reports that
// the bound stopped it before the end of the trail.
func (d *Dispatcher) Tail(ctx context.Context) (queued int, more bool, err error) {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	hooks := d.hooks()
	now := d.now()
	last, scanned := d.cursor, 0
	var ds []storage.Delivery
	err = d.store.ScanAudit(ctx, d.cursor, func(rec storage.AuditRecord) (bool, error) {
		if scanned >= maxScan || len(ds) >= maxBatch {
			more = true
			return false, nil
		}
		scanned++
		last = rec.Seq
		ev, err := audit.ParseEvent(rec.Data)
		if err != nil {
			// The chain's verifier reports a bad line; a notification
			// cannot be made of it.
			d.log.Warn("webhooks: unreadable audit event skipped", "seq", rec.Seq)
			return true, nil
		}
		if r := SweepReason(ev); r != "" {
			d.sweepReasons.remember(ev.TenantID+"/"+ev.IntegrationID, r)
			return true, nil
		}
		body, ok := Map(ev)
		if !ok {
			return true, nil
		}
		if body.Type == TypeIntegrationDisconnected {
			if r, ok := d.sweepReasons.take(ev.TenantID + "/" + ev.IntegrationID); ok {
				body.Data.Reason = r
			}
		}
		var targets []Webhook
		for _, h := range hooks {
			if wants(h, body.Type, body.Data.TenantID) {
				targets = append(targets, h)
			}
		}
		if len(targets) == 0 {
			return true, nil
		}
		d.fillProvider(ctx, &body)
		b := body.Marshal()
		for _, h := range targets {
			ds = append(ds, storage.Delivery{
				ID: NewID(), Webhook: h.Key, Type: body.Type, TenantID: body.Data.TenantID, Seq: rec.Seq,
				Body: b, Status: storage.DeliveryPending, CreatedAt: now, NextAttemptAt: now, UpdatedAt: now,
			})
		}
		return true, nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("notify: read the audit trail: %w", err)
	}
	if len(ds) > 0 || (last > d.persisted && (d.persisted == 0 || now.Sub(d.persistedAt) >= cursorEvery)) {
		if err := d.store.EnqueueDeliveries(ctx, last, ds); err != nil {
			return 0, false, fmt.Errorf("notify: queue deliveries: %w", err)
		}
		d.persisted, d.persistedAt = last, now
		d.m.pending.Add(float64(len(ds)))
		if len(ds) > 0 {
			d.poke()
		}
	}
	d.cursor = last
	return len(ds), more, nil
}

// wants: the webhook's events match typ, and its tenants (none: every
// tenant) hold tenant; a notification of no tenant goes to every webhook
// whose events match.
func wants(h Webhook, typ, tenant string) bool {
	if tenant != "" && len(h.Tenants) > 0 && !slices.Contains(h.Tenants, tenant) {
		return false
	}
	return Match(h.Events, typ)
}

// fillProvider names the integration's provider when the event did not.
func (d *Dispatcher) fillProvider(ctx context.Context, b *Body) {
	if b.Data.Provider != "" || b.Data.IntegrationID == "" || b.Data.TenantID == "" {
		return
	}
	g, ok := d.store.(integrationGetter)
	if !ok {
		return
	}
	in, err := g.GetIntegration(ctx, b.Data.TenantID, b.Data.IntegrationID)
	if err == nil && safeProvider.MatchString(in.Provider) {
		b.Data.Provider = in.Provider
	}
}

// reasons is a small bounded map (under tailMu): a reason whose delete
// never comes (the disconnect failed) is forgotten, oldest first.
type reasons struct {
	m     map[string]string
	order []string
}

const maxReasons = 256

func (r *reasons) remember(k, v string) {
	if r.m == nil {
		r.m = map[string]string{}
	}
	if _, ok := r.m[k]; !ok {
		if len(r.order) == maxReasons {
			delete(r.m, r.order[0])
			r.order = r.order[1:]
		}
		r.order = append(r.order, k)
	}
	r.m[k] = v
}

func (r *reasons) take(k string) (string, bool) {
	v, ok := r.m[k]
	if ok {
		delete(r.m, k)
		r.order = slices.DeleteFunc(r.order, func(o string) bool { return o == k })
	}
	return v, ok
}

// NewID is a webhook-id: "msg_" and 26 random base32 characters.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "msg_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// hookMap returns the configured webhooks by key, each with its client
// (kept across rounds while its URL and roots stay the same).
func (d *Dispatcher) hookMap() map[string]*hook {
	ws := d.hooks()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]*hook, len(ws))
	for _, w := range ws {
		if w.URL == nil {
			continue
		}
		c, ok := d.clients[w.Key]
		if !ok || c.url != w.URL.String() || c.roots != w.RootCAs {
			c = clientEntry{url: w.URL.String(), roots: w.RootCAs, client: newClient(w.URL, w.RootCAs)}
			d.clients[w.Key] = c
		}
		out[w.Key] = &hook{Webhook: w, client: c.client}
	}
	for k := range d.clients {
		if out[k] == nil {
			delete(d.clients, k)
		}
	}
	return out
}

// DeliverDue starts an attempt for each due pending delivery while
// workers are free (at most PerWebhook per webhook) and returns how many
// it started. It does not wait for them.
func (d *Dispatcher) DeliverDue(ctx context.Context) (int, error) {
	hooks := d.hookMap()
	d.mu.Lock()
	free := d.conc - len(d.inflight)
	d.mu.Unlock()
	if free <= 0 {
		return 0, nil
	}
	now, started := d.now(), 0
	// A page full of deliveries to busy receivers (one hanging webhook
	// with a backlog) must not hide the others': when a page is used up
	// without filling the free workers, look further, up to maxDueScan.
	for limit := maxDue; ; limit *= 4 {
		due, err := d.store.ListDeliveries(ctx, storage.DeliveryPending, limit)
		if err != nil {
			return started, fmt.Errorf("notify: pending deliveries: %w", err)
		}
		future := false
		for _, del := range due {
			if started == free {
				break
			}
			if del.NextAttemptAt.After(now) {
				future = true
				break
			}
			h := hooks[del.Webhook]
			if h == nil {
				// Its [[webhooks]] entry is gone: nobody to send it to.
				d.deadLetter(ctx, del, del.Attempts, "webhook_not_configured")
				continue
			}
			d.mu.Lock()
			busy := d.inflight[del.ID] || d.perKey[del.Webhook] >= d.perHook
			if !busy {
				d.inflight[del.ID] = true
				d.perKey[del.Webhook]++
			}
			d.mu.Unlock()
			if busy {
				continue
			}
			// The page was read before this delivery was marked in
			// flight: an attempt that finished in between (delivered, or
			// rescheduled) must not be sent again. Read it anew.
			if cur, err := d.store.GetDelivery(ctx, del.ID); err != nil || cur.Status != storage.DeliveryPending ||
				cur.Revision != del.Revision || cur.NextAttemptAt.After(now) {
				d.mu.Lock()
				delete(d.inflight, del.ID)
				if d.perKey[del.Webhook]--; d.perKey[del.Webhook] <= 0 {
					delete(d.perKey, del.Webhook)
				}
				d.mu.Unlock()
				continue
			}
			started++
			d.wg.Add(1)
			go d.attempt(ctx, h, del)
		}
		if started == free || future || len(due) < limit || limit >= maxDueScan {
			break
		}
	}
	return started, nil
}

// wait waits for the attempts in flight (tests).
func (d *Dispatcher) wait() { d.wg.Wait() }

func (d *Dispatcher) attempt(ctx context.Context, h *hook, del storage.Delivery) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.inflight, del.ID)
		if d.perKey[del.Webhook]--; d.perKey[del.Webhook] <= 0 {
			delete(d.perKey, del.Webhook)
		}
		d.mu.Unlock()
		d.poke() // a worker is free
	}()
	actx, cancel := context.WithTimeout(ctx, d.timeout)
	code := post(actx, h.client, h.URL, h.Secret.Reveal(), del.ID, d.now(), del.Body)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not an attempt; sent again after the start
	}
	d.finish(ctx, h, del, code)
}

// finish records an attempt's result: delivered, a retry after the
// schedule's next delay, or a dead letter after the last.
func (d *Dispatcher) finish(ctx context.Context, h *hook, del storage.Delivery, code string) {
	now := d.now()
	upd := del
	upd.Attempts++
	upd.UpdatedAt = now
	switch {
	case code == "":
		upd.Status, upd.LastError = storage.DeliveryDelivered, ""
		if d.update(ctx, upd) {
			d.m.deliveries.WithLabelValues(OutcomeDelivered).Inc()
			d.m.pending.Dec()
		}
	case int(del.Attempts) < len(h.RetrySchedule):
		upd.LastError = code
		upd.NextAttemptAt = now.Add(h.RetrySchedule[del.Attempts])
		if d.update(ctx, upd) {
			d.m.deliveries.WithLabelValues(OutcomeRetry).Inc()
			d.log.Warn("webhooks: delivery failed, will retry", "webhook", del.Webhook, "delivery", del.ID,
				"type", del.Type, "attempts", upd.Attempts, "last_error", code, "next_attempt_at", upd.NextAttemptAt)
		}
	default:
		d.deadLetter(ctx, del, upd.Attempts, code)
	}
}

// update stores a delivery's new state; a conflict (an operator's
// redelivery meanwhile) leaves theirs in place.
func (d *Dispatcher) update(ctx context.Context, upd storage.Delivery) bool {
	if _, _, err := d.store.UpdateDelivery(ctx, upd, nil); err != nil {
		if !errors.Is(err, storage.ErrConflict) && !errors.Is(err, storage.ErrNotFound) {
			d.log.Error("webhooks: store a delivery's state", "delivery", upd.ID, "err", err)
		}
		return false
	}
	return true
}

// deadLetter marks del failed with its webhook.dead_letter event in one
// transaction.
func (d *Dispatcher) deadLetter(ctx context.Context, del storage.Delivery, attempts uint32, code string) {
	upd := del
	upd.Status, upd.Attempts, upd.LastError, upd.UpdatedAt = storage.DeliveryFailed, attempts, code, d.now()
	ev := audit.Event{
		TenantID: del.TenantID, Actor: "vaultd", Action: audit.ActionWebhookDeadLetter, Outcome: audit.OutcomeFailure,
		Detail: fmt.Sprintf("webhook=%s type=%s delivery=%s attempts=%d last_error=%s", del.Webhook, del.Type, del.ID, attempts, code),
	}
	_, err := d.audit.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		_, rec, err := d.store.UpdateDelivery(ctx, upd, build)
		return rec, err
	})
	switch {
	case err == nil:
		d.m.deliveries.WithLabelValues(OutcomeDeadLetter).Inc()
		d.m.deadLetters.Inc()
		d.m.pending.Dec()
		d.log.Warn("webhooks: delivery dead-lettered", "webhook", del.Webhook, "delivery", del.ID, "type", del.Type,
			"attempts", attempts, "last_error", code)
	case errors.Is(err, storage.ErrConflict), errors.Is(err, storage.ErrNotFound):
	default:
		d.log.Error("webhooks: dead-letter a delivery", "delivery", del.ID, "err", err)
	}
}

// Deliveries lists deliveries with that status ("" = any), at most limit
// (<= 0: all), by next attempt then id.
func (d *Dispatcher) Deliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error) {
	if status != "" && !storage.ValidDeliveryStatus(status) {
		return nil, ErrBadStatus
	}
	return d.store.ListDeliveries(ctx, status, limit)
}

// Redeliver queues a delivery again, whatever its status: pending, due
// now, with its attempts reset to 0 (so the whole retry schedule applies
// again) and its id, and so its webhook-id, unchanged. The change commits
// with ev (the caller's actor and request id; action, outcome, tenant and
// detail are filled here). It returns the delivery as stored.
func (d *Dispatcher) Redeliver(ctx context.Context, ev audit.Event, id string) (storage.Delivery, error) {
	if !storage.ValidID(id) {
		return storage.Delivery{}, ErrNotFound
	}
	for range 3 {
		del, err := d.store.GetDelivery(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			return storage.Delivery{}, ErrNotFound
		}
		if err != nil {
			return storage.Delivery{}, fmt.Errorf("notify: read the delivery: %w", err)
		}
		now := d.now()
		upd := del
		upd.Status, upd.Attempts, upd.NextAttemptAt, upd.UpdatedAt = storage.DeliveryPending, 0, now, now
		e := ev
		e.Action, e.Outcome, e.TenantID = audit.ActionWebhookRedeliver, audit.OutcomeSuccess, del.TenantID
		e.Detail = fmt.Sprintf("webhook=%s type=%s delivery=%s was=%s", del.Webhook, del.Type, del.ID, del.Status)
		var out storage.Delivery
		_, err = d.audit.RecordWith(ctx, e, func(build storage.AuditFunc) (storage.AuditRecord, error) {
			o, rec, err := d.store.UpdateDelivery(ctx, upd, build)
			out = o
			return rec, err
		})
		switch {
		case errors.Is(err, storage.ErrConflict):
			continue // an attempt finished meanwhile: read it again
		case errors.Is(err, storage.ErrNotFound):
			return storage.Delivery{}, ErrNotFound
		case err != nil:
			return storage.Delivery{}, fmt.Errorf("notify: redeliver: %w", err)
		}
		if del.Status != storage.DeliveryPending {
			d.m.pending.Inc()
		}
		d.poke()
		return out, nil
	}
	return storage.Delivery{}, fmt.Errorf("notify: redeliver: %w", storage.ErrConflict)
}

// RetentionFloor bounds audit retention: no event at or after the stored
// cursor may be pruned while deliveries may still have to be made of it.
// It returns the time of the event at the cursor (or of the first event
// after it when that one is gone); audit.Log.Prune prunes a prefix of
// events older than its Before, so a Before no later than that time keeps
// the cursor's event and everything after it. ok is false when the trail
// has nothing at or after the cursor.
func (d *Dispatcher) RetentionFloor(ctx context.Context) (floor time.Time, ok bool, err error) {
	c, err := d.store.WebhookCursor(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("notify: webhook cursor: %w", err)
	}
	after := c
	if after > 0 {
		after--
	}
	err = d.store.ScanAudit(ctx, after, func(rec storage.AuditRecord) (bool, error) {
		ev, err := audit.ParseEvent(rec.Data)
		if err != nil {
			return false, err
		}
		floor, ok = ev.Time.Time, true
		return false, nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("notify: read the audit trail: %w", err)
	}
	return floor, ok, nil
}

// prune deletes delivered and failed deliveries older than Retain, a
// bounded number per run.
func (d *Dispatcher) prune(ctx context.Context) {
	before := d.now().Add(-d.retain)
	for range pruneRounds {
		n, err := d.store.PruneDeliveries(ctx, before, pruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("webhooks: prune old deliveries", "err", err)
			}
			return
		}
		if n < pruneBatch {
			return
		}
	}
}
