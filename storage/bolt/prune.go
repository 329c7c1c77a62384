package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// keyAuditAnchor holds the seq and hash of the last pruned audit event, in
// the audit head's format. Absent until the first prune: {0, GenesisHash}.
var keyAuditAnchor = []byte("audit_anchor")

func readAuditAnchor(sys *bbolt.Bucket) (storage.AuditHead, error) {
	v := sys.Get(keyAuditAnchor)
	if v == nil {
		return storage.AuditHead{Seq: 0, Hash: storage.GenesisHash}, nil
	}
	var r auditHeadRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return storage.AuditHead{}, corrupt("audit anchor: %v", err)
	}
	if r.V != recordVersion || len(r.Hash) != len(storage.GenesisHash) {
		return storage.AuditHead{}, corrupt("audit anchor: version %d, hash %q", r.V, r.Hash)
	}
	return storage.AuditHead{Seq: r.Seq, Hash: r.Hash}, nil
}

// AuditAnchor returns the last pruned event's seq and hash ({0,
// GenesisHash} if nothing was pruned).
func (s *Store) AuditAnchor(ctx context.Context) (storage.AuditHead, error) {
	var a storage.AuditHead
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		sys, _, err := auditBuckets(tx)
		if err != nil {
			return err
		}
		a, err = readAuditAnchor(sys)
		return err
	})
	return a, err
}

// PruneAudit deletes up to max of the oldest events with seq <= upToSeq
// (never the head) and moves the anchor to the last one, in one write
// transaction. The remaining chain must start right after the anchor, or
// the store is corrupt.
func (s *Store) PruneAudit(ctx context.Context, upToSeq uint64, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d events", storage.ErrInvalidRecord, max)
	}
	var n int
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		n = 0 // a batch may run this more than once
		sys, ab, err := auditBuckets(tx)
		if err != nil {
			return reject(err)
		}
		head, err := readAuditHead(sys)
		if err != nil {
			return reject(err)
		}
		anchor, err := readAuditAnchor(sys)
		if err != nil {
			return reject(err)
		}
		limit := min(upToSeq, head.Seq-min(head.Seq, 1))
		if limit <= anchor.Seq {
			return reject(nil)
		}
		// Keys first, deletes after: deleting under a cursor skips keys.
		var keys [][]byte
		last := anchor
		c := ab.Cursor()
		for k, v := c.First(); k != nil && len(keys) < max; k, v = c.Next() {
			if len(k) != 8 {
				return reject(corrupt("audit key of %d bytes", len(k)))
			}
			seq := binary.BigEndian.Uint64(k)
			if seq > limit {
				break
			}
			if seq != last.Seq+1 {
				return reject(corrupt("audit chain has a gap: seq %d follows %d", seq, last.Seq))
			}
			rec, err := decodeAudit(k, v)
			if err != nil {
				return reject(err)
			}
			keys = append(keys, seqKey(seq))
			last = storage.AuditHead{Seq: rec.Seq, Hash: rec.Hash}
		}
		if len(keys) == 0 {
			return reject(nil)
		}
		for _, k := range keys {
			if err := ab.Delete(k); err != nil {
				return err
			}
		}
		b, err := json.Marshal(auditHeadRecord{V: recordVersion, Seq: last.Seq, Hash: last.Hash})
		if err != nil {
			return err
		}
		if err := sys.Put(keyAuditAnchor, b); err != nil {
			return err
		}
		n = len(keys)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
