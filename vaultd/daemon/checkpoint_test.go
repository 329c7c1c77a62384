package daemon

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/hsm/hsmtest"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// Without the audit key vaultd refuses to start as for a configuration
// error, saying to run 'vaultctl init'.
func TestAuditSignerMissingKey(t *testing.T) {
	kr := hsmtest.NewFake()
	if _, pub, err := auditSigner(t.Context(), kr); err != nil || pub == nil {
		t.Fatalf("auditSigner = %v, %v", pub, err)
	}
	kr.DropAuditKey()
	_, _, err := auditSigner(t.Context(), kr)
	if !errors.Is(err, hsm.ErrAuditKeyNotFound) || ExitCode(err) != ExitConfig || !strings.Contains(err.Error(), "vaultctl init") {
		t.Fatalf("auditSigner without the key = %v (exit %d), want ErrAuditKeyNotFound, exit %d, naming vaultctl init", err, ExitCode(err), ExitConfig)
	}
}

func TestCheckpointerOnce(t *testing.T) {
	st, err := bolt.Open(t.Context(), filepath.Join(t.TempDir(), "vault.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l, err := audit.New(t.Context(), st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	kr := hsmtest.NewFake()
	reg := prometheus.NewRegistry()
	c := newCheckpointer(slog.New(slog.DiscardHandler), l, kr, reg)
	count := func(result string) float64 {
		var m dto.Metric
		if err := c.results.WithLabelValues(result).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}

	c.once(t.Context()) // empty trail: nothing to sign
	if count("written") != 0 || count("failed") != 0 {
		t.Fatalf("empty trail: written %v failed %v", count("written"), count("failed"))
	}
	if _, err := l.Record(t.Context(), audit.Event{Actor: "t", Action: audit.ActionTenantCreate, Outcome: audit.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	c.once(t.Context())
	c.once(t.Context()) // head unmoved
	if count("written") != 1 {
		t.Fatalf("written %v, want 1", count("written"))
	}
	if _, err := l.Record(t.Context(), audit.Event{Actor: "t", Action: audit.ActionTenantCreate, Outcome: audit.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	kr.Fail.Store(true)
	c.once(t.Context())
	kr.Fail.Store(false)
	if count("failed") != 1 {
		t.Fatalf("failed %v, want 1", count("failed"))
	}
	c.final()
	if count("written") != 2 {
		t.Fatalf("written %v after the shutdown checkpoint, want 2", count("written"))
	}
	pub, _ := kr.AuditPublicKey(context.Background())
	check, err := audit.New(t.Context(), st, audit.Options{CheckpointKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	res, err := check.VerifyStore(t.Context())
	if err != nil || res.Checkpoints != 2 || res.LastCheckpoint != res.LastSeq {
		t.Fatalf("VerifyStore = %+v, %v; want 2 checkpoints, the last at the head", res, err)
	}
}
