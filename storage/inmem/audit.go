package inmem

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/vaultd/vaultd/storage"
)

// prepareAudit runs build against the head and checks what it returns
// (the event and its More, each at the next seq), without storing
// anything: the caller holds the write lock, applies its own change and
// then commitAudit(pending), so a refused event leaves the record
// untouched. build nil means no event (pending and rec empty).
func (s *Store) prepareAudit(build storage.AuditFunc) (pending []storage.AuditRecord, rec storage.AuditRecord, err error) {
	if build == nil {
		return nil, storage.AuditRecord{}, nil
	}
	first, err := build(s.head)
	if err != nil {
		return nil, storage.AuditRecord{}, err
	}
	pending, err = storage.ChainedRecords(s.head, first)
	if err != nil {
		return nil, storage.AuditRecord{}, err
	}
	rec = cloneRecord(pending[0])
	for _, r := range pending[1:] {
		rec.More = append(rec.More, cloneRecord(r))
	}
	return pending, rec, nil
}

// commitAudit appends records prepared by prepareAudit and moves the head.
// The caller holds the write lock.
func (s *Store) commitAudit(pending []storage.AuditRecord) {
	if len(pending) == 0 {
		return
	}
	s.audit = append(s.audit, pending...)
	last := pending[len(pending)-1]
	s.head = storage.AuditHead{Seq: last.Seq, Hash: last.Hash}
}

func cloneRecord(r storage.AuditRecord) storage.AuditRecord {
	return storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)}
}

// AppendAudit appends build(head) at the end of the chain. The record's
// Seq must be head.Seq+1 (each of More's the next) and its Data one JSON
// line whose "seq" and "hash" equal the record's; otherwise
// storage.ErrInvalidRecord. Errors returned by build are returned
// unchanged. build runs under the write lock, exactly once.
func (s *Store) AppendAudit(ctx context.Context, build storage.AuditFunc) (storage.AuditRecord, error) {
	if build == nil {
		return storage.AuditRecord{}, fmt.Errorf("%w: no audit record", storage.ErrInvalidRecord)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	defer unlock()
	pending, rec, err := s.prepareAudit(build)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	s.commitAudit(pending)
	return rec, nil
}

// AuditHead returns the tail of the chain ({0, GenesisHash} when empty).
func (s *Store) AuditHead(ctx context.Context) (storage.AuditHead, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.AuditHead{}, err
	}
	defer unlock()
	return s.head, nil
}

// AuditAnchor returns the last pruned event's seq and hash ({0,
// GenesisHash} if nothing was pruned).
func (s *Store) AuditAnchor(ctx context.Context) (storage.AuditHead, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return storage.AuditHead{}, err
	}
	defer unlock()
	return s.anchor, nil
}

// ScanAudit calls fn, in order, for every record with afterSeq < Seq <=
// the head at the time of the call (so the scan ends even while others
// append), skipping pruned ones. Records are copied out in chunks under
// the read lock and fn runs outside it.
func (s *Store) ScanAudit(ctx context.Context, afterSeq uint64, fn func(storage.AuditRecord) (bool, error)) error {
	head, err := s.AuditHead(ctx)
	if err != nil {
		return err
	}
	next := afterSeq
	for next < head.Seq {
		chunk, err := s.auditChunk(ctx, &next, head.Seq)
		if err != nil {
			return err
		}
		if len(chunk) == 0 && next >= head.Seq {
			return nil
		}
		if len(chunk) == 0 {
			// Cannot happen while the head is never pruned; fail loudly
			// rather than loop.
			return fmt.Errorf("%w: audit head is at seq %d but no event follows seq %d", storage.ErrCorrupt, head.Seq, next)
		}
		for _, rec := range chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			cont, err := fn(rec)
			if err != nil {
				return err
			}
			if !cont {
				return nil
			}
		}
		next = chunk[len(chunk)-1].Seq
	}
	return nil
}

// auditChunk copies up to scanChunk records with *next < Seq <= upTo,
// first moving *next past the anchor (pruned events are gone).
func (s *Store) auditChunk(ctx context.Context, next *uint64, upTo uint64) ([]storage.AuditRecord, error) {
	_, unlock, err := s.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	*next = max(*next, s.anchor.Seq)
	if *next >= upTo {
		// A prune since the scan began removed everything up to its end.
		return nil, nil
	}
	start := *next - s.anchor.Seq // index of seq *next+1 in s.audit
	if start >= uint64(len(s.audit)) {
		return nil, nil
	}
	end := min(uint64(len(s.audit)), start+scanChunk, upTo-s.anchor.Seq)
	out := make([]storage.AuditRecord, 0, end-start)
	for _, r := range s.audit[start:end] {
		out = append(out, cloneRecord(r))
	}
	return out, nil
}

// PruneAudit deletes up to max of the oldest events with seq <= upToSeq
// (never the head) and moves the anchor to the last one deleted, in one
// step.
func (s *Store) PruneAudit(ctx context.Context, upToSeq uint64, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d events", storage.ErrInvalidRecord, max)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	limit := min(upToSeq, s.head.Seq-min(s.head.Seq, 1))
	if limit <= s.anchor.Seq {
		return 0, nil
	}
	n := min(limit-s.anchor.Seq, uint64(max), uint64(len(s.audit)))
	if n == 0 {
		return 0, nil
	}
	last := s.audit[n-1]
	// Copy the rest so the pruned events' memory is released, not kept
	// alive by the backing array.
	s.audit = slices.Clone(s.audit[n:])
	s.anchor = storage.AuditHead{Seq: last.Seq, Hash: last.Hash}
	return int(n), nil
}

// ImportAuditAnchor starts the empty chain at anchor: anchor and head both
// become anchor, so the next event is anchor.Seq+1 chaining on anchor.Hash
// (storage.AuditAnchorImporter).
func (s *Store) ImportAuditAnchor(ctx context.Context, anchor storage.AuditHead) error {
	if anchor.Seq == 0 || anchor.Hash == "" {
		return fmt.Errorf("%w: audit anchor must have a seq > 0 and a hash", storage.ErrInvalidRecord)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if s.head.Seq != 0 || s.anchor.Seq != 0 || len(s.audit) != 0 {
		return fmt.Errorf("%w: the audit chain is not empty (head seq %d, anchor seq %d)", storage.ErrInvalidRecord, s.head.Seq, s.anchor.Seq)
	}
	s.anchor, s.head = anchor, anchor
	return nil
}
