package audit

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowebpki/jcs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/storage"
)

// Options configure a Log.
type Options struct {
	// MirrorPath is the optional audit mirror file ([audit] file); "" for
	// none. It is created with mode 0600 (an existing file keeps its mode,
	// e.g. 0640 for a SIEM shipper's group) and never through a symlink.
	MirrorPath string
	// Logger receives mirror problems; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject a fixed clock.
	Now func() time.Time
	// VerifyOnStart makes New verify the chain held in the store before it
	// touches the mirror (vaultd start-up): the newest VerifyTail events
	// before New returns, a break failing New with a *ChainError naming
	// the first broken seq; the older ones in the background, a break
	// there making Record fail with ErrChainBroken. See startup.go.
	VerifyOnStart bool
	// VerifyTail is how many of the newest events VerifyOnStart checks
	// before New returns; 0 means DefaultVerifyTail.
	VerifyTail uint64
	// Registerer receives the chain verification metrics; nil for none.
	Registerer prometheus.Registerer
	// CheckpointKey is the public key of the signed checkpoints (the
	// HSM's audit key). With VerifyOnStart it makes the start-up check
	// incremental from the newest checkpoint whose signature verifies,
	// and every checkpoint is checked; nil checks none. See startup.go.
	CheckpointKey crypto.PublicKey
	// WALPath turns on batch durability ([audit] sync = "batch", see
	// wal.go): token-use events go to this append-only file (0600) before
	// Record returns and reach the store within SyncInterval. "" keeps
	// every event synchronous ("always"). New replays the file first.
	WALPath string
	// SyncInterval is how often the WAL is committed to the store; 0
	// means DefaultSyncInterval.
	SyncInterval time.Duration
	// Tick, if not nil, replaces the committer's ticker (tests).
	Tick <-chan time.Time
}

// mirrorRetry is how long Record waits, after the mirror file was lost,
// before trying to reopen and repair it, so a full disk costs one attempt
// per interval rather than one per event.
const mirrorRetry = 10 * time.Second

// Store is what the audit log needs of a storage.Store: the chain, read
// and appended. Prune also needs storage.AuditPruner, asserted when it
// runs, since pruning is an optional capability of a backend.
type Store interface {
	AppendAudit(ctx context.Context, audit storage.AuditFunc) (storage.AuditRecord, error)
	ScanAudit(ctx context.Context, afterSeq uint64, fn func(storage.AuditRecord) (bool, error)) error
	AuditHead(ctx context.Context) (storage.AuditHead, error)
	AuditAnchor(ctx context.Context) (storage.AuditHead, error)
}

// Log records audit events in the store and mirrors them to a file.
// It is safe for concurrent use.
type Log struct {
	store  Store
	logger *slog.Logger
	now    func() time.Time
	path   string

	closed atomic.Bool

	mu      sync.Mutex // serialises the mirror: lines go out in seq order
	f       *os.File   // nil: no mirror configured, or lost until retryAt
	written uint64     // last seq in the current mirror file
	retryAt time.Time
	synced  bool // the mirror has been opened at least once

	mirrorFailures atomic.Uint64

	pruneMu sync.Mutex // one retention run at a time (retention.go)

	// Start-up verification (Options.VerifyOnStart), see startup.go.
	broken         atomic.Pointer[ChainError] // a break found in the background
	bgCancel       context.CancelFunc
	bgDone         chan struct{} // closed when the background pass ends
	bgErr          error         // its result, read after bgDone
	chainVerified  prometheus.Gauge
	chainBrokenSeq prometheus.Gauge

	// Signed checkpoints, see checkpoint.go.
	cpKey          crypto.PublicKey
	lastCheckpoint atomic.Uint64 // seq of the newest checkpoint known

	// Batch durability, see wal.go; wal is nil in "always" mode.
	// chainMu orders the chain: a WAL append holds it exclusively, the
	// commits of other events share it (so they still group-commit)
	// and take the pending events along in their transactions.
	chainMu           sync.RWMutex
	headMu            sync.Mutex        // head's updates by the sharing commits
	head              storage.AuditHead // last sealed event
	trimMu            sync.Mutex        // one WAL trim at a time (chainMu held)
	wal               *os.File          // chainMu exclusive, or shared + trimMu
	walPath           string
	walSize           int64 // as wal
	walRotateAt       int64 // walRotate; lowered by tests
	walBroken         error // chainMu: a torn line that could not be cut
	walReplayed       int
	walReplayedG      prometheus.Gauge
	walCommitFailures prometheus.Counter
	maxPending        int
	pendMu            sync.Mutex
	pending           []storage.AuditRecord // in the WAL, not yet in the store (pendMu)
	flushMu           sync.Mutex            // one drain at a time
	kick              chan struct{}
	commitStop        chan struct{}
	commitDone        chan struct{}
}

// New returns a Log writing to store. With a mirror path it opens (0600,
// append) the mirror file, checks it line by line against the store, and
// brings it up to date: a missing or empty file is filled from seq 1; a
// file whose lines all match the store gets the missing tail appended (a
// torn last line, as left by a crash, is cut off first); a file holding a
// line the store lacks or differs from is renamed to
// "<path>.corrupt-<UTC time>", logged at error level, and rewritten from the
// store. New fails if the mirror cannot be opened at all (a configuration
// error the operator must see at start-up); a file that opens but cannot be
// written (a full disk) does not, and, like every later mirror failure, is
// only logged and counted.
func New(ctx context.Context, store Store, opts Options) (*Log, error) {
	if store == nil {
		return nil, fmt.Errorf("audit: nil store")
	}
	l := &Log{
		store:  store,
		logger: opts.Logger,
		now:    opts.Now,
		path:   opts.MirrorPath,
		cpKey:  opts.CheckpointKey,
	}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.initMetrics(opts.Registerer)
	var background func(context.Context) error
	if opts.VerifyOnStart {
		// Before the mirror: repairing it from a tampered store would
		// overwrite the honest copy with the tampered one.
		var err error
		if background, err = l.verifyOnStart(ctx, opts.VerifyTail); err != nil {
			return nil, err
		}
	}
	if opts.WALPath != "" {
		if err := l.openWAL(ctx, opts.WALPath); err != nil {
			return nil, err
		}
	}
	if l.path != "" {
		l.mu.Lock()
		err := l.syncMirrorLocked(ctx)
		l.mu.Unlock()
		if err != nil && !errors.Is(err, errCatchUp) {
			l.closeWAL()
			return nil, err
		}
	}
	if background != nil {
		l.startBackground(ctx, background)
	}
	if l.wal != nil {
		interval := opts.SyncInterval
		if interval <= 0 {
			interval = DefaultSyncInterval
		}
		l.kick = make(chan struct{}, 1)
		l.commitStop, l.commitDone = make(chan struct{}), make(chan struct{})
		go l.runCommitter(interval, opts.Tick)
	}
	return l, nil
}

// Record appends ev to the audit chain and returns it as stored (seq, time,
// prev_hash and hash filled; strings bounded, see sanitize). The write is
// synchronous and durable as far as the store is: a nil error means the
// event is committed. A non-nil error means it is not, and the caller must
// fail the audited operation (fail closed). Seq, Time, PrevHash and Hash in
// ev are ignored. The mirror file is written after the commit; its
// failures never fail Record (see MirrorFailures).
//
// In batch mode (Options.WALPath) a token-use event (proxy.request) is
// instead written to the WAL, reaching the kernel but not the disk, and
// committed to the store within SyncInterval (wal.go).
func (l *Log) Record(ctx context.Context, ev Event) (Event, error) {
	if l.batched(ev) {
		return l.recordWAL(ev)
	}
	return l.RecordWith(ctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		return l.store.AppendAudit(ctx, build)
	})
}

// RecordWith is Record with the commit done by the caller, so that an
// operation and its audit event share one transaction (for example
// storage.Store.PutIntegration): commit must append build's record
// to the chain atomically with its own write, and return it. Everything
// else, including the mirror, is as in Record.
func (l *Log) RecordWith(ctx context.Context, ev Event, commit func(build storage.AuditFunc) (storage.AuditRecord, error)) (Event, error) {
	out, err := l.RecordAllWith(ctx, []Event{ev}, commit)
	if err != nil {
		return Event{}, err
	}
	return out[0], nil
}

// seal returns the stored line and hash of e (whose Hash is ignored).
func seal(e Event) ([]byte, string, error) {
	e.Hash = ""
	line, err := marshalLine(e)
	if err != nil {
		return nil, "", err
	}
	// Fast path: Hash is the struct's last field, so the line ends in
	// `,"hash":""}`. Dropping that member gives the pre-image object in one
	// step and splicing the hex hash in gives the final line, where the
	// general path (ComputeHash: parse to a map, delete, re-encode, then
	// encode the line again) costs three more JSON passes per event on the
	// hot path. Both give the same bytes (JCS output is unique;
	// TestSealFastPathMatchesGeneral checks), and verification always
	// takes the general path.
	if bytes.HasSuffix(line, emptyHashSuffix) {
		obj := append(bytes.Clone(line[:len(line)-len(emptyHashSuffix)]), '}')
		pre, err := jcs.Transform(obj)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		h := hashOf(e.PrevHash, pre)
		out := make([]byte, 0, len(line)+len(h))
		out = append(out, line[:len(line)-len(`""}`)]...)
		out = append(out, '"')
		out = append(out, h...)
		out = append(out, '"', '}')
		return out, h, nil
	}
	h, err := ComputeHash(e)
	if err != nil {
		return nil, "", err
	}
	e.Hash = h
	if line, err = marshalLine(e); err != nil {
		return nil, "", err
	}
	return line, h, nil
}

var emptyHashSuffix = []byte(`,"hash":""}`)

// MirrorFailures counts failed mirror writes, opens and repairs since New
// (for metrics).
func (l *Log) MirrorFailures() uint64 { return l.mirrorFailures.Load() }

// Reopen closes and reopens the mirror file (SIGHUP after logrotate with
// "create", not "copytruncate"). A new, empty file continues at the next seq
// (the rotated file holds the earlier lines, and each file verifies on its
// own as a segment); a non-empty one is checked and repaired as in New. An
// error leaves the mirror closed; Record retries later.
func (l *Log) Reopen(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if l.path == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeMirrorLocked()
	return l.syncMirrorLocked(ctx)
}

// Close syncs and closes the mirror. Record fails with ErrClosed afterwards.
// It does not close the store, which the caller owns.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.bgCancel != nil {
		// The caller closes the store next: stop reading it first.
		l.bgCancel()
		<-l.bgDone
	}
	var werr error
	if l.wal != nil {
		close(l.commitStop)
		<-l.commitDone
		// Drain: what fails here stays in the WAL, replayed at start.
		werr = l.Flush(context.Background())
		l.closeWAL()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(werr, l.closeMirrorLocked())
}

// closeWAL closes the WAL file (its lines, if any, wait for the next
// start).
func (l *Log) closeWAL() {
	l.chainMu.Lock()
	defer l.chainMu.Unlock()
	if l.wal != nil {
		_ = l.wal.Close()
		l.walBroken = ErrClosed
	}
}

// VerifyStore checks the whole chain held in the store, as Verify checks a
// file (an operator check; start-up uses Options.VerifyOnStart). It reads
// every event. A record the store cannot return in order (a deleted or
// mis-keyed event) is a *ChainError wrapping storage.ErrCorrupt.
//
// A pruned store's chain starts after its anchor (storage AuditAnchor):
// the first remaining event must chain on to the anchor's hash.
func (l *Log) VerifyStore(ctx context.Context) (VerifyResult, error) {
	if err := l.Flush(ctx); err != nil {
		return VerifyResult{}, err
	}
	anchor, err := l.store.AuditAnchor(ctx)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("audit: anchor: %w", err)
	}
	var v Verifier
	v.SetCheckpointKey(l.cpKey)
	v.Anchor(anchor.Seq, anchor.Hash)
	if err := l.scanChain(ctx, &v, anchor.Seq, math.MaxUint64); err != nil {
		return v.Result(), err
	}
	res := v.Result()
	if res.Events > 0 && !res.Anchored {
		return res, &ChainError{Seq: res.FirstSeq, Reason: "the store's chain does not start at seq 1 or at its anchor"}
	}
	return res, l.checkHead(ctx, res)
}
