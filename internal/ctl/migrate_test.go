package ctl

import (
	"bytes"
	"crypto/sha256"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/storage/inmem"
	"github.com/vaultd/vaultd/vaultd/audit"
)

var migrateNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sourceDB is a bbolt database with one of everything migrate copies and
// a chain of real events (some carried by state changes, some alone).
func sourceDB(t *testing.T) *bolt.Store {
	t.Helper()
	ctx := t.Context()
	st, err := bolt.Open(ctx, filepath.Join(t.TempDir(), "vault.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l, err := audit.New(ctx, st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	ev := func(action, tenant, integration string) audit.Event {
		return audit.Event{Time: audit.NewTimestamp(migrateNow), TenantID: tenant, IntegrationID: integration,
			Actor: "ops", Action: action, Outcome: audit.OutcomeSuccess}
	}
	with := func(e audit.Event, commit func(storage.AuditFunc) (storage.AuditRecord, error)) {
		t.Helper()
		if _, err := l.RecordWith(ctx, e, commit); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"acme", "globex", "gone"} {
		tn := storage.Tenant{ID: id, CreatedAt: migrateNow, Status: "active", KEKVersion: 1, DEKVersion: 1,
			DEKs: []storage.WrappedDEK{{Version: 1, KEKVersion: 1, Nonce: []byte("nonce-123456"), Ciphertext: []byte("wrapped-" + id), CreatedAt: migrateNow}}}
		with(ev(audit.ActionTenantCreate, id, ""), func(b storage.AuditFunc) (storage.AuditRecord, error) {
			_, r, err := st.CreateTenant(ctx, tn, b)
			return r, err
		})
	}
	in := storage.Integration{ID: "crm", TenantID: "acme", Provider: "example", Scopes: []string{"a", "b"}, Status: storage.StatusActive,
		TokenType: "Bearer", ExpiresAt: migrateNow.Add(time.Hour), CreatedAt: migrateNow, AccessToken: []byte("ct-access"), RefreshToken: []byte("ct-refresh")}
	with(ev(audit.ActionTokenStore, "acme", "crm"), func(b storage.AuditFunc) (storage.AuditRecord, error) {
		_, r, err := st.PutIntegration(ctx, "acme", in, b)
		return r, err
	})
	for range 300 { // more than one batch of the copy
		if _, err := l.Record(ctx, ev(audit.ActionProxyRequest, "acme", "crm")); err != nil {
			t.Fatal(err)
		}
	}
	link, state := sha256.Sum256([]byte("link")), sha256.Sum256([]byte("state"))
	sess := storage.ConnectSession{ID: "cs1", TenantID: "globex", IntegrationID: "mail", Provider: "example", Status: "pending",
		CreatedAt: migrateNow, ExpiresAt: migrateNow.Add(10 * time.Minute), LinkHash: link[:], StateHash: state[:]}
	if _, _, err := st.CreateConnectSession(ctx, sess, nil); err != nil {
		t.Fatal(err)
	}
	with(ev("tenant.offboard", "gone", ""), func(b storage.AuditFunc) (storage.AuditRecord, error) {
		return st.OffboardTenant(ctx, "gone", b)
	})
	rev := storage.Revocation{ID: "rev1", TenantID: "gone", IntegrationID: "x", Provider: "example", Hint: storage.HintRefreshToken,
		Sealed: []byte("sealed"), KEKVersion: 1, CreatedAt: migrateNow, NextAttemptAt: migrateNow}
	if _, _, err := st.PutRevocation(ctx, rev, nil); err != nil {
		t.Fatal(err)
	}
	ds := []storage.Delivery{
		{ID: "msg_1", Webhook: "hook", Type: "tenant.offboarded", TenantID: "gone", Seq: 4, Body: []byte(`{}`), Status: storage.DeliveryPending,
			CreatedAt: migrateNow, NextAttemptAt: migrateNow, UpdatedAt: migrateNow},
		{ID: "msg_2", Webhook: "hook", Type: "token.stored", TenantID: "acme", Seq: 5, Body: []byte(`{}`), Status: storage.DeliveryDelivered,
			Attempts: 1, CreatedAt: migrateNow, NextAttemptAt: migrateNow, UpdatedAt: migrateNow},
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnqueueDeliveries(ctx, head.Seq, ds); err != nil {
		t.Fatal(err)
	}
	return st
}

func scanAll(t *testing.T, st storage.Store) []storage.AuditRecord {
	t.Helper()
	var out []storage.AuditRecord
	if err := st.ScanAudit(t.Context(), 0, func(r storage.AuditRecord) (bool, error) {
		out = append(out, storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)})
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The copy holds every record and the chain byte for byte.
func TestMigrateCopiesEverything(t *testing.T) {
	ctx := t.Context()
	src := sourceDB(t)
	dst := inmem.New()
	n, err := migrate(ctx, src, dst, func() time.Time { return migrateNow })
	if err != nil {
		t.Fatal(err)
	}
	want := migrateCounts{tenants: 2, integrations: 1, sessions: 1, offboarded: 1, revocations: 1, deliveries: 2, events: 305}
	if n != want {
		t.Errorf("counts = %+v, want %+v", n, want)
	}
	if a, b := scanAll(t, src), scanAll(t, dst); !reflect.DeepEqual(a, b) {
		t.Fatalf("chains differ: %d vs %d records", len(a), len(b))
	}
	sh, _ := src.AuditHead(ctx)
	dh, _ := dst.AuditHead(ctx)
	if sh != dh {
		t.Errorf("head %v, want %v", dh, sh)
	}
	tn, err := dst.GetTenant(ctx, "acme")
	if err != nil || len(tn.DEKs) != 1 || string(tn.DEKs[0].Ciphertext) != "wrapped-acme" {
		t.Errorf("tenant acme = %+v, %v", tn, err)
	}
	in, err := dst.GetIntegration(ctx, "acme", "crm")
	if err != nil || string(in.RefreshToken) != "ct-refresh" || in.Provider != "example" {
		t.Errorf("integration = %+v, %v", in, err)
	}
	state := sha256.Sum256([]byte("state"))
	if s, err := dst.FindConnectSession(ctx, state[:]); err != nil || s.ID != "cs1" || s.TenantID != "globex" {
		t.Errorf("connect session by state = %+v, %v", s, err)
	}
	if off, err := dst.ListOffboarded(ctx); err != nil || !reflect.DeepEqual(off, []string{"gone"}) {
		t.Errorf("offboarded = %v, %v", off, err)
	}
	if _, _, err := dst.CreateTenant(ctx, storage.Tenant{ID: "gone"}, nil); err == nil {
		t.Error("an offboarded id could be created again")
	}
	if _, err := dst.GetTenant(ctx, "gone"); err == nil {
		t.Error("the placeholder of an offboarded id is visible")
	}
	if revs, err := dst.ListRevocations(ctx); err != nil || len(revs) != 1 || string(revs[0].Sealed) != "sealed" {
		t.Errorf("revocations = %+v, %v", revs, err)
	}
	if ds, err := dst.ListDeliveries(ctx, "", 0); err != nil || len(ds) != 2 || ds[1].Status != storage.DeliveryDelivered && ds[0].Status != storage.DeliveryDelivered {
		t.Errorf("deliveries = %+v, %v", ds, err)
	}
	if cur, _ := dst.WebhookCursor(ctx); cur != sh.Seq {
		t.Errorf("cursor = %d, want %d", cur, sh.Seq)
	}
	// The copy verifies as a chain from genesis with the audit verifier.
	var buf bytes.Buffer
	for _, r := range scanAll(t, dst) {
		buf.Write(bytes.TrimRight(r.Data, "\n"))
		buf.WriteByte('\n')
	}
	if res, err := audit.Verify(&buf); err != nil || res.Events != 305 {
		t.Errorf("verify copy: %+v, %v", res, err)
	}
}

// A target that holds anything is refused before a write.
func TestMigrateRefusesNonEmptyTarget(t *testing.T) {
	ctx := t.Context()
	src := sourceDB(t)
	for name, fill := range map[string]func(s *inmem.Store) error{
		"tenant": func(s *inmem.Store) error {
			_, _, err := s.CreateTenant(ctx, storage.Tenant{ID: "other", CreatedAt: migrateNow}, nil)
			return err
		},
		"audit": func(s *inmem.Store) error {
			l, err := audit.New(ctx, s, audit.Options{})
			if err != nil {
				return err
			}
			defer l.Close()
			_, err = l.Record(ctx, audit.Event{Time: audit.NewTimestamp(migrateNow), Actor: "x", Action: audit.ActionTenantCreate, Outcome: audit.OutcomeSuccess})
			return err
		},
		"cursor": func(s *inmem.Store) error { return s.EnqueueDeliveries(ctx, 3, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			dst := inmem.New()
			if err := fill(dst); err != nil {
				t.Fatal(err)
			}
			before := scanAll(t, dst)
			_, err := migrate(ctx, src, dst, time.Now)
			if err == nil || !strings.Contains(err.Error(), "not empty") {
				t.Fatalf("err = %v, want a refusal", err)
			}
			if after := scanAll(t, dst); len(after) != len(before) {
				t.Error("the refused migration wrote to the target")
			}
		})
	}
}

// A source chain that does not verify is never copied.
func TestMigrateRefusesBrokenSource(t *testing.T) {
	ctx := t.Context()
	src := inmem.New()
	// Two well-formed records whose second does not chain on the first.
	for _, line := range []string{
		`{"seq":1,"prev_hash":"` + storage.GenesisHash + `","hash":"aa"}`,
	} {
		_, err := src.AppendAudit(ctx, func(h storage.AuditHead) (storage.AuditRecord, error) {
			return storage.AuditRecord{Seq: 1, Hash: "aa", Data: []byte(line)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	dst := inmem.New()
	if _, err := migrate(ctx, src, dst, time.Now); err == nil || !strings.Contains(err.Error(), "source audit chain") {
		t.Fatalf("err = %v, want the source chain refused", err)
	}
	if h, _ := dst.AuditHead(ctx); h.Seq != 0 {
		t.Error("a broken chain was copied")
	}
}
