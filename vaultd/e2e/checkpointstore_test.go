package e2e

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestCheckpointRewrittenStoreRefusesStart: someone able to rewrite the
// whole database while vaultd is stopped edits an old event and recomputes
// every later hash and the head, so the hash chain alone verifies. The
// signed checkpoints do not: vaultd refuses to start, naming the
// checkpoint, and nothing is served.
func TestCheckpointRewrittenStoreRefusesStart(t *testing.T) {
	e := New(t, Options{CheckpointInterval: "1h"})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	e.CreateTenant("globex")
	must(t, e.Stop()) // the shutdown checkpoint signs the head

	db, err := bbolt.Open(e.DBPath, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	must(t, err)
	var lines []string
	must(t, db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		if b == nil {
			return errors.New("no audit bucket")
		}
		return b.ForEach(func(_, v []byte) error { lines = append(lines, string(v)); return nil })
	}))
	if len(lines) < 4 || !strings.Contains(lines[len(lines)-1], `"audit.checkpoint"`) {
		must(t, db.Close())
		t.Fatalf("expected a trail ending in the shutdown checkpoint, got %d events", len(lines))
	}
	// Event 2 (the first tenant.create or token.store) now names another
	// actor; every later hash, and the head, recomputed.
	rewritten := rechain(t, lines, 1, func(m map[string]json.RawMessage) {
		m["actor"], _ = json.Marshal("someone-else")
	})
	var last struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	must(t, json.Unmarshal([]byte(rewritten[len(rewritten)-1]), &last))
	must(t, db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		for i, l := range rewritten {
			var ev struct {
				Seq uint64 `json:"seq"`
			}
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				return err
			}
			if i >= 1 {
				if err := b.Put(binary.BigEndian.AppendUint64(nil, ev.Seq), []byte(l)); err != nil {
					return err
				}
			}
		}
		head, _ := json.Marshal(map[string]any{"v": 1, "seq": last.Seq, "hash": last.Hash})
		return tx.Bucket([]byte("sys")).Put([]byte("audit_head"), head)
	}))
	must(t, db.Close())

	// The chain alone is fooled: an export of the rewritten store verifies
	// without the key.
	f := writeAuditLines(t, e.Dir, "rewritten-store.jsonl", rewritten)
	ctlOK(t, e, "audit", "verify", f)

	line := startRefused(t, e)
	if !strings.Contains(line, "checkpoint") {
		t.Fatalf("start-up refusal does not name the checkpoint: %s", line)
	}
}
