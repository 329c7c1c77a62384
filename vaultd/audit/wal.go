package audit

// Batch durability ([audit] sync = "batch"): token-use events
// (proxy.request) are sealed in memory at the next seq and appended with
// one write(2), no fsync, to an append-only file beside the database (the
// WAL) before Record returns. The page cache survives a vaultd crash;
// a committer moves them into the store every SyncInterval (and as soon
// as walKick are pending), where they are fsynced. Every other event (a
// state change, a checkpoint) shares the chain lock (excluding WAL
// appends, not other commits, which the store orders and group-commits)
// and commits the pending events ahead of its own in its transaction, so the store's chain
// stays one contiguous, ordered sequence. At start-up New replays the WAL
// lines that chain on from the store's head.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/vaultd/vaultd/storage"
)

const (
	// walKick is how many pending events wake the committer before its
	// interval ends.
	walKick = 512
	// walRotate is the WAL size above which a drain that leaves events
	// pending rewrites the file with only those (when none is pending the
	// file is just truncated).
	walRotate = 4 << 20
	// walMaxPending is how many token-use events may wait for the store
	// (failing to commit them) before Record fails closed.
	walMaxPending = 1 << 16
	// DefaultSyncInterval is Options.SyncInterval's default.
	DefaultSyncInterval = 10 * time.Millisecond
)

// errNothingPending ends a drain whose events another commit took first.
var errNothingPending = errors.New("audit: nothing pending")

// batched reports whether ev goes through the WAL: a token-use event in
// batch mode.
func (l *Log) batched(ev Event) bool {
	return l.wal != nil && ev.Action == ActionProxyRequest
}

// recordWAL seals ev at the in-memory head and appends it to the WAL.
func (l *Log) recordWAL(ev Event) (Event, error) {
	if l.closed.Load() {
		return Event{}, ErrClosed
	}
	if err := l.refuseIfBroken(); err != nil {
		return Event{}, err
	}
	ev, err := sanitize(ev)
	if err != nil {
		return Event{}, err
	}
	l.chainMu.Lock()
	defer l.chainMu.Unlock()
	if l.walBroken != nil {
		return Event{}, l.walBroken
	}
	if l.head.Seq >= maxSafeSeq {
		return Event{}, ErrChainFull
	}
	l.pendMu.Lock()
	waiting := len(l.pending)
	l.pendMu.Unlock()
	if waiting >= l.maxPending {
		// The store has not taken the events for a while: fail closed
		// rather than let the trail live only in the WAL.
		return Event{}, fmt.Errorf("audit: record %s: %d token-use events are waiting for the store", ev.Action, waiting)
	}
	ev.Seq = l.head.Seq + 1
	ev.Time = NewTimestamp(l.now())
	ev.PrevHash = l.head.Hash
	line, hash, err := seal(ev)
	if err != nil {
		return Event{}, err
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if n, err := l.wal.Write(buf); err != nil {
		if n > 0 {
			// Never leave a torn line in the middle of the file.
			if terr := l.wal.Truncate(l.walSize); terr != nil {
				l.walBroken = fmt.Errorf("audit: WAL %s: %w (and cannot cut a torn line: %v)", l.walPath, err, terr)
			}
		}
		return Event{}, fmt.Errorf("audit: record %s: WAL: %w", ev.Action, err)
	}
	l.walSize += int64(len(buf))
	ev.Hash = hash
	l.head = storage.AuditHead{Seq: ev.Seq, Hash: hash}
	l.pendMu.Lock()
	l.pending = append(l.pending, storage.AuditRecord{Seq: ev.Seq, Hash: hash, Data: line})
	n := len(l.pending)
	l.pendMu.Unlock()
	if n >= walKick {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return ev, nil
}

// pendingAfter returns copies of the pending events after seq (an
// AuditFunc's head), which must follow it without a gap.
func (l *Log) pendingAfter(head storage.AuditHead) ([]storage.AuditRecord, error) {
	if l.wal == nil {
		return nil, nil
	}
	l.pendMu.Lock()
	defer l.pendMu.Unlock()
	i := 0
	for i < len(l.pending) && l.pending[i].Seq <= head.Seq {
		i++
	}
	if i == len(l.pending) {
		return nil, nil
	}
	if l.pending[i].Seq != head.Seq+1 {
		return nil, fmt.Errorf("audit: pending event seq %d does not follow the store's head %d", l.pending[i].Seq, head.Seq)
	}
	out := make([]storage.AuditRecord, len(l.pending)-i)
	for j, r := range l.pending[i:] {
		out[j] = storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: r.Data}
	}
	return out, nil
}

// committed drops the pending events up to seq, now in the store.
func (l *Log) committed(seq uint64) {
	l.pendMu.Lock()
	defer l.pendMu.Unlock()
	i := 0
	for i < len(l.pending) && l.pending[i].Seq <= seq {
		i++
	}
	l.pending = append(l.pending[:0], l.pending[i:]...)
}

// trimWAL empties the WAL once every line in it is in the store
// (chainMu held, shared or not, so no append runs): truncated when nothing is pending,
// rewritten with the pending lines when it has grown large. Otherwise
// the committed lines stay; replay skips them.
func (l *Log) trimWAL() {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	if l.walSize == 0 {
		return
	}
	l.pendMu.Lock()
	pend := l.pending
	l.pendMu.Unlock()
	if len(pend) == 0 {
		if err := l.wal.Truncate(0); err != nil {
			l.logger.Warn("audit WAL: cannot truncate", "path", l.walPath, "err", err)
			return
		}
		l.walSize = 0
		return
	}
	if l.walSize < l.walRotateAt {
		return
	}
	var buf []byte
	for _, r := range pend {
		buf = append(append(buf, r.Data...), '\n')
	}
	tmp := l.walPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		if _, err = f.Write(buf); err == nil {
			err = os.Rename(tmp, l.walPath)
		}
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}
	if err != nil {
		l.logger.Warn("audit WAL: cannot rotate", "path", l.walPath, "err", err)
		return
	}
	_ = l.wal.Close()
	l.wal, l.walSize = f, int64(len(buf))
}

// Flush commits every pending token-use event to the store (batch mode;
// a no-op otherwise). The committer calls it every SyncInterval; readers
// of the store's chain (Query, Prune, VerifyStore, a backup) call it
// first, so they see every event recorded before.
func (l *Log) Flush(ctx context.Context) error {
	if l.wal == nil {
		return nil
	}
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.pendMu.Lock()
	n := len(l.pending)
	l.pendMu.Unlock()
	if n == 0 {
		return nil
	}
	rec, err := l.store.AppendAudit(context.WithoutCancel(ctx), func(head storage.AuditHead) (storage.AuditRecord, error) {
		pend, err := l.pendingAfter(head)
		if err != nil {
			return storage.AuditRecord{}, err
		}
		if len(pend) == 0 {
			return storage.AuditRecord{}, errNothingPending
		}
		first := pend[0]
		first.More = pend[1:]
		return first, nil
	})
	if errors.Is(err, errNothingPending) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: commit pending events: %w", err)
	}
	recs := append([]storage.AuditRecord{rec}, rec.More...)
	l.committed(recs[len(recs)-1].Seq)
	l.chainMu.RLock()
	l.trimWAL()
	l.chainMu.RUnlock()
	if l.path != "" {
		for _, r := range recs {
			l.mirror(context.WithoutCancel(ctx), r)
		}
	}
	return nil
}

// runCommitter drains the WAL every interval, or sooner when kicked,
// until stop is closed.
func (l *Log) runCommitter(interval time.Duration, tick <-chan time.Time) {
	defer close(l.commitDone)
	if tick == nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.commitStop:
			return
		case <-tick:
		case <-l.kick:
		}
		if err := l.Flush(context.Background()); err != nil {
			l.walCommitFailures.Inc()
			l.logger.Error("audit WAL: cannot commit pending events (retried)", "err", err)
		}
	}
}

// openWAL replays the WAL at path into the store and opens it for
// appending; the in-memory head is the store's head afterwards.
func (l *Log) openWAL(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("audit: WAL: %w", err)
	}
	n, err := l.replayWAL(ctx, f)
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: WAL %s: %w", path, err)
	}
	if n > 0 {
		l.logger.Info("audit WAL: replayed token-use events into the store", "path", path, "events", n)
	}
	l.walReplayed = n
	l.walReplayedG.Set(float64(n))
	if err := f.Truncate(0); err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: WAL %s: %w", path, err)
	}
	if l.head, err = l.store.AuditHead(ctx); err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: head: %w", err)
	}
	l.wal, l.walPath, l.maxPending, l.walRotateAt = f, path, walMaxPending, walRotate
	return nil
}

// replayWAL commits the complete lines of f that chain on from the
// store's head and returns how many. Lines at or below the head (already
// committed) are skipped; a torn last line (no newline: a crash during
// the write) is dropped; any other line that does not chain on is an
// error naming its seq.
func (l *Log) replayWAL(ctx context.Context, f *os.File) (int, error) {
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return 0, err
	}
	var recs []storage.AuditRecord
	r := bufio.NewReaderSize(f, 64<<10)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(bytes.TrimSpace(line)) > 0 {
				l.logger.Warn("audit WAL: dropping a torn last line", "line", lineNo)
			}
			break
		}
		if err != nil {
			return 0, err
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return 0, fmt.Errorf("line %d is not an audit event (%v): refusing to start; move the file aside only if its events may be lost", lineNo, err)
		}
		if ev.Seq <= head.Seq {
			continue // committed before the crash
		}
		h, herr := ComputeHash(ev)
		if ev.Seq != head.Seq+1 || ev.PrevHash != head.Hash || herr != nil || h != ev.Hash {
			return 0, &ChainError{Seq: ev.Seq, Reason: fmt.Sprintf("WAL line %d does not chain on from the store's head (seq %d): refusing to start; the database may have been restored or edited, move the WAL aside only if its events may be lost", lineNo, head.Seq)}
		}
		recs = append(recs, storage.AuditRecord{Seq: ev.Seq, Hash: ev.Hash, Data: bytes.Clone(line)})
		head = storage.AuditHead{Seq: ev.Seq, Hash: ev.Hash}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	_, err = l.store.AppendAudit(ctx, func(h storage.AuditHead) (storage.AuditRecord, error) {
		if h.Seq+1 != recs[0].Seq {
			return storage.AuditRecord{}, fmt.Errorf("store head moved to %d during replay", h.Seq)
		}
		first := recs[0]
		first.More = recs[1:]
		return first, nil
	})
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	return len(recs), nil
}

// WALReplayed is how many events New replayed from the WAL.
func (l *Log) WALReplayed() int { return l.walReplayed }
