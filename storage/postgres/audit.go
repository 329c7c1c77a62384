package postgres

import (
	"bytes"
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/vaultd/vaultd/storage"
)

// auditChunk is how many events ScanAudit reads per statement; fn runs
// between statements, with no transaction open.
const auditChunk = 256

// appendEvent is "the event of a write": with audit_meta locked FOR
// UPDATE (the last lock the transaction takes), build runs on the head,
// its records are checked (storage.ChainedRecords) and inserted and the
// head moves. A nil build does nothing and takes no lock.
func appendEvent(ctx context.Context, tx pgx.Tx, build storage.AuditFunc) (storage.AuditRecord, error) {
	if build == nil {
		return storage.AuditRecord{}, nil
	}
	var head storage.AuditHead
	var seq int64
	if err := tx.QueryRow(ctx, `SELECT head_seq, head_hash FROM audit_meta FOR UPDATE`).Scan(&seq, &head.Hash); err != nil {
		return storage.AuditRecord{}, err
	}
	head.Seq = uint64(seq)
	first, err := build(head)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	recs, err := storage.ChainedRecords(head, first)
	if err != nil {
		return storage.AuditRecord{}, err
	}
	seqs := make([]int64, len(recs))
	hashes := make([]string, len(recs))
	datas := make([]string, len(recs))
	for i, r := range recs {
		// data is text: PostgreSQL refuses invalid UTF-8 there, so refuse
		// it first, as a caller's record rather than a database error.
		if !utf8.Valid(r.Data) {
			return storage.AuditRecord{}, fmt.Errorf("%w: audit record %d data is not UTF-8", storage.ErrInvalidRecord, r.Seq)
		}
		seqs[i], hashes[i], datas[i] = int64(r.Seq), r.Hash, string(r.Data)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (seq, hash, data)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])`, seqs, hashes, datas); err != nil {
		return storage.AuditRecord{}, err
	}
	last := recs[len(recs)-1]
	if _, err := tx.Exec(ctx, `UPDATE audit_meta SET head_seq = $1, head_hash = $2`, int64(last.Seq), last.Hash); err != nil {
		return storage.AuditRecord{}, err
	}
	out := recs[0]
	for _, r := range recs[1:] {
		out.More = append(out.More, storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)})
	}
	return out, nil
}

// AppendAudit appends build(head) at the end of the chain, alone.
func (s *Store) AppendAudit(ctx context.Context, build storage.AuditFunc) (storage.AuditRecord, error) {
	if build == nil {
		return storage.AuditRecord{}, fmt.Errorf("%w: no audit record", storage.ErrInvalidRecord)
	}
	return s.write(ctx, "", build, func(pgx.Tx) error { return nil })
}

func (s *Store) auditMeta(ctx context.Context, cols string) (storage.AuditHead, error) {
	var h storage.AuditHead
	err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
		var seq int64
		if err := tx.QueryRow(ctx, `SELECT `+cols+` FROM audit_meta`).Scan(&seq, &h.Hash); err != nil {
			return err
		}
		h.Seq = uint64(seq)
		return nil
	})
	return h, err
}

// AuditHead returns the tail of the chain ({0, GenesisHash} when empty).
func (s *Store) AuditHead(ctx context.Context) (storage.AuditHead, error) {
	return s.auditMeta(ctx, "head_seq, head_hash")
}

// AuditAnchor returns the last pruned event ({0, GenesisHash} if none).
func (s *Store) AuditAnchor(ctx context.Context) (storage.AuditHead, error) {
	return s.auditMeta(ctx, "anchor_seq, anchor_hash")
}

// ScanAudit calls fn, in order, for every event with afterSeq < seq <= the
// head at the time of the call, skipping pruned ones. Each chunk is one
// statement (the anchor and the events in one snapshot); fn runs between
// them, so a slow consumer holds no transaction open.
func (s *Store) ScanAudit(ctx context.Context, afterSeq uint64, fn func(storage.AuditRecord) (bool, error)) error {
	head, err := s.AuditHead(ctx)
	if err != nil {
		return err
	}
	next := afterSeq
	for next < head.Seq {
		var chunk []storage.AuditRecord
		err := s.read(ctx, txOpts{readOnly: true}, func(tx pgx.Tx) error {
			chunk = chunk[:0] // a retried read starts over
			rows, err := tx.Query(ctx, `SELECT m.anchor_seq, e.seq, e.hash, e.data FROM audit_meta m
				LEFT JOIN LATERAL (SELECT seq, hash, data FROM audit_events
					WHERE seq > GREATEST($1, m.anchor_seq) AND seq <= $2 ORDER BY seq LIMIT $3) e ON true`,
				int64(next), int64(head.Seq), auditChunk)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var anchor int64
				var seq *int64
				var hash, data *string
				if err := rows.Scan(&anchor, &seq, &hash, &data); err != nil {
					return err
				}
				// Pruned events are gone: start at the first remaining one
				// (also when a prune ran since the last chunk).
				next = max(next, uint64(anchor))
				if seq == nil {
					continue
				}
				if want := next + 1 + uint64(len(chunk)); uint64(*seq) != want {
					return corrupt("audit chain has a gap: seq %d follows %d", *seq, want-1)
				}
				chunk = append(chunk, storage.AuditRecord{Seq: uint64(*seq), Hash: *hash, Data: []byte(*data)})
			}
			return rows.Err()
		})
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			if next >= head.Seq {
				return nil // a prune since the scan began reached its end
			}
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

// PruneAudit deletes up to max of the oldest events with seq <= upToSeq
// (never the head) and moves the anchor to the last one deleted, in one
// short transaction holding the audit_meta lock.
func (s *Store) PruneAudit(ctx context.Context, upToSeq uint64, max int) (int, error) {
	if max < 1 {
		return 0, fmt.Errorf("%w: prune at most %d events", storage.ErrInvalidRecord, max)
	}
	n := 0
	err := s.run(ctx, txOpts{}, func(tx pgx.Tx) error {
		var head, anchor int64
		if err := tx.QueryRow(ctx, `SELECT head_seq, anchor_seq FROM audit_meta FOR UPDATE`).Scan(&head, &anchor); err != nil {
			return err
		}
		limit := min(upToSeq, uint64(head)-min(uint64(head), 1))
		if limit <= uint64(anchor) {
			return nil
		}
		var last *int64
		var hash *string
		err := tx.QueryRow(ctx, `WITH gone AS (
				DELETE FROM audit_events WHERE seq IN (
					SELECT seq FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3)
				RETURNING seq, hash)
			SELECT count(*), (SELECT seq FROM gone ORDER BY seq DESC LIMIT 1), (SELECT hash FROM gone ORDER BY seq DESC LIMIT 1) FROM gone`,
			anchor, int64(limit), max).Scan(&n, &last, &hash)
		if err != nil || last == nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE audit_meta SET anchor_seq = $1, anchor_hash = $2`, *last, *hash)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ImportAuditAnchor starts the empty chain at anchor: one transaction,
// holding the audit_meta lock, checks that no event was ever appended or
// pruned and sets anchor and head both to anchor, so the next event is
// anchor.Seq+1 chaining on anchor.Hash (storage.AuditAnchorImporter).
func (s *Store) ImportAuditAnchor(ctx context.Context, anchor storage.AuditHead) error {
	if anchor.Seq == 0 || anchor.Hash == "" || anchor.Seq > 1<<63-1 {
		return fmt.Errorf("%w: audit anchor must have a seq > 0 and a hash", storage.ErrInvalidRecord)
	}
	return s.run(ctx, txOpts{}, func(tx pgx.Tx) error {
		var head, pruned int64
		var events bool
		if err := tx.QueryRow(ctx, `SELECT head_seq, anchor_seq FROM audit_meta FOR UPDATE`).Scan(&head, &pruned); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_events)`).Scan(&events); err != nil {
			return err
		}
		if head != 0 || pruned != 0 || events {
			return fmt.Errorf("%w: the audit chain is not empty (head seq %d, anchor seq %d)", storage.ErrInvalidRecord, head, pruned)
		}
		_, err := tx.Exec(ctx, `UPDATE audit_meta SET anchor_seq = $1, anchor_hash = $2, head_seq = $1, head_hash = $2`, int64(anchor.Seq), anchor.Hash)
		return err
	})
}
