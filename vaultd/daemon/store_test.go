package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// countingLocker is a KeyedMutex that counts its concurrent waiters and
// holders, and can be told to refuse.
type countingLocker struct {
	km      *vault.KeyedMutex
	in, max atomic.Int32
	fail    error
	log     *[]string
	mu      *sync.Mutex
	name    string
}

func (c *countingLocker) note(s string) {
	c.mu.Lock()
	*c.log = append(*c.log, c.name+" "+s)
	c.mu.Unlock()
}

func (c *countingLocker) Lock(ctx context.Context, key string) (func(), error) {
	n := c.in.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	if c.fail != nil {
		c.in.Add(-1)
		return nil, c.fail
	}
	unlock, err := c.km.Lock(ctx, key)
	if err != nil {
		c.in.Add(-1)
		return nil, err
	}
	c.note("lock")
	return func() {
		c.note("unlock")
		unlock()
		c.in.Add(-1)
	}, nil
}

func newCounting(name string, log *[]string, mu *sync.Mutex) *countingLocker {
	return &countingLocker{km: vault.NewKeyedMutex(), log: log, mu: mu, name: name}
}

func TestChainLockerOrder(t *testing.T) {
	var log []string
	var mu sync.Mutex
	local, shared := newCounting("local", &log, &mu), newCounting("shared", &log, &mu)
	l := chainLocker{local: local, shared: shared}
	unlock, err := l.Lock(t.Context(), "t\x00i")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	want := "local lock,shared lock,shared unlock,local unlock"
	if got := strings.Join(log, ","); got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
}

// One caller per node waits on the database: the others queue on the
// in-process mutex first.
func TestChainLockerOneWaiterPerNode(t *testing.T) {
	var log []string
	var mu sync.Mutex
	local, shared := newCounting("local", &log, &mu), newCounting("shared", &log, &mu)
	l := chainLocker{local: local, shared: shared}
	var wg sync.WaitGroup
	var held atomic.Int32
	for range 32 {
		wg.Go(func() {
			unlock, err := l.Lock(t.Context(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			if held.Add(1) != 1 {
				t.Error("two holders of one key")
			}
			held.Add(-1)
			unlock()
		})
	}
	wg.Wait()
	if m := shared.max.Load(); m != 1 {
		t.Errorf("%d callers at the shared lock at once, want 1", m)
	}
	if local.max.Load() < 1 {
		t.Error("local lock never taken")
	}
}

// A refused shared lock releases the local one and fails closed.
func TestChainLockerSharedFails(t *testing.T) {
	var log []string
	var mu sync.Mutex
	local, shared := newCounting("local", &log, &mu), newCounting("shared", &log, &mu)
	boom := errors.New("database away")
	shared.fail = boom
	l := chainLocker{local: local, shared: shared}
	if _, err := l.Lock(t.Context(), "k"); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the shared lock's", err)
	}
	// The local key is free again.
	shared.fail = nil
	unlock, err := l.Lock(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if local.in.Load() != 0 || shared.in.Load() != 0 {
		t.Error("a lock is still held")
	}
}

func TestAuditWALPath(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	cfg := &config.Config{Storage: config.StorageConfig{Backend: config.BackendBBolt, Path: "/var/lib/vaultd/vault.db"},
		Audit: config.AuditConfig{Sync: config.SyncBatch}}
	if got := auditWALPath(cfg, log); got != "/var/lib/vaultd/vault.db.audit-wal" {
		t.Errorf("bbolt batch: %q", got)
	}
	cfg.Audit.Sync = config.SyncAlways
	if got := auditWALPath(cfg, log); got != "" {
		t.Errorf("bbolt always: %q", got)
	}
	cfg.Storage = config.StorageConfig{Backend: config.BackendPostgres}
	cfg.Audit.Sync = config.SyncBatch
	if got := auditWALPath(cfg, log); got != "" {
		t.Errorf("postgres batch: %q, want no WAL", got)
	}
	if !strings.Contains(buf.String(), `acts as \"always\"`) {
		t.Errorf("postgres batch not logged: %s", buf.String())
	}
}

// A shared database that is away keeps feeding the watchdog (a restart
// cannot cure it); bbolt's store failing, or the HSM, does not.
func TestWatchdogHealthy(t *testing.T) {
	hsmErr := errors.New("hsm: unavailable")
	for _, tc := range []struct {
		shared bool
		err    error
		want   bool
	}{
		{false, nil, true}, {true, nil, true},
		{false, errStoreUnavailable, false}, {true, errStoreUnavailable, true},
		{true, hsmErr, false}, {false, hsmErr, false},
	} {
		d := &daemon{sharedStore: tc.shared}
		if got := d.watchdogHealthy(tc.err); got != tc.want {
			t.Errorf("shared=%v err=%v: %v, want %v", tc.shared, tc.err, got, tc.want)
		}
	}
}
