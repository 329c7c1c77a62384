package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/storage"
)

// DefaultVerifyTail is how many of the newest stored events New checks
// before it returns when Options.VerifyOnStart is set; older ones are
// checked in the background.
//
// BenchmarkVerifyStoredChain measures 60-70 us per stored event on a
// 2-core machine (bbolt scan plus the general JCS path, which
// verification always takes): over a minute per million events, far from
// cheap enough to hold vaultd's start for a whole trail. 4096 events take
// about a quarter of a second and cover the newest activity, which is
// what someone covering recent tracks would edit.
const DefaultVerifyTail = 4096

// verifyOnStart checks the newest tail events of the stored chain and the
// head now. It returns the check of the older events, to run in the
// background (nil when the whole chain was checked), or the error that
// must stop the start.
func (l *Log) verifyOnStart(ctx context.Context, tail uint64) (func(context.Context) error, error) {
	if tail == 0 {
		tail = DefaultVerifyTail
	}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return nil, refuseStart(fmt.Errorf("audit: head: %w", err))
	}
	// A pruned store's chain starts after its anchor.
	pruned, err := l.store.AuditAnchor(ctx)
	if err != nil {
		return nil, refuseStart(fmt.Errorf("audit: anchor: %w", err))
	}
	if head.Seq-pruned.Seq <= tail {
		res, err := l.VerifyStore(ctx)
		if err != nil {
			return nil, refuseStart(err)
		}
		l.chainVerified.Set(1)
		l.lastCheckpoint.Store(res.LastCheckpoint)
		l.logger.Info("audit chain verified", "events", res.Events, "last_seq", res.LastSeq, "checkpoints", res.Checkpoints)
		return nil, nil
	}
	start := head.Seq - tail
	// With a checkpoint key, from the newest checkpoint instead: its
	// signature (checked by v, the first event it reads) vouches for the
	// chain up to it, so the events after it are what must be verified
	// before vaultd serves.
	cpSeq, fromCheckpoint := l.newestCheckpoint(ctx, head.Seq)
	if fromCheckpoint {
		start = cpSeq - 1
	}
	// The tail's first prev_hash is taken on trust for now; the background
	// pass checks it against the hash of seq start it computes itself.
	anchor, err := l.prevHashOf(ctx, start+1)
	if err != nil {
		return nil, refuseStart(err)
	}
	var v Verifier
	v.Anchor(start, anchor)
	v.SetCheckpointKey(l.cpKey)
	if err := l.scanChain(ctx, &v, start, head.Seq); err != nil {
		return nil, refuseStart(err)
	}
	if err := l.checkHead(ctx, v.Result()); err != nil {
		return nil, refuseStart(err)
	}
	l.lastCheckpoint.Store(v.Result().LastCheckpoint)
	l.logger.Info("audit chain: newest events verified, the older ones are verified in the background",
		"from_seq", start+1, "last_seq", head.Seq, "from_checkpoint", fromCheckpoint)
	return func(ctx context.Context) error {
		var v Verifier
		v.SetCheckpointKey(l.cpKey)
		v.Anchor(pruned.Seq, pruned.Hash)
		if err := l.scanChain(ctx, &v, pruned.Seq, start); err != nil {
			return err
		}
		last := v.Result().LastHash
		if start == pruned.Seq {
			last = pruned.Hash // nothing older remains: the tail starts at the anchor
		}
		if last != anchor {
			return &ChainError{Seq: start + 1, Reason: fmt.Sprintf("prev_hash does not equal the hash of seq %d", start)}
		}
		return nil
	}, nil
}

// refuseStart words a failed start-up check for the one line vaultd
// prints before it exits.
func refuseStart(err error) error {
	var ce *ChainError
	if errors.As(err, &ce) {
		return fmt.Errorf("the audit trail in the database fails verification (tampered or damaged), refusing to start: %w", err)
	}
	return fmt.Errorf("audit: verify the stored chain: %w", err)
}

// startBackground runs check until it ends or Close stops it. A break
// it finds is logged, exported and stops every later Record.
func (l *Log) startBackground(ctx context.Context, check func(context.Context) error) {
	// Not the caller's context: New's may be short-lived. Close cancels.
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.bgCancel, l.bgDone = cancel, make(chan struct{})
	go func() {
		defer close(l.bgDone)
		began := time.Now()
		err := check(bctx)
		l.bgErr = err
		var ce *ChainError
		switch {
		case err == nil:
			l.chainVerified.Set(1)
			l.logger.Info("audit chain verified", "seconds", time.Since(began).Seconds())
		case errors.As(err, &ce):
			l.broken.Store(ce)
			l.chainBrokenSeq.Set(float64(ce.Seq))
			l.logger.Error("audit chain broken: the trail in the database was tampered with or damaged; every audited operation is refused until an operator intervenes",
				"seq", ce.Seq, "err", err)
		case bctx.Err() != nil:
			l.logger.Info("audit chain: background verification stopped", "err", err)
		default:
			// Not a verdict on the chain (the store failed to read); the
			// health check reports the store.
			l.logger.Error("audit chain: background verification failed", "err", err)
		}
	}()
}

// refuseIfBroken fails a Record once the chain is known to be broken:
// appending would extend, and so bless, a tampered trail.
func (l *Log) refuseIfBroken() error {
	if ce := l.broken.Load(); ce != nil {
		return fmt.Errorf("%w: %w", ErrChainBroken, ce)
	}
	return nil
}

func (l *Log) initMetrics(reg prometheus.Registerer) {
	l.chainVerified = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vaultd_audit_chain_verified",
		Help: "1 once the start-up check verified the whole audit chain in the database; 0 while it runs, when it is off, or after a break.",
	})
	l.chainBrokenSeq = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vaultd_audit_chain_broken_seq",
		Help: "First broken seq of the audit chain in the database found by the start-up check; 0 if none.",
	})
	l.walReplayedG = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vaultd_audit_wal_replayed_events",
		Help: "Token-use events the start-up replay of the audit WAL committed to the database ([audit] sync = \"batch\").",
	})
	l.walCommitFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vaultd_audit_wal_commit_failures_total",
		Help: "Failed commits of pending token-use events from the audit WAL to the database (retried at the next sync_interval).",
	})
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vaultd_audit_wal_pending_events",
		Help: "Token-use events in the audit WAL not yet committed to the database.",
	}, func() float64 {
		l.pendMu.Lock()
		defer l.pendMu.Unlock()
		return float64(len(l.pending))
	})
	if reg != nil {
		reg.MustRegister(l.chainVerified, l.chainBrokenSeq, l.walReplayedG, l.walCommitFailures, pending)
	}
}

// scanChain adds the stored events after..upTo to v, checking that the
// store's key and hash agree with each event. A record the store cannot
// return in order (storage.ErrCorrupt) is a *ChainError at the seq
// expected next, wrapping the store's error.
func (l *Log) scanChain(ctx context.Context, v *Verifier, after, upTo uint64) error {
	err := l.store.ScanAudit(ctx, after, func(rec storage.AuditRecord) (bool, error) {
		if rec.Seq > upTo {
			return false, nil
		}
		if err := v.Add(rec.Data, 0); err != nil {
			return false, err
		}
		if res := v.Result(); rec.Seq != res.LastSeq || rec.Hash != res.LastHash {
			return false, &ChainError{Seq: rec.Seq, Reason: "stored key or hash disagrees with the event"}
		}
		return rec.Seq < upTo, nil
	})
	next := after + 1
	if res := v.Result(); res.Events > 0 {
		next = res.LastSeq + 1
	}
	if errors.Is(err, storage.ErrCorrupt) && !errors.As(err, new(*ChainError)) {
		return &ChainError{Seq: l.locateCorrupt(ctx, next), Reason: err.Error(), Err: err}
	}
	if err == nil && upTo != math.MaxUint64 && next <= upTo {
		// The store's own scan reports gaps; this covers one that ends
		// early without saying so.
		return &ChainError{Seq: next, Reason: fmt.Sprintf("the store returned no event after seq %d", next-1)}
	}
	return err
}

// probeWindow bounds locateCorrupt: more than the store's read chunk
// (storage/bolt reads 256 events at a time), plus room for a few gaps.
const probeWindow = 512

// locateCorrupt names the stored event at or after seq that the store
// cannot return in order (deleted, or its key and content disagree). The
// store reports such a record for the whole chunk of events it was
// reading, without the valid ones before it, so this probes scans
// starting one event later each time: the first that reads cleanly starts
// right at the damaged record. Exact for one damaged record; with several
// within a chunk it names the last of them, still a broken seq. Falls back
// to seq, the first one not verified.
func (l *Log) locateCorrupt(ctx context.Context, seq uint64) uint64 {
	for x := seq; x < seq+probeWindow; x++ {
		err := l.store.ScanAudit(ctx, x, func(storage.AuditRecord) (bool, error) { return false, nil })
		if err == nil {
			return x
		}
		if !errors.Is(err, storage.ErrCorrupt) {
			break
		}
	}
	return seq
}

// prevHashOf is the prev_hash stored in event seq. A malformed event
// yields "", which the verification of that event then reports.
func (l *Log) prevHashOf(ctx context.Context, seq uint64) (string, error) {
	var prev string
	err := l.store.ScanAudit(ctx, seq-1, func(rec storage.AuditRecord) (bool, error) {
		if rec.Seq == seq {
			if ev, err := ParseEvent(rec.Data); err == nil {
				prev = ev.PrevHash
			}
		}
		return false, nil
	})
	if errors.Is(err, storage.ErrCorrupt) {
		return "", &ChainError{Seq: l.locateCorrupt(ctx, seq), Reason: err.Error(), Err: err}
	}
	return prev, err
}

// checkHead compares the stored head with the last event verified.
func (l *Log) checkHead(ctx context.Context, res VerifyResult) error {
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("audit: head: %w", err)
	}
	// A head ahead of the scan means events appended meanwhile: fine. A
	// head disagreeing with an event we read is not.
	if head.Seq == res.LastSeq && head.Seq > 0 && head.Hash != res.LastHash {
		return &ChainError{Seq: head.Seq, Reason: "stored head hash disagrees with the last event"}
	}
	if head.Seq < res.LastSeq {
		return &ChainError{Seq: head.Seq + 1, Reason: "stored head is behind the last event"}
	}
	return nil
}

// Broken reports a chain break found by the start-up verification (nil
// while none is known), for readiness: a node refusing every audited
// operation must not look ready.
func (l *Log) Broken() error { return l.refuseIfBroken() }
