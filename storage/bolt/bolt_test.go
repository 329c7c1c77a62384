package bolt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// Subprocess helpers: the test binary re-executes itself with helperEnv
// set and TestMain dispatches before running any test.
const (
	helperEnv     = "VAULTD_BOLT_TEST_HELPER"
	helperPathEnv = "VAULTD_BOLT_TEST_PATH"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "writer":
		os.Exit(helperWriter(os.Getenv(helperPathEnv)))
	case "holder":
		os.Exit(helperHolder(os.Getenv(helperPathEnv)))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

func newPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "vault.db")
}

func openT(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, opts)
	if err != nil {
		t.Fatalf("Open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawUpdate edits a closed database file directly, bypassing the store.
func rawUpdate(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func rawView(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(fn); err != nil {
		t.Fatal(err)
	}
}

// checkFile runs bbolt's own consistency check on a closed file.
func checkFile(t *testing.T, path string) {
	t.Helper()
	rawView(t, path, func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

func TestStoreSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return openT(t, newPath(t), Options{})
	})
}

func TestSchemaVersionMatchesMigrations(t *testing.T) {
	if SchemaVersion != len(migrations) {
		t.Fatalf("SchemaVersion %d but %d migrations registered", SchemaVersion, len(migrations))
	}
}

func TestFileMode(t *testing.T) {
	path := newPath(t)
	s := openT(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, want 0600", fi.Mode().Perm())
	}
	bk := filepath.Join(t.TempDir(), "backup.db")
	if _, err := s.BackupToFile(t.Context(), bk); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(bk); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	path := filepath.Join(dir, "vault.db")
	_, err := Open(t.Context(), path, Options{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open in a missing directory: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open created the directory: %v", err)
	}
	_, err = Open(t.Context(), filepath.Join(t.TempDir(), "missing.db"), Options{ReadOnly: true})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only Open of a missing file: %v", err)
	}
}

func TestLockedInProcess(t *testing.T) {
	path := newPath(t)
	first := openT(t, path, Options{})
	_, err := Open(t.Context(), path, Options{LockTimeout: 60 * time.Millisecond})
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	want := fmt.Sprintf("storage: %s is locked by another process (is another vaultd running?)", path)
	if err.Error() != want {
		t.Fatalf("lock error %q, want %q", err, want)
	}
	_, err = Open(t.Context(), path, Options{LockTimeout: 60 * time.Millisecond, ReadOnly: true})
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("read-only Open of a write-locked file: %v, want ErrLocked", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, path, Options{})
}

// helperHolder opens the store, says "ready" and holds the lock until
// stdin closes.
func helperHolder(path string) int {
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // returns at EOF
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func helperCmd(t *testing.T, mode, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperPathEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if stderr.Len() > 0 {
			t.Logf("helper %s stderr: %s", mode, stderr.String())
		}
	})
	return cmd
}

func TestLockedByOtherProcess(t *testing.T) {
	path := newPath(t)
	cmd := helperCmd(t, "holder", path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("holder did not get ready: %q %v", line, err)
	}
	_, err = Open(t.Context(), path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, storage.ErrLocked) || !strings.Contains(err.Error(), "is another vaultd running?") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("Open while another process holds the file: %v", err)
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	s := openT(t, path, Options{})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	tn, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "crm", 1024))
	if err != nil {
		t.Fatal(err)
	}
	var recs []storage.AuditRecord
	for range 3 {
		r, err := s.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"token.store"`))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openT(t, path, Options{})
	gotT, err := s2.GetTenant(ctx, "acme")
	if err != nil || !storagetest.EqualTenant(gotT, tn) {
		t.Fatalf("tenant after reopen: %+v %v", gotT, err)
	}
	gotI, err := s2.GetIntegration(ctx, "acme", "crm")
	if err != nil || !storagetest.EqualIntegration(gotI, in) {
		t.Fatalf("integration after reopen: %v", err)
	}
	head, err := s2.AuditHead(ctx)
	if err != nil || head.Seq != 3 || head.Hash != recs[2].Hash {
		t.Fatalf("audit head after reopen: %+v %v", head, err)
	}
	// The chain continues where it stopped.
	if r, err := s2.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"proxy.request"`)); err != nil || r.Seq != 4 {
		t.Fatalf("append after reopen: %+v %v", r, err)
	}
	var all []storage.AuditRecord
	if err := s2.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) { all = append(all, r); return true, nil }); err != nil {
		t.Fatal(err)
	}
	if err := storagetest.VerifyChain(all); err != nil {
		t.Fatal(err)
	}
	if err := s2.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLayout pins the on-disk layout documented in docs/architecture.md.
func TestLayout(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "crm", 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(`"action":"x"`)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	rawView(t, path, func(tx *bbolt.Tx) error {
		sys := tx.Bucket([]byte("sys"))
		if sys == nil {
			return errors.New("no sys bucket")
		}
		if v := sys.Get([]byte("schema_version")); !bytes.Equal(v, binary.BigEndian.AppendUint64(nil, SchemaVersion)) {
			return fmt.Errorf("schema_version = %x", v)
		}
		if v := sys.Get([]byte("audit_head")); !bytes.Contains(v, []byte(`"seq":1`)) {
			return fmt.Errorf("audit_head = %s", v)
		}
		if v := tx.Bucket([]byte("audit")).Get(binary.BigEndian.AppendUint64(nil, 1)); !bytes.HasPrefix(v, []byte(`{"seq":1,`)) {
			return fmt.Errorf("audit 1 = %s", v)
		}
		tb := tx.Bucket([]byte("t/acme"))
		if tb == nil {
			return errors.New("no t/acme bucket")
		}
		if v := tb.Get([]byte("tenant")); !bytes.HasPrefix(v, []byte(`{"v":1,"id":"acme",`)) {
			return fmt.Errorf("tenant record = %.40s", v)
		}
		if v := tb.Bucket([]byte("integrations")).Get([]byte("crm")); !bytes.HasPrefix(v, []byte(`{"v":1,"id":"crm","tenant_id":"acme",`)) {
			return fmt.Errorf("integration record = %.60s", v)
		}
		return nil
	})
}

func TestReadOnly(t *testing.T) {
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	r1 := openT(t, path, Options{ReadOnly: true})
	r2 := openT(t, path, Options{ReadOnly: true}) // shared lock: readers coexist
	for _, r := range []*Store{r1, r2} {
		if _, err := r.GetTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if err := r.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := storagetest.NoEvent(r1).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "crm", 16)); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("write on a read-only store: %v", err)
	}
	if _, err := r1.AppendAudit(ctx, storagetest.ChainBuilder(`"a":1`)); !errors.Is(err, storage.ErrReadOnly) {
		t.Fatalf("audit append on a read-only store: %v", err)
	}
	if _, err := Open(ctx, path, Options{LockTimeout: 60 * time.Millisecond}); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("read-write Open while readers hold the file: %v", err)
	}
}

func TestPutIntegrationsBatch(t *testing.T) {
	ctx := t.Context()
	s := openT(t, newPath(t), Options{})
	if _, err := s.PutIntegrations(ctx, "acme", []storage.Integration{storagetest.NewIntegration("acme", "a", 16)}); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("batch into a missing tenant: %v", err)
	}
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	bad := []storage.Integration{
		storagetest.NewIntegration("acme", "a", 16),
		storagetest.NewIntegration("acme", "../b", 16),
	}
	if _, err := s.PutIntegrations(ctx, "acme", bad); !errors.Is(err, storage.ErrInvalidID) {
		t.Fatalf("batch with an invalid id: %v", err)
	}
	if l, _ := s.ListIntegrations(ctx, "acme"); len(l) != 0 {
		t.Fatalf("a rejected batch wrote %d records", len(l))
	}
	var ins []storage.Integration
	for i := range 100 {
		ins = append(ins, storagetest.NewIntegration("", fmt.Sprintf("i%03d", i), 1024))
	}
	ins = append(ins, storagetest.NewIntegration("acme", "i000", 16)) // repeated id: applied in order
	out, err := s.PutIntegrations(ctx, "acme", ins)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 101 || out[0].Revision != 1 || out[100].Revision != 2 || out[5].TenantID != "acme" {
		t.Fatalf("batch results: len %d rev0 %d rev100 %d", len(out), out[0].Revision, out[100].Revision)
	}
	l, err := s.ListIntegrations(ctx, "acme")
	if err != nil || len(l) != 100 {
		t.Fatalf("after batch: %d records, %v", len(l), err)
	}
	if got, _ := s.GetIntegration(ctx, "acme", "i000"); got.Revision != 2 || len(got.AccessToken) != 16 {
		t.Fatalf("repeated id: revision %d, token %d bytes", got.Revision, len(got.AccessToken))
	}
}

// TestCrashSafety: a child process writes in concurrent batches and
// reports each acknowledged id; after enough acks it is SIGKILLed
// mid-flight. The file must pass bbolt's consistency check and hold every
// acknowledged write.
func TestCrashSafety(t *testing.T) {
	const wantAcks = 200
	ctx := t.Context()
	path := newPath(t)
	s := openT(t, path, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := helperCmd(t, "writer", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(stdout)
	for len(acked) < wantAcks && sc.Scan() { // bounded: the helper writes a finite number
		id, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			t.Errorf("unexpected helper output %q", sc.Text())
			continue
		}
		acked = append(acked, id)
	}
	_ = cmd.Process.Kill() // SIGKILL: no deferred cleanup, no Close
	_ = cmd.Wait()
	if len(acked) < wantAcks {
		t.Fatalf("helper acknowledged only %d writes", len(acked))
	}

	checkFile(t, path)
	s2 := openT(t, path, Options{})
	if err := s2.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range acked {
		got, err := s2.GetIntegration(ctx, "acme", id)
		if err != nil {
			t.Fatalf("acknowledged write %s lost: %v", id, err)
		}
		if want := storagetest.NewIntegration("acme", id, 1024); !bytes.Equal(got.AccessToken, want.AccessToken) {
			t.Fatalf("acknowledged write %s has wrong content", id)
		}
	}
	l, err := s2.ListIntegrations(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged before kill, %d on disk", len(acked), len(l))
}

// helperWriter writes integrations from 8 goroutines (half single puts,
// half explicit batches of 5) and prints "ack <id>" after each returns.
func helperWriter(path string) int {
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	ack := func(ids ...string) {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			fmt.Fprintf(os.Stdout, "ack %s\n", id)
		}
	}
	var wg sync.WaitGroup
	failed := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 { // bounded; the parent kills us long before
				if g%2 == 0 {
					id := fmt.Sprintf("g%d-%d", g, i)
					if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", id, 1024)); err != nil {
						failed <- err
						return
					}
					ack(id)
					continue
				}
				var batch []storage.Integration
				var ids []string
				for j := range 5 {
					id := fmt.Sprintf("g%d-%d-%d", g, i, j)
					ids = append(ids, id)
					batch = append(batch, storagetest.NewIntegration("acme", id, 1024))
				}
				if _, err := s.PutIntegrations(ctx, "acme", batch); err != nil {
					failed <- err
					return
				}
				ack(ids...)
			}
		})
	}
	wg.Wait()
	close(failed)
	for err := range failed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = s.Close()
	return 0
}

func TestBackupOpens(t *testing.T) {
	ctx := t.Context()
	s := openT(t, newPath(t), Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	// Writers keep going during the backups: they are online and consistent.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", fmt.Sprintf("w%d-%d", g, i), 1024)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	dir := t.TempDir()
	var paths []string
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("backup-%d.db", i))
		n, err := s.BackupToFile(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != n {
			t.Fatalf("backup %s: size %v, reported %d", p, fi, n)
		}
		paths = append(paths, p)
	}
	wg.Wait()
	// Backup to a writer, after all writes.
	final := filepath.Join(dir, "final.db")
	f, err := os.OpenFile(final, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	paths = append(paths, final)
	for _, p := range paths {
		checkFile(t, p)
		b := openT(t, p, Options{ReadOnly: true})
		if _, err := b.GetTenant(ctx, "acme"); err != nil {
			t.Fatalf("backup %s: %v", p, err)
		}
		if err := b.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := openT(t, final, Options{ReadOnly: true})
	if l, err := b.ListIntegrations(ctx, "acme"); err != nil || len(l) != 100 {
		t.Fatalf("final backup holds %d integrations (%v), want 100", len(l), err)
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
	if _, err := s.BackupToFile(ctx, s.Path()); err == nil {
		t.Fatal("BackupToFile over the live database succeeded")
	}
	if _, err := s.BackupToFile(ctx, filepath.Join(dir, "absent", "b.db")); err == nil {
		t.Fatal("BackupToFile into a missing directory succeeded")
	}
}

func TestOpenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	path := newPath(t)
	if _, err := Open(ctx, path, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cancelled Open created the file: %v", err)
	}
}

func TestNotADatabase(t *testing.T) {
	path := newPath(t)
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a bolt file "), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), path, Options{})
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Open of a non-database: %v, want ErrCorrupt", err)
	}
}

// cancelAfterFirst cancels its context once the first chunk is written.
type cancelAfterFirst struct {
	cancel context.CancelFunc
	n      int
}

func (c *cancelAfterFirst) Write(p []byte) (int, error) {
	c.n++
	c.cancel()
	return len(p), nil
}

func TestBackupCancelledMidway(t *testing.T) {
	s := openT(t, newPath(t), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	w := &cancelAfterFirst{cancel: cancel}
	_, err := s.Backup(ctx, w)
	if !errors.Is(err, context.Canceled) || w.n != 1 {
		t.Fatalf("Backup cancelled after the first write: %v (%d writes)", err, w.n)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("store unusable after a cancelled backup: %v", err)
	}
}
