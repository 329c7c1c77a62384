package bolt

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage/storagetest"
)

// TestAuditRetentionFileSize appends N audit events, prunes them, and
// does that three times, logging the file size after each round's
// appends: bbolt reuses the pages a prune frees, so under constant load
// with retention the file stays flat instead of growing by N events per
// round. Not timed. VAULTD_RETENTION_N sets N (default 5,000; the
// numbers in docs/benchmarks.md are from N=100,000):
//
//	VAULTD_RETENTION_N=100000 go test -run TestAuditRetentionFileSize -v ./storage/bolt/
func TestAuditRetentionFileSize(t *testing.T) {
	n := 5000
	if v := os.Getenv("VAULTD_RETENTION_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("VAULTD_RETENTION_N=%q", v)
		}
	}
	ctx := context.Background()
	path := newPath(t)
	// NoSync: the file's size does not depend on fsync, and this is not timed.
	s := openT(t, path, Options{NoSync: true})
	// About the size of a proxy.request event.
	body := `"time":"2026-01-02T03:04:05.000000Z","tenant_id":"acme","integration_id":"crm","actor":"spiffe://example.internal/app/crm-sync",` +
		`"on_behalf_of":"","action":"proxy.request","outcome":"success","request_id":"01J0000000000000000000000","target_host":"api.example.com",` +
		`"http_status":200,"detail":"proxy GET ` + strings.Repeat("x", 60) + `"`
	build := storagetest.ChainBuilder(body)
	var sizes []int64
	for round := 1; round <= 3; round++ {
		for range n {
			if _, err := s.AppendAudit(ctx, build); err != nil {
				t.Fatal(err)
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
		head, err := s.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Keep only the newest event, in transactions of 1,000 as retention does.
		for {
			k, err := s.PruneAudit(ctx, head.Seq, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				break
			}
		}
		t.Logf("round %d: %d events appended, file %s (%d bytes), then pruned", round, n, mib(fi.Size()), fi.Size())
	}
	// Rounds 2 and 3 reuse what round 1 freed: the file may grow by a
	// few pages of bookkeeping, not by another round's worth of events.
	if sizes[2] > sizes[0]+sizes[0]/2 {
		t.Errorf("file grows under constant load with pruning: %v bytes per round", sizes)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
