package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// retentionResult is the database file size after each round of appends.
type retentionResult struct {
	Events  int     // appended per round
	Sizes   []int64 // file size after each round's appends
	Elapsed time.Duration
}

// flat: rounds 2 and 3 reuse what round 1's prune freed. The file may grow
// by a few pages of bookkeeping, not by another round's worth of events.
func (r retentionResult) flat() bool {
	if len(r.Sizes) < 3 || r.Sizes[0] == 0 {
		return false
	}
	return r.Sizes[2] <= r.Sizes[0]+r.Sizes[0]/10
}

// retention appends n audit events of the size of a proxy.request event to
// a fresh database with the real storage/bolt Store, prunes all but the
// newest in transactions of 1,000 (PruneAudit, as [audit] retention does),
// three times, and records the file size after each round's appends
// (storage/bolt's TestAuditRetentionFileSize, inside the bench run).
func retention(ctx context.Context, path string, n int) (retentionResult, error) {
	// NoSync: the file's size does not depend on fsync, and this is not timed.
	s, err := bolt.Open(ctx, path, bolt.Options{NoSync: true})
	if err != nil {
		return retentionResult{}, err
	}
	defer s.Close()
	body := `"time":"2026-01-02T03:04:05.000000Z","tenant_id":"acme","integration_id":"crm","actor":"spiffe://example.internal/app/crm-sync",` +
		`"on_behalf_of":"","action":"proxy.request","outcome":"success","request_id":"01J0000000000000000000000","target_host":"api.example.com",` +
		`"http_status":200,"detail":"proxy GET ` + strings.Repeat("x", 60) + `"`
	build := storagetest.ChainBuilder(body)
	res := retentionResult{Events: n}
	start := time.Now()
	for round := 1; round <= 3; round++ {
		for range n {
			if _, err := s.AppendAudit(ctx, build); err != nil {
				return res, err
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			return res, err
		}
		res.Sizes = append(res.Sizes, fi.Size())
		head, err := s.AuditHead(ctx)
		if err != nil {
			return res, err
		}
		for {
			k, err := s.PruneAudit(ctx, head.Seq, 1000)
			if err != nil {
				return res, fmt.Errorf("prune: %w", err)
			}
			if k == 0 {
				break
			}
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
