package inmem_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/inmem"
	"github.com/vaultd/vaultd/storage/storagetest"
)

func TestStoreSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return inmem.New() })
}

// TestBackupFormat: the snapshot is the JSON lines Backup documents, in
// that order, and carries every record, the anchor and the head.
func TestBackupFormat(t *testing.T) {
	ctx := context.Background()
	s := inmem.New()
	defer s.Close()
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", storagetest.NewIntegration("acme", "crm", 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := storagetest.NoEvent(s).CreateConnectSession(ctx, storagetest.NewConnectSession("acme", "cs-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("gone")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OffboardTenant(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutRevocation(ctx, storagetest.NewRevocation("rv-1", "gone", "crm"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueDeliveries(ctx, 7, []storage.Delivery{storagetest.NewDelivery("msg_1", storagetest.T0)}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(fmt.Sprintf(`"action":"a","detail":"%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneAudit(ctx, 1, 10); err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v", n, err)
	}
	var buf bytes.Buffer
	if _, err := s.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var (
		crm storage.Integration
		cs  storage.ConnectSession
	)
	for line := range strings.Lines(buf.String()) {
		var l struct {
			Kind        string                 `json:"kind"`
			Seq         uint64                 `json:"seq"`
			Integration storage.Integration    `json:"integration"`
			Session     storage.ConnectSession `json:"connect_session"`
			Data        json.RawMessage        `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		kinds = append(kinds, fmt.Sprintf("%s%d", l.Kind, l.Seq))
		if l.Kind == "integration" {
			crm = l.Integration
		}
		if l.Kind == "connect_session" {
			cs = l.Session
		}
		if l.Kind == "audit" && !bytes.Contains(l.Data, []byte(fmt.Sprintf(`"seq":%d`, l.Seq))) {
			t.Fatalf("audit line %d carries %s", l.Seq, l.Data)
		}
	}
	want := []string{"vaultd-inmem-backup0", "tenant0", "integration0", "connect_session0",
		"offboarded0", "revocation0", "delivery0", "webhook_cursor7",
		"audit_anchor1", "audit2", "audit3", "audit_head3"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("backup lines %v, want %v", kinds, want)
	}
	w := storagetest.NewIntegration("acme", "crm", 64)
	w.Revision = 1
	if !storagetest.EqualIntegration(crm, w) {
		t.Fatalf("backed-up integration %+v, want %+v", crm, w)
	}
	wcs := storagetest.NewConnectSession("acme", "cs-1")
	wcs.Revision = 1
	if !storagetest.EqualConnectSession(cs, wcs) {
		t.Fatalf("backed-up connect session %+v, want %+v", cs, wcs)
	}
}

// TestScanOutlivesPrune: a scan whose end a concurrent prune has passed
// ends quietly instead of reporting a gap.
func TestScanOutlivesPrune(t *testing.T) {
	ctx := context.Background()
	s := inmem.New()
	defer s.Close()
	for i := range 600 {
		if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(fmt.Sprintf(`"action":"a","detail":"%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		if seen++; seen == 1 {
			// Past the scan's end (600): append more, then prune to 700.
			for i := range 200 {
				if _, err := s.AppendAudit(ctx, storagetest.ChainBuilder(fmt.Sprintf(`"action":"b","detail":"%d"`, i))); err != nil {
					return false, err
				}
			}
			if _, err := s.PruneAudit(ctx, 700, 1000); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("ScanAudit: %v", err)
	}
	if seen != 256 {
		t.Fatalf("scan saw %d records, want the first chunk (256)", seen)
	}
}
