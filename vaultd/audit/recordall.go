package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vaultd/vaultd/storage"
)

// RecordAllWith is RecordWith for several events that must commit in one
// transaction with the caller's write and with each other, in order (a
// refresh and the scope.drift it revealed): build returns the first
// event's record with the rest in its More. It returns the events as
// stored.
func (l *Log) RecordAllWith(ctx context.Context, evs []Event, commit func(build storage.AuditFunc) (storage.AuditRecord, error)) ([]Event, error) {
	return l.recordAll(ctx, evs, nil, commit)
}

// recordAll is RecordAllWith; fill, if not nil, makes the first event's
// detail from the head it follows (a checkpoint signs it), inside build.
func (l *Log) recordAll(ctx context.Context, evs []Event, fill func(storage.AuditHead) (string, error), commit func(build storage.AuditFunc) (storage.AuditRecord, error)) ([]Event, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if err := l.refuseIfBroken(); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, errors.New("audit: no event to record")
	}
	clean := make([]Event, len(evs))
	for i, ev := range evs {
		var err error
		if clean[i], err = sanitize(ev); err != nil {
			return nil, err
		}
	}
	if l.wal != nil {
		// Batch mode: no token-use event may take a seq while this
		// commit is in flight (other commits may: the store orders them);
		// its transaction carries the pending ones first (wal.go).
		l.chainMu.RLock()
		defer l.chainMu.RUnlock()
		if l.walBroken != nil {
			return nil, l.walBroken
		}
	}
	// built holds the events of the latest build call, which is the
	// committed one (a store re-runs build on a retried batch); the answer
	// is taken from it rather than by decoding the lines just encoded.
	var built []Event
	rec, err := commit(func(head storage.AuditHead) (storage.AuditRecord, error) {
		// Pure apart from reading the clock (and fill's signing): the
		// store may call this again on a retried batch, and only the
		// committed call counts.
		built = built[:0]
		var first storage.AuditRecord
		pend, err := l.pendingAfter(head)
		if err != nil {
			return storage.AuditRecord{}, err
		}
		for i, r := range pend {
			if i == 0 {
				first = r
			} else {
				first.More = append(first.More, r)
			}
			head = storage.AuditHead{Seq: r.Seq, Hash: r.Hash}
		}
		for i, ev := range clean {
			if head.Seq >= maxSafeSeq {
				return storage.AuditRecord{}, ErrChainFull
			}
			if i == 0 && fill != nil {
				detail, err := fill(head)
				if err != nil {
					return storage.AuditRecord{}, err
				}
				ev.Detail = clamp(detail, maxDetail)
			}
			ev.Seq = head.Seq + 1
			ev.Time = NewTimestamp(l.now())
			ev.PrevHash = head.Hash
			line, hash, err := seal(ev)
			if err != nil {
				return storage.AuditRecord{}, err
			}
			r := storage.AuditRecord{Seq: ev.Seq, Hash: hash, Data: line}
			ev.Hash = hash
			built = append(built, ev)
			if i == 0 && len(pend) == 0 {
				first = r
			} else {
				first.More = append(first.More, r)
			}
			head = storage.AuditHead{Seq: r.Seq, Hash: hash}
		}
		return first, nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: record %s: %w", clean[0].Action, err)
	}
	all := append([]storage.AuditRecord{rec}, rec.More...)
	if len(all) < len(clean) || (l.wal == nil && len(all) != len(clean)) {
		return nil, fmt.Errorf("audit: store committed %d of %d events", len(all), len(clean))
	}
	if l.wal != nil {
		// The pending token-use events went first; the last are ours.
		last := all[len(all)-1]
		l.headMu.Lock()
		if last.Seq > l.head.Seq {
			l.head = storage.AuditHead{Seq: last.Seq, Hash: last.Hash}
		}
		l.headMu.Unlock()
		l.committed(last.Seq)
		l.trimWAL()
	}
	recs := all[len(all)-len(clean):]
	out := make([]Event, len(recs))
	for i, r := range recs {
		if i < len(built) && built[i].Seq == r.Seq && built[i].Hash == r.Hash {
			out[i] = built[i]
			continue
		}
		// A store that committed other bytes than the last build (none
		// does): trust what it stored.
		if err := json.Unmarshal(r.Data, &out[i]); err != nil {
			return nil, fmt.Errorf("audit: decode committed seq %d: %w", r.Seq, err)
		}
	}
	if l.path != "" {
		// The commit happened; a cancelled caller must not leave the
		// mirror behind. The mirror catches up on any seq it skipped.
		for _, r := range all {
			l.mirror(context.WithoutCancel(ctx), r)
		}
	}
	return out, nil
}
