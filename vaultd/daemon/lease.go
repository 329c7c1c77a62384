package daemon

import (
	"context"

	"github.com/vaultd/vaultd/storage/postgres"
)

// Background work that acts on the shared state (the lifecycle sweep,
// refresh-ahead, revocation retries, the webhook dispatcher, audit
// retention) runs on one node at a time: each round takes a named lease
// first, and a node that does not get it skips the round. With bbolt there
// is one node (the file lock), so every lease is had at once and nothing
// changes; with postgres a lease is a session-level advisory lock
// (storage/postgres.Leaser), released with its holder's session when the
// holder dies.

// The leases' names, one per loop.
const (
	leaseSweep        = "lifecycle-sweep"
	leaseRefreshAhead = "refresh-ahead"
	leaseRevocations  = "revocations"
	leaseWebhooks     = "webhooks"
	leaseRetention    = "audit-retention"
)

// leaser hands out named leases, each held by one node at a time.
type leaser interface {
	// TryLease takes the lease name without waiting: ok is false when
	// another node holds it. err means the database did not answer (the
	// lease is not held then either).
	TryLease(ctx context.Context, name string) (l lease, ok bool, err error)
	// Close gives up every lease still held.
	Close()
}

// lease is one lease held.
type lease interface {
	// Release gives it up; later calls do nothing.
	Release()
	// Held is nil while the lease is still held (its holder's session
	// answers), an error once it may have passed to another node.
	Held(ctx context.Context) error
}

// newLeaser is the leaser of the daemon's backend. Each loop makes its
// own and closes it when it ends: with postgres that is one connection of
// its own per loop, none of the pool's.
func (d *daemon) newLeaser() leaser {
	if st, ok := d.store.(*postgres.Store); ok {
		return pgLeaser{st.Leaser()}
	}
	return singleNode{}
}

// singleNode is the leaser of a store only one process opens (bbolt):
// every lease is had.
type singleNode struct{}

func (singleNode) TryLease(context.Context, string) (lease, bool, error) {
	return singleNode{}, true, nil
}
func (singleNode) Close()                     {}
func (singleNode) Release()                   {}
func (singleNode) Held(context.Context) error { return nil }

// pgLeaser adapts postgres.Leaser (its *Lease) to leaser.
type pgLeaser struct{ l *postgres.Leaser }

func (p pgLeaser) TryLease(ctx context.Context, name string) (lease, bool, error) {
	x, ok, err := p.l.TryLease(ctx, name)
	if !ok {
		return nil, false, err
	}
	return x, true, nil
}

func (p pgLeaser) Close() { p.l.Close() }

// leased runs round if the lease name is had, then releases it; false
// when it was not (another node runs this round). A database that does
// not answer skips the round too: logged once per outage, since the round
// would fail on it anyway.
func (d *daemon) leased(ctx context.Context, l leaser, name string, failing *bool, round func()) bool {
	x, ok, err := l.TryLease(ctx, name)
	switch {
	case err != nil:
		if ctx.Err() == nil && !*failing {
			*failing = true
			d.log.Warn("background work: lease unavailable, round skipped", "lease", name, "err", err)
		}
		return false
	case !ok:
		*failing = false
		return false
	}
	*failing = false
	defer x.Release()
	round()
	return true
}
