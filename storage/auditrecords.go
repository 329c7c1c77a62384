package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// ChainedRecords checks what an AuditFunc built on head: the record and its
// More, each at the next seq, none nesting More of its own, each Data one
// JSON line that carries the record's own seq and hash. It returns them in
// chain order with Data copied and More cleared. Every backend applies it
// before storing, so all accept and refuse the same events; a refusal
// wraps ErrInvalidRecord.
func ChainedRecords(head AuditHead, rec AuditRecord) ([]AuditRecord, error) {
	out := make([]AuditRecord, 0, 1+len(rec.More))
	prev := head
	for i, r := range append([]AuditRecord{rec}, rec.More...) {
		if i > 0 && len(r.More) > 0 {
			return nil, fmt.Errorf("%w: nested audit records", ErrInvalidRecord)
		}
		if r.Seq != prev.Seq+1 {
			return nil, fmt.Errorf("%w: audit record seq %d, want %d", ErrInvalidRecord, r.Seq, prev.Seq+1)
		}
		if err := CheckAuditData(r); err != nil {
			return nil, err
		}
		out = append(out, AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)})
		prev = AuditHead{Seq: r.Seq, Hash: r.Hash}
	}
	return out, nil
}

// CheckAuditData verifies that Data is one JSON line carrying the record's
// own seq and hash, which is what lets a store read Hash back from Data
// instead of keeping it twice.
func CheckAuditData(rec AuditRecord) error {
	if rec.Hash == "" {
		return fmt.Errorf("%w: audit record %d has no hash", ErrInvalidRecord, rec.Seq)
	}
	if i := bytes.IndexAny(bytes.TrimRight(rec.Data, "\n"), "\r\n"); i >= 0 {
		return fmt.Errorf("%w: audit record %d data spans lines", ErrInvalidRecord, rec.Seq)
	}
	var p struct {
		Seq  *uint64 `json:"seq"`
		Hash *string `json:"hash"`
	}
	if err := json.Unmarshal(rec.Data, &p); err != nil {
		return fmt.Errorf("%w: audit record %d data is not a JSON object: %v", ErrInvalidRecord, rec.Seq, err)
	}
	if p.Seq == nil || *p.Seq != rec.Seq || p.Hash == nil || *p.Hash != rec.Hash {
		return fmt.Errorf("%w: audit record %d data must carry \"seq\" and \"hash\" equal to the record's", ErrInvalidRecord, rec.Seq)
	}
	return nil
}
