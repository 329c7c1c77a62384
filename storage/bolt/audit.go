package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// auditChunk is how many audit records ScanAudit copies per read
// transaction before calling back outside it.
const auditChunk = 256

func auditBuckets(tx *bbolt.Tx) (sys, audit *bbolt.Bucket, err error) {
	sys, audit = tx.Bucket(bucketSys), tx.Bucket(bucketAudit)
	if sys == nil || audit == nil {
		return nil, nil, corrupt("sys or audit bucket missing")
	}
	return sys, audit, nil
}

// AppendAudit appends build(head) at the end of the chain in one write
// transaction. The record's Seq must be head.Seq+1 and its Data one JSON
// line whose "seq" and "hash" fields equal the record's (the store reads
// Hash back from Data); otherwise storage.ErrInvalidRecord. Errors
// returned by build are returned unchanged.
func (s *Store) AppendAudit(ctx context.Context, build storage.AuditFunc) (storage.AuditRecord, error) {
	if build == nil {
		return storage.AuditRecord{}, fmt.Errorf("%w: no audit record", storage.ErrInvalidRecord)
	}
	var out storage.AuditRecord
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, err = appendAuditTx(tx, build)
		return err
	})
	if err != nil {
		return storage.AuditRecord{}, err
	}
	return out, nil
}

// maybeAppendAudit appends build's event inside tx unless build is nil: the
// shared tail of the audited writes, which commit a record and its event
// together or neither.
func maybeAppendAudit(tx *bbolt.Tx, build storage.AuditFunc, rec *storage.AuditRecord) error {
	if build == nil {
		return nil
	}
	r, err := appendAuditTx(tx, build)
	if err != nil {
		// The record is already written in tx: a rejection here would let
		// a batch commit it without its event. A plain error rolls the
		// transaction back (bbolt re-runs the rest of the batch without it).
		if rj, ok := err.(rejection); ok {
			return rj.err
		}
		return err
	}
	*rec = r
	return nil
}

// appendAuditTx is AppendAudit's transaction body, shared with the
// audited writes.
func appendAuditTx(tx *bbolt.Tx, build storage.AuditFunc) (storage.AuditRecord, error) {
	sys, ab, err := auditBuckets(tx)
	if err != nil {
		return storage.AuditRecord{}, reject(err)
	}
	head, err := readAuditHead(sys)
	if err != nil {
		return storage.AuditRecord{}, reject(err)
	}
	// The head and the last stored event must agree, or the chain
	// was damaged (or edited) outside this store.
	var last uint64
	if k, _ := ab.Cursor().Last(); k != nil {
		if len(k) != 8 {
			return storage.AuditRecord{}, reject(corrupt("audit key of %d bytes", len(k)))
		}
		last = binary.BigEndian.Uint64(k)
	}
	if last != head.Seq {
		return storage.AuditRecord{}, reject(corrupt("audit head is at seq %d but the last stored event is %d", head.Seq, last))
	}
	rec, err := build(head)
	if err != nil {
		return storage.AuditRecord{}, reject(err)
	}
	recs, err := storage.ChainedRecords(head, rec)
	if err != nil {
		return storage.AuditRecord{}, reject(err)
	}
	out := storage.AuditRecord{}
	for i, r := range recs {
		if err := ab.Put(seqKey(r.Seq), r.Data); err != nil {
			return storage.AuditRecord{}, err
		}
		stored := storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)}
		if i == 0 {
			out = stored
		} else {
			out.More = append(out.More, stored)
		}
	}
	prev := recs[len(recs)-1]
	if err := putAuditHead(sys, storage.AuditHead{Seq: prev.Seq, Hash: prev.Hash}); err != nil {
		return storage.AuditRecord{}, err
	}
	return out, nil
}

// AuditHead returns the tail of the chain ({0, GenesisHash} when empty).
func (s *Store) AuditHead(ctx context.Context) (storage.AuditHead, error) {
	var head storage.AuditHead
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		sys, _, err := auditBuckets(tx)
		if err != nil {
			return err
		}
		head, err = readAuditHead(sys)
		return err
	})
	return head, err
}

// ScanAudit calls fn, in order, for every record with afterSeq < Seq <=
// the head at the time of the call (so the scan ends even while others
// append), skipping pruned ones (Seq <= the anchor). Records are copied out in chunks and fn runs outside any
// transaction, so a slow consumer (an HTTP export) never holds one open.
func (s *Store) ScanAudit(ctx context.Context, afterSeq uint64, fn func(storage.AuditRecord) (bool, error)) error {
	head, err := s.AuditHead(ctx)
	if err != nil {
		return err
	}
	next := afterSeq
	for next < head.Seq {
		chunk := make([]storage.AuditRecord, 0, min(auditChunk, head.Seq-next))
		err := s.read(ctx, func(tx *bbolt.Tx) error {
			chunk = chunk[:0]
			sys, ab, err := auditBuckets(tx)
			if err != nil {
				return err
			}
			// Pruned events are gone: start at the first remaining one
			// (also when a prune ran since the last chunk).
			anchor, err := readAuditAnchor(sys)
			if err != nil {
				return err
			}
			next = max(next, anchor.Seq)
			c := ab.Cursor()
			for k, v := c.Seek(seqKey(next + 1)); k != nil && len(chunk) < auditChunk; k, v = c.Next() {
				rec, err := decodeAudit(k, v)
				if err != nil {
					return err
				}
				if rec.Seq > head.Seq {
					break
				}
				if want := next + 1 + uint64(len(chunk)); rec.Seq != want {
					return corrupt("audit chain has a gap: seq %d follows %d", rec.Seq, want-1)
				}
				chunk = append(chunk, rec)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			// Fewer records than the head claims: the chain has a gap.
			return corrupt("audit head is at seq %d but no event follows seq %d", head.Seq, next)
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
