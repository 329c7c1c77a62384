package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// NewRevocation returns a pending revocation fixture for integrationID of
// tenantID, due at T0 (Revision 0: the store sets it).
func NewRevocation(id, tenantID, integrationID string) storage.Revocation {
	return storage.Revocation{
		ID:            id,
		TenantID:      tenantID,
		IntegrationID: integrationID,
		Provider:      "example",
		Hint:          storage.HintRefreshToken,
		Sealed:        Ciphertext("revocation/"+id, 96),
		KEKVersion:    1,
		CreatedAt:     T0,
		NextAttemptAt: T0.Add(30 * time.Second),
	}
}

// NewDelivery returns a pending delivery fixture due at next (Revision 0:
// the store sets it).
func NewDelivery(id string, next time.Time) storage.Delivery {
	return storage.Delivery{
		ID:            id,
		Webhook:       "0123456789ab",
		Type:          "integration.connected",
		TenantID:      "acme",
		Seq:           1,
		Body:          []byte(fmt.Sprintf(`{"type":"integration.connected","data":{"id":%q}}`, id)),
		Status:        storage.DeliveryPending,
		CreatedAt:     T0,
		NextAttemptAt: next,
		UpdatedAt:     T0,
	}
}

// lifecycleTests are the lifecycle part of the suite (Run's "Lifecycle"
// group: offboarding, pending revocations, webhook deliveries), each on a
// fresh store. The revocation and delivery tests skip a store without the
// optional storage.RevocationStore or storage.DeliveryStore.
var lifecycleTests = []struct {
	name string
	fn   func(t *testing.T, s storage.Store)
}{
	{"Offboard", testOffboard},
	{"OffboardAudited", testOffboardAudited},
	{"Revocations", testRevocations},
	{"RevocationsAudited", testRevocationsAudited},
	{"RevocationsReturnCopies", testRevocationsReturnCopies},
	{"DeliveryEnqueue", testDeliveryEnqueue},
	{"DeliveryList", testDeliveryList},
	{"DeliveryUpdate", testDeliveryUpdate},
	{"DeliveryPrune", testDeliveryPrune},
	{"DeliveriesReturnCopies", testDeliveriesReturnCopies},
	{"DeliveriesConcurrent", testDeliveriesConcurrent},
}

func normRevocation(r storage.Revocation) storage.Revocation {
	r.CreatedAt, r.NextAttemptAt = normTime(r.CreatedAt), normTime(r.NextAttemptAt)
	if len(r.Sealed) == 0 {
		r.Sealed = nil
	}
	return r
}

// EqualRevocation is EqualIntegration for revocations.
func EqualRevocation(a, b storage.Revocation) bool {
	return reflect.DeepEqual(normRevocation(a), normRevocation(b))
}

func normDelivery(d storage.Delivery) storage.Delivery {
	for _, p := range []*time.Time{&d.CreatedAt, &d.NextAttemptAt, &d.UpdatedAt} {
		*p = normTime(*p)
	}
	if len(d.Body) == 0 {
		d.Body = nil
	}
	return d
}

// EqualDelivery is EqualIntegration for deliveries.
func EqualDelivery(a, b storage.Delivery) bool {
	return reflect.DeepEqual(normDelivery(a), normDelivery(b))
}

// revocations returns s's optional RevocationStore, skipping the test
// without it.
func revocations(t *testing.T, s storage.Store) storage.RevocationStore {
	t.Helper()
	r, ok := s.(storage.RevocationStore)
	if !ok {
		t.Skip("the store has no revocations (optional storage.RevocationStore)")
	}
	return r
}

// deliveries returns s's optional DeliveryStore, skipping the test without it.
func deliveries(t *testing.T, s storage.Store) storage.DeliveryStore {
	t.Helper()
	d, ok := s.(storage.DeliveryStore)
	if !ok {
		t.Skip("the store has no webhook deliveries (optional storage.DeliveryStore)")
	}
	return d
}

// lifecycleChecks calls every lifecycle method with ctx into checks (for
// the cancelled-context and after-Close tests); acme is the tenant.
func lifecycleChecks(ctx context.Context, s storage.Store, checks map[string]error) {
	_, checks["OffboardTenant"] = s.OffboardTenant(ctx, "acme", nil)
	_, checks["ListOffboarded"] = s.ListOffboarded(ctx)
	if rs, ok := s.(storage.RevocationStore); ok {
		r := NewRevocation("rv-1", "acme", "crm")
		_, _, checks["PutRevocation"] = rs.PutRevocation(ctx, r, nil)
		_, checks["ListRevocations"] = rs.ListRevocations(ctx)
		r.Revision = 1
		_, _, checks["UpdateRevocation"] = rs.UpdateRevocation(ctx, r, nil)
		_, checks["DeleteRevocation"] = rs.DeleteRevocation(ctx, "rv-1", nil)
	}
	if ds, ok := s.(storage.DeliveryStore); ok {
		d := NewDelivery("msg_1", T0)
		checks["EnqueueDeliveries"] = ds.EnqueueDeliveries(ctx, 1, []storage.Delivery{d})
		_, checks["WebhookCursor"] = ds.WebhookCursor(ctx)
		_, checks["GetDelivery"] = ds.GetDelivery(ctx, "msg_1")
		_, checks["ListDeliveries"] = ds.ListDeliveries(ctx, "", 0)
		d.Revision = 1
		_, _, checks["UpdateDelivery"] = ds.UpdateDelivery(ctx, d, nil)
		_, checks["PruneDeliveries"] = ds.PruneDeliveries(ctx, T0.Add(time.Hour), 10)
	}
}

// lifecycleUntouched checks, after lifecycleChecks with a cancelled
// context, that none of its writes happened.
func lifecycleUntouched(t *testing.T, s storage.Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.GetTenant(ctx, "acme"); err != nil {
		t.Errorf("a cancelled OffboardTenant removed the tenant: %v", err)
	}
	if l, err := s.ListOffboarded(ctx); err != nil || len(l) != 0 {
		t.Errorf("a cancelled OffboardTenant left a tombstone: %v %v", l, err)
	}
	if rs, ok := s.(storage.RevocationStore); ok {
		if l, err := rs.ListRevocations(ctx); err != nil || len(l) != 0 {
			t.Errorf("a cancelled PutRevocation stored %d revocations, %v", len(l), err)
		}
	}
	if ds, ok := s.(storage.DeliveryStore); ok {
		if c, err := ds.WebhookCursor(ctx); err != nil || c != 0 {
			t.Errorf("a cancelled EnqueueDeliveries moved the cursor to %d, %v", c, err)
		}
		if _, err := ds.GetDelivery(ctx, "msg_1"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("a cancelled EnqueueDeliveries stored a delivery: %v", err)
		}
	}
}

// offboardFixture fills tenant id with two integrations and two connect
// sessions (one with a link and a state digest), and returns the sessions.
func offboardFixture(t *testing.T, s storage.Store, id string) []storage.ConnectSession {
	t.Helper()
	ctx := context.Background()
	createTenant(t, s, id)
	for _, iid := range []string{"crm", "erp"} {
		must[storage.Integration](t, "Put "+id+"/"+iid)(NoEvent(s).PutIntegration(ctx, id, NewIntegration(id, iid, 128)))
	}
	a := NewConnectSession(id, "cs-1")
	b := NewConnectSession(id, "cs-2")
	b.StateHash = Digest(id + "/cs-2/state")
	var out []storage.ConnectSession
	for _, cs := range []storage.ConnectSession{a, b} {
		out = append(out, must[storage.ConnectSession](t, "CreateConnectSession")(NoEvent(s).CreateConnectSession(ctx, cs)))
	}
	return out
}

// tenantGone checks that nothing of tenant id can be reached any more.
func tenantGone(t *testing.T, s storage.Store, id string, sessions []storage.ConnectSession) {
	t.Helper()
	ctx := context.Background()
	_, err := s.GetTenant(ctx, id)
	wantErr(t, "GetTenant of an offboarded tenant", err, storage.ErrTenantNotFound)
	for _, tn := range must[[]storage.Tenant](t, "ListTenants")(s.ListTenants(ctx)) {
		if tn.ID == id {
			t.Fatalf("ListTenants still lists offboarded %q", id)
		}
	}
	_, err = s.ListIntegrations(ctx, id)
	wantErr(t, "ListIntegrations of an offboarded tenant", err, storage.ErrTenantNotFound)
	for _, iid := range []string{"crm", "erp"} {
		_, err := s.GetIntegration(ctx, id, iid)
		wantErr(t, "GetIntegration of an offboarded tenant", err, storage.ErrNotFound)
	}
	if l, err := s.ListConnectSessions(ctx, id); err != nil || len(l) != 0 {
		t.Fatalf("ListConnectSessions of an offboarded tenant = %d, %v", len(l), err)
	}
	for _, cs := range sessions {
		_, err := s.GetConnectSession(ctx, id, cs.ID)
		wantErr(t, "GetConnectSession of an offboarded tenant", err, storage.ErrNotFound)
		for _, d := range cs.Digests() {
			_, err := s.FindConnectSession(ctx, d)
			wantErr(t, "FindConnectSession of an offboarded tenant's digest", err, storage.ErrNotFound)
		}
	}
}

func testOffboard(t *testing.T, s storage.Store) {
	ctx := context.Background()
	acme := offboardFixture(t, s, "acme")
	other := offboardFixture(t, s, "other")
	otherIns := must[[]storage.Integration](t, "ListIntegrations other")(s.ListIntegrations(ctx, "other"))
	if l := must[[]string](t, "ListOffboarded")(s.ListOffboarded(ctx)); len(l) != 0 {
		t.Fatalf("ListOffboarded of a new store = %v", l)
	}
	rs, hasRev := s.(storage.RevocationStore)
	if hasRev {
		must[storage.Revocation](t, "PutRevocation")(func() (storage.Revocation, error) {
			r, _, err := rs.PutRevocation(ctx, NewRevocation("rv-1", "acme", "crm"), nil)
			return r, err
		}())
	}

	_, err := s.OffboardTenant(ctx, "nosuch", nil)
	wantErr(t, "OffboardTenant of an unknown tenant", err, storage.ErrTenantNotFound)
	for _, bad := range BadIDs {
		_, err := s.OffboardTenant(ctx, bad, nil)
		wantErr(t, fmt.Sprintf("OffboardTenant(%q)", bad), err, storage.ErrInvalidID)
	}
	if _, err := s.OffboardTenant(ctx, "acme", nil); err != nil {
		t.Fatalf("OffboardTenant: %v", err)
	}
	tenantGone(t, s, "acme", acme)
	if l := must[[]string](t, "ListOffboarded")(s.ListOffboarded(ctx)); !reflect.DeepEqual(l, []string{"acme"}) {
		t.Fatalf("ListOffboarded = %v, want [acme]", l)
	}

	// The other tenant is untouched.
	must[storage.Tenant](t, "GetTenant other")(s.GetTenant(ctx, "other"))
	if got := must[[]storage.Integration](t, "ListIntegrations other")(s.ListIntegrations(ctx, "other")); len(got) != len(otherIns) {
		t.Fatalf("other tenant has %d integrations after acme's offboarding, want %d", len(got), len(otherIns))
	} else {
		for i := range got {
			if !EqualIntegration(got[i], otherIns[i]) {
				t.Fatalf("other tenant's integration changed: %+v", got[i])
			}
		}
	}
	for _, cs := range other {
		must[storage.ConnectSession](t, "GetConnectSession other")(s.GetConnectSession(ctx, "other", cs.ID))
		for _, d := range cs.Digests() {
			if got := must[storage.ConnectSession](t, "FindConnectSession other")(s.FindConnectSession(ctx, d)); got.TenantID != "other" || got.ID != cs.ID {
				t.Fatalf("other's digest finds %s/%s", got.TenantID, got.ID)
			}
		}
	}

	// The id is never reused, with or without an event; nothing of a
	// refused create reaches the chain.
	_, err = NoEvent(s).CreateTenant(ctx, NewTenant("acme"))
	wantErr(t, "CreateTenant of an offboarded id", err, storage.ErrExists)
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	_, _, err = s.CreateTenant(ctx, NewTenant("acme"), ChainBuilder(`"action":"tenant.create"`))
	wantErr(t, "audited CreateTenant of an offboarded id", err, storage.ErrExists)
	if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h != head {
		t.Fatalf("a refused CreateTenant moved the head to %+v", h)
	}
	tenantGone(t, s, "acme", acme)

	// Writes into the offboarded tenant find no tenant.
	_, err = NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 16))
	wantErr(t, "PutIntegration into an offboarded tenant", err, storage.ErrTenantNotFound)
	_, err = NoEvent(s).CreateConnectSession(ctx, NewConnectSession("acme", "cs-9"))
	wantErr(t, "CreateConnectSession in an offboarded tenant", err, storage.ErrTenantNotFound)
	_, err = s.OffboardTenant(ctx, "acme", nil)
	wantErr(t, "second OffboardTenant", err, storage.ErrTenantNotFound)

	// Its digests are free again: the index entries went with it.
	reuse := NewConnectSession("other", "cs-reuse")
	reuse.LinkHash = acme[1].StateHash
	must[storage.ConnectSession](t, "CreateConnectSession with a freed digest")(NoEvent(s).CreateConnectSession(ctx, reuse))

	// A pending revocation outlives its tenant on purpose.
	if hasRev {
		if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); len(l) != 1 || l[0].TenantID != "acme" {
			t.Fatalf("revocations after offboarding = %+v, want acme's one", l)
		}
	}

	// A second offboarded tenant lists in order.
	createTenant(t, s, "aardvark")
	if _, err := s.OffboardTenant(ctx, "aardvark", nil); err != nil {
		t.Fatal(err)
	}
	if l := must[[]string](t, "ListOffboarded")(s.ListOffboarded(ctx)); !reflect.DeepEqual(l, []string{"aardvark", "acme"}) {
		t.Fatalf("ListOffboarded = %v, want [aardvark acme]", l)
	}
}

// refusedEvent builds an event the store must refuse (wrong seq).
func refusedEvent(head storage.AuditHead) (storage.AuditRecord, error) {
	rec, err := ChainBuilder(`"action":"x"`)(storage.AuditHead{Seq: head.Seq + 1, Hash: head.Hash})
	return rec, err
}

func testOffboardAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	acme := offboardFixture(t, s, "acme")
	boom := errors.New("build failed")
	failing := func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom }
	intact := func(what string) {
		t.Helper()
		must[storage.Tenant](t, what+": GetTenant")(s.GetTenant(ctx, "acme"))
		if l := must[[]storage.Integration](t, what+": ListIntegrations")(s.ListIntegrations(ctx, "acme")); len(l) != 2 {
			t.Fatalf("%s: %d integrations left, want 2", what, len(l))
		}
		for _, cs := range acme {
			for _, d := range cs.Digests() {
				must[storage.ConnectSession](t, what+": FindConnectSession")(s.FindConnectSession(ctx, d))
			}
		}
		if l := must[[]string](t, what+": ListOffboarded")(s.ListOffboarded(ctx)); len(l) != 0 {
			t.Fatalf("%s: tombstone written: %v", what, l)
		}
		if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h.Seq != 0 {
			t.Fatalf("%s: head moved to %d", what, h.Seq)
		}
	}
	_, err := s.OffboardTenant(ctx, "acme", failing)
	wantErr(t, "OffboardTenant with a failing build", err, boom)
	intact("a failing build")
	_, err = s.OffboardTenant(ctx, "acme", refusedEvent)
	wantErr(t, "OffboardTenant with a refused event", err, storage.ErrInvalidRecord)
	intact("a refused event")
	_, err = s.OffboardTenant(ctx, "nosuch", ChainBuilder(`"action":"tenant.offboard"`))
	wantErr(t, "OffboardTenant of an unknown tenant", err, storage.ErrTenantNotFound)
	intact("an unknown tenant")

	rec, err := s.OffboardTenant(ctx, "acme", chainPair(`"action":"tenant.offboard"`, `"action":"note"`, false))
	if err != nil || rec.Seq != 1 || len(rec.More) != 1 || rec.More[0].Seq != 2 {
		t.Fatalf("audited OffboardTenant: %+v %v", rec, err)
	}
	tenantGone(t, s, "acme", acme)
	if err := VerifyChain(scanAll(t, s, 0)); err != nil {
		t.Fatal(err)
	}
}

func testRevocations(t *testing.T, s storage.Store) {
	ctx := context.Background()
	rs := revocations(t, s)
	if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); len(l) != 0 {
		t.Fatalf("ListRevocations of a new store = %d", len(l))
	}
	put := func(r storage.Revocation) storage.Revocation {
		t.Helper()
		got, _, err := rs.PutRevocation(ctx, r, nil)
		if err != nil {
			t.Fatalf("PutRevocation %s: %v", r.ID, err)
		}
		return got
	}
	want := map[string]storage.Revocation{}
	for _, id := range []string{"rv-z", "rv-a", "RV-M"} {
		r := NewRevocation(id, "acme", "crm")
		r.Revision = 42 // ignored on create
		got := put(r)
		r.Revision = 1
		if !EqualRevocation(got, r) {
			t.Fatalf("PutRevocation returned %+v, want %+v", got, r)
		}
		want[id] = r
	}
	l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx))
	var ids []string
	for _, r := range l {
		ids = append(ids, r.ID)
		if !EqualRevocation(r, want[r.ID]) {
			t.Fatalf("listed %+v, want %+v", r, want[r.ID])
		}
	}
	if !reflect.DeepEqual(ids, []string{"RV-M", "rv-a", "rv-z"}) {
		t.Fatalf("ListRevocations order %v", ids)
	}
	_, _, err := rs.PutRevocation(ctx, NewRevocation("rv-a", "other", "x"), nil)
	wantErr(t, "PutRevocation of a taken id", err, storage.ErrExists)

	// CAS.
	next := want["rv-a"]
	next.Attempts, next.LastError, next.NextAttemptAt = 1, "provider answered 503", T0.Add(time.Minute)
	upd, _, err := rs.UpdateRevocation(ctx, next, nil)
	if err != nil || upd.Revision != 2 || upd.Attempts != 1 || upd.LastError != next.LastError {
		t.Fatalf("UpdateRevocation: %+v %v", upd, err)
	}
	_, _, err = rs.UpdateRevocation(ctx, next, nil)
	wantErr(t, "stale UpdateRevocation", err, storage.ErrConflict)
	_, _, err = rs.UpdateRevocation(ctx, NewRevocation("rv-none", "acme", "crm"), nil)
	wantErr(t, "UpdateRevocation of an unknown id", err, storage.ErrNotFound)
	l = must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx))
	if !EqualRevocation(l[1], upd) {
		t.Fatalf("listed %+v after update, want %+v", l[1], upd)
	}

	// Delete.
	if _, err := rs.DeleteRevocation(ctx, "rv-a", nil); err != nil {
		t.Fatalf("DeleteRevocation: %v", err)
	}
	_, err = rs.DeleteRevocation(ctx, "rv-a", nil)
	wantErr(t, "second DeleteRevocation", err, storage.ErrNotFound)
	_, _, err = rs.UpdateRevocation(ctx, upd, nil)
	wantErr(t, "UpdateRevocation of a deleted one", err, storage.ErrNotFound)
	if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); len(l) != 2 {
		t.Fatalf("%d revocations after a delete, want 2", len(l))
	}

	// Invalid records.
	for name, mut := range map[string]func(*storage.Revocation){
		"bad id":          func(r *storage.Revocation) { r.ID = "a/b" },
		"bad tenant":      func(r *storage.Revocation) { r.TenantID = "" },
		"bad integration": func(r *storage.Revocation) { r.IntegrationID = "../x" },
		"no provider":     func(r *storage.Revocation) { r.Provider = "" },
		"bad hint":        func(r *storage.Revocation) { r.Hint = "id_token" },
	} {
		r := NewRevocation("rv-bad", "acme", "crm")
		mut(&r)
		_, _, err := rs.PutRevocation(ctx, r, nil)
		wantErr(t, "PutRevocation with "+name, err, storage.ErrInvalidRecord)
		r.Revision = 1
		_, _, err = rs.UpdateRevocation(ctx, r, nil)
		wantErr(t, "UpdateRevocation with "+name, err, storage.ErrInvalidRecord)
	}
	_, err = rs.DeleteRevocation(ctx, "a/b", nil)
	wantErr(t, "DeleteRevocation of a bad id", err, storage.ErrInvalidID)
}

func testRevocationsAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	rs := revocations(t, s)
	boom := errors.New("build failed")
	failing := func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom }
	headSeq := func() uint64 {
		t.Helper()
		return must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)).Seq
	}
	r := NewRevocation("rv-1", "acme", "crm")
	for name, build := range map[string]storage.AuditFunc{"failing": failing, "refused": refusedEvent} {
		_, _, err := rs.PutRevocation(ctx, r, build)
		if err == nil {
			t.Fatalf("PutRevocation with a %s build succeeded", name)
		}
		if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); len(l) != 0 {
			t.Fatalf("revocation stored without its audit event (%s)", name)
		}
	}
	got, rec, err := rs.PutRevocation(ctx, r, ChainBuilder(`"action":"revocation.retry"`))
	if err != nil || got.Revision != 1 || rec.Seq != 1 {
		t.Fatalf("audited PutRevocation: %+v seq %d %v", got, rec.Seq, err)
	}
	if _, _, err := rs.PutRevocation(ctx, r, ChainBuilder(`"action":"revocation.retry"`)); !errors.Is(err, storage.ErrExists) || headSeq() != 1 {
		t.Fatalf("refused PutRevocation: %v, head %d", err, headSeq())
	}

	next := got
	next.Attempts = 3
	for name, build := range map[string]storage.AuditFunc{"failing": failing, "refused": refusedEvent} {
		if _, _, err := rs.UpdateRevocation(ctx, next, build); err == nil {
			t.Fatalf("UpdateRevocation with a %s build succeeded", name)
		}
		if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); l[0].Revision != 1 || l[0].Attempts != 0 {
			t.Fatalf("revocation updated without its audit event (%s): %+v", name, l[0])
		}
	}
	upd, rec, err := rs.UpdateRevocation(ctx, next, ChainBuilder(`"action":"revocation.retry"`))
	if err != nil || upd.Revision != 2 || rec.Seq != 2 {
		t.Fatalf("audited UpdateRevocation: %+v seq %d %v", upd, rec.Seq, err)
	}
	if _, _, err := rs.UpdateRevocation(ctx, next, ChainBuilder(`"action":"revocation.retry"`)); !errors.Is(err, storage.ErrConflict) || headSeq() != 2 {
		t.Fatalf("stale UpdateRevocation: %v, head %d", err, headSeq())
	}
	// nil: no event.
	upd.Attempts = 4
	upd, rec, err = rs.UpdateRevocation(ctx, upd, nil)
	if err != nil || upd.Revision != 3 || rec.Seq != 0 || headSeq() != 2 {
		t.Fatalf("UpdateRevocation with no event: %+v seq %d %v head %d", upd, rec.Seq, err, headSeq())
	}

	for name, build := range map[string]storage.AuditFunc{"failing": failing, "refused": refusedEvent} {
		if _, err := rs.DeleteRevocation(ctx, "rv-1", build); err == nil {
			t.Fatalf("DeleteRevocation with a %s build succeeded", name)
		}
		if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); len(l) != 1 {
			t.Fatalf("revocation deleted without its audit event (%s)", name)
		}
	}
	rec, err = rs.DeleteRevocation(ctx, "rv-1", ChainBuilder(`"action":"revocation.retry"`))
	if err != nil || rec.Seq != 3 {
		t.Fatalf("audited DeleteRevocation: seq %d %v", rec.Seq, err)
	}
	if _, err := rs.DeleteRevocation(ctx, "rv-1", ChainBuilder(`"action":"revocation.retry"`)); !errors.Is(err, storage.ErrNotFound) || headSeq() != 3 {
		t.Fatalf("DeleteRevocation of a gone one: %v, head %d", err, headSeq())
	}
	must[storage.Revocation](t, "PutRevocation")(func() (storage.Revocation, error) {
		r, rec, err := rs.PutRevocation(ctx, NewRevocation("rv-2", "acme", "crm"), nil)
		if err == nil && rec.Seq != 0 {
			err = fmt.Errorf("no-event put returned seq %d", rec.Seq)
		}
		return r, err
	}())
	if rec, err := rs.DeleteRevocation(ctx, "rv-2", nil); err != nil || rec.Seq != 0 || headSeq() != 3 {
		t.Fatalf("DeleteRevocation with no event: seq %d %v head %d", rec.Seq, err, headSeq())
	}
	if err := VerifyChain(scanAll(t, s, 0)); err != nil {
		t.Fatal(err)
	}
}

func testRevocationsReturnCopies(t *testing.T, s storage.Store) {
	ctx := context.Background()
	rs := revocations(t, s)
	in := NewRevocation("rv-1", "acme", "crm")
	want := in
	want.Sealed = bytes.Clone(in.Sealed)
	want.Revision = 1
	got, _, err := rs.PutRevocation(ctx, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Sealed[0] ^= 0xff
	got.Sealed[1] ^= 0xff
	l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx))
	if !EqualRevocation(l[0], want) {
		t.Fatal("the store shares Sealed with a caller's value")
	}
	l[0].Sealed[2] ^= 0xff
	next := l[0]
	upd, _, err := rs.UpdateRevocation(ctx, next, nil)
	if err != nil {
		t.Fatal(err)
	}
	next.Sealed[3] ^= 0xff
	upd.Sealed[4] ^= 0xff
	want.Sealed[2] ^= 0xff
	want.Revision = 2
	if l := must[[]storage.Revocation](t, "ListRevocations")(rs.ListRevocations(ctx)); !EqualRevocation(l[0], want) {
		t.Fatal("the store shares Sealed with an updated value")
	}
}

func deliveryIDs(ds []storage.Delivery) []string {
	ids := []string{}
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func testDeliveryEnqueue(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	cursor := func() uint64 {
		t.Helper()
		return must[uint64](t, "WebhookCursor")(ds.WebhookCursor(ctx))
	}
	if c := cursor(); c != 0 {
		t.Fatalf("cursor of a new store = %d", c)
	}
	a, b := NewDelivery("msg_a", T0), NewDelivery("msg_b", T0.Add(time.Second))
	a.Revision = 9 // ignored on enqueue
	if err := ds.EnqueueDeliveries(ctx, 5, []storage.Delivery{a, b}); err != nil {
		t.Fatalf("EnqueueDeliveries: %v", err)
	}
	if c := cursor(); c != 5 {
		t.Fatalf("cursor = %d, want 5", c)
	}
	for _, d := range []storage.Delivery{a, b} {
		got := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, d.ID))
		d.Revision = 1
		if !EqualDelivery(got, d) {
			t.Fatalf("GetDelivery = %+v, want %+v", got, d)
		}
	}
	_, err := ds.GetDelivery(ctx, "msg_none")
	wantErr(t, "GetDelivery of an unknown id", err, storage.ErrNotFound)
	_, err = ds.GetDelivery(ctx, "a/b")
	wantErr(t, "GetDelivery of a bad id", err, storage.ErrInvalidID)

	// Refusals are all or nothing: no delivery stored, the cursor kept.
	c, d := NewDelivery("msg_c", T0), NewDelivery("msg_d", T0)
	bad := NewDelivery("msg_bad", T0)
	bad.Status = "sent"
	for name, tc := range map[string]struct {
		cursor uint64
		ds     []storage.Delivery
		err    error
	}{
		"a cursor going back": {4, []storage.Delivery{c}, storage.ErrInvalidRecord},
		"a taken id":          {6, []storage.Delivery{c, a}, storage.ErrExists},
		"an id twice":         {6, []storage.Delivery{c, d, c}, storage.ErrExists},
		"an invalid delivery": {6, []storage.Delivery{c, bad}, storage.ErrInvalidRecord},
	} {
		err := ds.EnqueueDeliveries(ctx, tc.cursor, tc.ds)
		wantErr(t, "EnqueueDeliveries with "+name, err, tc.err)
		if got := cursor(); got != 5 {
			t.Fatalf("EnqueueDeliveries with %s moved the cursor to %d", name, got)
		}
		for _, x := range []string{"msg_c", "msg_d", "msg_bad"} {
			if _, err := ds.GetDelivery(ctx, x); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("EnqueueDeliveries with %s stored %s: %v", name, x, err)
			}
		}
	}
	// The same cursor again is fine, an empty batch moves the cursor alone.
	if err := ds.EnqueueDeliveries(ctx, 5, []storage.Delivery{c}); err != nil {
		t.Fatalf("EnqueueDeliveries at the same cursor: %v", err)
	}
	if err := ds.EnqueueDeliveries(ctx, 9, nil); err != nil || cursor() != 9 {
		t.Fatalf("empty EnqueueDeliveries: %v, cursor %d", err, cursor())
	}
	if l := must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, "", 0)); len(l) != 3 {
		t.Fatalf("%d deliveries, want 3", len(l))
	}

	// Invalid deliveries.
	for name, mut := range map[string]func(*storage.Delivery){
		"bad id":      func(d *storage.Delivery) { d.ID = "msg/1" },
		"no webhook":  func(d *storage.Delivery) { d.Webhook = "" },
		"bad tenant":  func(d *storage.Delivery) { d.TenantID = "../x" },
		"no type":     func(d *storage.Delivery) { d.Type = "" },
		"no status":   func(d *storage.Delivery) { d.Status = "" },
		"long id":     func(d *storage.Delivery) { d.ID = "msg_" + strings.Repeat("A", 125) },
		"leading dot": func(d *storage.Delivery) { d.ID = ".msg" },
	} {
		d := NewDelivery("msg_x", T0)
		mut(&d)
		wantErr(t, "EnqueueDeliveries with "+name, ds.EnqueueDeliveries(ctx, 9, []storage.Delivery{d}), storage.ErrInvalidRecord)
	}
	// A platform-level delivery names no tenant.
	k := NewDelivery("msg_key", T0)
	k.TenantID, k.Type = "", "key.rotated"
	if err := ds.EnqueueDeliveries(ctx, 10, []storage.Delivery{k}); err != nil {
		t.Fatalf("EnqueueDeliveries of a tenant-less delivery: %v", err)
	}
}

func testDeliveryList(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	if l := must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, "", 0)); len(l) != 0 {
		t.Fatalf("ListDeliveries of a new store = %d", len(l))
	}
	if l := must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, storage.DeliveryPending, 10)); len(l) != 0 {
		t.Fatalf("ListDeliveries(pending) of a new store = %d", len(l))
	}
	zone := time.FixedZone("UTC+5", 5*3600)
	mk := func(id string, next time.Time, status string) storage.Delivery {
		d := NewDelivery(id, next)
		d.Status = status
		return d
	}
	batch := []storage.Delivery{
		mk("msg_5", T0.Add(2*time.Second), storage.DeliveryPending),
		mk("msg_1", T0.Add(time.Second), storage.DeliveryPending),
		mk("msg_0", T0.Add(time.Second), storage.DeliveryPending), // same time: by id
		mk("msg_z", time.Time{}, storage.DeliveryPending),         // the zero time sorts first
		mk("msg_old", time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC), storage.DeliveryPending),
		mk("msg_zone", T0.Add(1500*time.Millisecond).In(zone), storage.DeliveryPending),
		mk("msg_ns", T0.Add(time.Second+time.Nanosecond), storage.DeliveryPending),
		mk("msg_f1", T0.Add(3*time.Second), storage.DeliveryFailed),
		mk("msg_f0", T0, storage.DeliveryFailed),
		mk("msg_ok", T0, storage.DeliveryDelivered),
	}
	if err := ds.EnqueueDeliveries(ctx, 1, batch); err != nil {
		t.Fatal(err)
	}
	list := func(status string, limit int) []string {
		t.Helper()
		return deliveryIDs(must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, status, limit)))
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
	pending := []string{"msg_z", "msg_old", "msg_0", "msg_1", "msg_ns", "msg_zone", "msg_5"}
	check("pending", list(storage.DeliveryPending, 0), pending)
	check("pending, limit 3", list(storage.DeliveryPending, 3), pending[:3])
	check("pending, limit -1", list(storage.DeliveryPending, -1), pending)
	check("failed", list(storage.DeliveryFailed, 0), []string{"msg_f0", "msg_f1"})
	check("delivered", list(storage.DeliveryDelivered, 0), []string{"msg_ok"})
	check("any", list("", 0), []string{"msg_z", "msg_old", "msg_f0", "msg_ok", "msg_0", "msg_1", "msg_ns", "msg_zone", "msg_5", "msg_f1"})
	check("any, limit 4", list("", 4), []string{"msg_z", "msg_old", "msg_f0", "msg_ok"})
	for _, d := range must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, "", 0)) {
		for _, w := range batch {
			if w.ID == d.ID {
				w.Revision = 1
				if !EqualDelivery(d, w) {
					t.Fatalf("listed %+v, want %+v", d, w)
				}
			}
		}
	}
	_, err := ds.ListDeliveries(ctx, "sent", 0)
	wantErr(t, "ListDeliveries of an unknown status", err, storage.ErrInvalidRecord)

	// An update moves the delivery in the order and between statuses.
	d := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_z"))
	d.NextAttemptAt = T0.Add(time.Hour)
	d.Attempts = 1
	must[storage.Delivery](t, "UpdateDelivery")(func() (storage.Delivery, error) {
		d, _, err := ds.UpdateDelivery(ctx, d, nil)
		return d, err
	}())
	check("pending after a retry is scheduled", list(storage.DeliveryPending, 0), append(slices.Clone(pending[1:]), "msg_z"))
	d = must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_0"))
	d.Status = storage.DeliveryFailed
	must[storage.Delivery](t, "UpdateDelivery")(func() (storage.Delivery, error) {
		d, _, err := ds.UpdateDelivery(ctx, d, nil)
		return d, err
	}())
	check("pending after a dead letter", list(storage.DeliveryPending, 0), []string{"msg_old", "msg_1", "msg_ns", "msg_zone", "msg_5", "msg_z"})
	check("failed after a dead letter", list(storage.DeliveryFailed, 0), []string{"msg_f0", "msg_0", "msg_f1"})
}

func testDeliveryUpdate(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	boom := errors.New("build failed")
	failing := func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom }
	headSeq := func() uint64 {
		t.Helper()
		return must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)).Seq
	}
	if err := ds.EnqueueDeliveries(ctx, 1, []storage.Delivery{NewDelivery("msg_1", T0)}); err != nil {
		t.Fatal(err)
	}
	d := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_1"))
	next := d
	next.Attempts, next.LastError, next.NextAttemptAt, next.UpdatedAt = 1, "HTTP 500", T0.Add(5*time.Second), T0.Add(time.Second)
	upd, rec, err := ds.UpdateDelivery(ctx, next, nil)
	if err != nil || upd.Revision != 2 || rec.Seq != 0 || headSeq() != 0 {
		t.Fatalf("UpdateDelivery: %+v seq %d %v", upd, rec.Seq, err)
	}
	next.Revision = 2
	if got := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_1")); !EqualDelivery(got, next) {
		t.Fatalf("GetDelivery = %+v, want %+v", got, next)
	}
	stale := next
	stale.Revision = 1
	_, _, err = ds.UpdateDelivery(ctx, stale, nil)
	wantErr(t, "stale UpdateDelivery", err, storage.ErrConflict)
	_, _, err = ds.UpdateDelivery(ctx, NewDelivery("msg_none", T0), nil)
	wantErr(t, "UpdateDelivery of an unknown id", err, storage.ErrNotFound)
	bad := next
	bad.Status = ""
	_, _, err = ds.UpdateDelivery(ctx, bad, nil)
	wantErr(t, "UpdateDelivery with no status", err, storage.ErrInvalidRecord)

	// The dead-lettering commits with its event, or not at all.
	dead := next
	dead.Status = storage.DeliveryFailed
	for name, build := range map[string]storage.AuditFunc{"failing": failing, "refused": refusedEvent} {
		if _, _, err := ds.UpdateDelivery(ctx, dead, build); err == nil {
			t.Fatalf("UpdateDelivery with a %s build succeeded", name)
		}
		if got := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_1")); got.Revision != 2 || got.Status != storage.DeliveryPending {
			t.Fatalf("delivery updated without its audit event (%s): %+v", name, got)
		}
		if l := must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, storage.DeliveryFailed, 0)); len(l) != 0 {
			t.Fatalf("a delivery updated without its audit event lists as failed (%s)", name)
		}
	}
	upd, rec, err = ds.UpdateDelivery(ctx, dead, ChainBuilder(`"action":"webhook.dead_letter"`))
	if err != nil || upd.Revision != 3 || rec.Seq != 1 || headSeq() != 1 {
		t.Fatalf("audited UpdateDelivery: %+v seq %d %v", upd, rec.Seq, err)
	}
	if _, _, err := ds.UpdateDelivery(ctx, dead, ChainBuilder(`"action":"webhook.dead_letter"`)); !errors.Is(err, storage.ErrConflict) || headSeq() != 1 {
		t.Fatalf("stale audited UpdateDelivery: %v, head %d", err, headSeq())
	}
	if l := list1(t, ds, storage.DeliveryFailed); !reflect.DeepEqual(l, []string{"msg_1"}) {
		t.Fatalf("failed = %v", l)
	}
	// Redelivery: back to pending.
	redo := upd
	redo.Status, redo.Attempts = storage.DeliveryPending, 0
	if _, _, err := ds.UpdateDelivery(ctx, redo, nil); err != nil {
		t.Fatal(err)
	}
	if l := list1(t, ds, storage.DeliveryFailed); len(l) != 0 {
		t.Fatalf("failed after redelivery = %v", l)
	}
	if l := list1(t, ds, storage.DeliveryPending); !reflect.DeepEqual(l, []string{"msg_1"}) {
		t.Fatalf("pending after redelivery = %v", l)
	}
}

func list1(t *testing.T, ds storage.DeliveryStore, status string) []string {
	t.Helper()
	return deliveryIDs(must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(context.Background(), status, 0)))
}

func testDeliveryPrune(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	if n, err := ds.PruneDeliveries(ctx, T0, 10); err != nil || n != 0 {
		t.Fatalf("PruneDeliveries of a new store = %d, %v", n, err)
	}
	mk := func(id, status string, updated time.Time) storage.Delivery {
		d := NewDelivery(id, T0)
		d.Status, d.UpdatedAt = status, updated
		return d
	}
	cut := T0.Add(time.Hour)
	batch := []storage.Delivery{
		mk("msg_p_old", storage.DeliveryPending, T0),
		mk("msg_d_old", storage.DeliveryDelivered, T0),
		mk("msg_f_old", storage.DeliveryFailed, T0),
		mk("msg_d_old2", storage.DeliveryDelivered, T0.Add(time.Minute)),
		mk("msg_d_at", storage.DeliveryDelivered, cut), // not before the cut
		mk("msg_f_new", storage.DeliveryFailed, cut.Add(time.Second)),
	}
	if err := ds.EnqueueDeliveries(ctx, 1, batch); err != nil {
		t.Fatal(err)
	}
	_, err := ds.PruneDeliveries(ctx, cut, 0)
	wantErr(t, "PruneDeliveries(max 0)", err, storage.ErrInvalidRecord)
	n, err := ds.PruneDeliveries(ctx, cut, 2)
	if err != nil || n != 2 {
		t.Fatalf("PruneDeliveries(max 2) = %d, %v", n, err)
	}
	n, err = ds.PruneDeliveries(ctx, cut, 10)
	if err != nil || n != 1 {
		t.Fatalf("second PruneDeliveries = %d, %v, want 1", n, err)
	}
	if n, err := ds.PruneDeliveries(ctx, cut, 10); err != nil || n != 0 {
		t.Fatalf("third PruneDeliveries = %d, %v, want 0", n, err)
	}
	if got, want := list1(t, ds, ""), []string{"msg_d_at", "msg_f_new", "msg_p_old"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("left after pruning: %v, want %v", got, want)
	}
	if got := list1(t, ds, storage.DeliveryDelivered); !reflect.DeepEqual(got, []string{"msg_d_at"}) {
		t.Fatalf("delivered after pruning: %v", got)
	}
	if got := list1(t, ds, storage.DeliveryFailed); !reflect.DeepEqual(got, []string{"msg_f_new"}) {
		t.Fatalf("failed after pruning: %v", got)
	}
	for _, id := range []string{"msg_d_old", "msg_f_old", "msg_d_old2"} {
		_, err := ds.GetDelivery(ctx, id)
		wantErr(t, "GetDelivery of a pruned one", err, storage.ErrNotFound)
	}
	// A pruned id is free again (the dispatcher never reuses one, but the
	// store keeps no trace).
	if err := ds.EnqueueDeliveries(ctx, 1, []storage.Delivery{NewDelivery("msg_d_old", T0)}); err != nil {
		t.Fatalf("re-enqueue a pruned id: %v", err)
	}
	if c := must[uint64](t, "WebhookCursor")(ds.WebhookCursor(ctx)); c != 1 {
		t.Fatalf("pruning moved the cursor to %d", c)
	}
}

func testDeliveriesReturnCopies(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	in := NewDelivery("msg_1", T0)
	want := in
	want.Body = bytes.Clone(in.Body)
	want.Revision = 1
	batch := []storage.Delivery{in}
	if err := ds.EnqueueDeliveries(ctx, 1, batch); err != nil {
		t.Fatal(err)
	}
	batch[0].Body[0] ^= 0xff
	got := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_1"))
	if !EqualDelivery(got, want) {
		t.Fatal("the store shares Body with the enqueued value")
	}
	got.Body[1] ^= 0xff
	l := must[[]storage.Delivery](t, "ListDeliveries")(ds.ListDeliveries(ctx, "", 0))
	if !EqualDelivery(l[0], want) {
		t.Fatal("the store shares Body with a returned value")
	}
	l[0].Body[2] ^= 0xff
	want.Body[2] ^= 0xff
	upd, _, err := ds.UpdateDelivery(ctx, l[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	l[0].Body[3] ^= 0xff
	upd.Body[4] ^= 0xff
	want.Revision = 2
	if got := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, "msg_1")); !EqualDelivery(got, want) {
		t.Fatal("the store shares Body with an updated value")
	}
}

// testDeliveriesConcurrent: concurrent dispatchers never move the cursor
// back nor lose a delivery they were told is stored, and concurrent CAS
// updates of one delivery serialise.
func testDeliveriesConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	ds := deliveries(t, s)
	const n = 24
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		stored []string
		maxOK  uint64
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := uint64(i%8 + 1)
			id := fmt.Sprintf("msg_%02d", i)
			err := ds.EnqueueDeliveries(ctx, c, []storage.Delivery{NewDelivery(id, T0)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				stored = append(stored, id)
				maxOK = max(maxOK, c)
			case !errors.Is(err, storage.ErrInvalidRecord):
				t.Errorf("EnqueueDeliveries(%d): %v", c, err)
			}
		}()
	}
	wg.Wait()
	if c := must[uint64](t, "WebhookCursor")(ds.WebhookCursor(ctx)); c != maxOK {
		t.Fatalf("cursor = %d, want the highest accepted, %d", c, maxOK)
	}
	slices.Sort(stored)
	if got := list1(t, ds, storage.DeliveryPending); !reflect.DeepEqual(got, stored) {
		t.Fatalf("stored %v, want the accepted %v", got, stored)
	}

	// CAS: each goroutine adds one attempt, retrying on conflict.
	id := stored[0]
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				d, err := ds.GetDelivery(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				d.Attempts++
				_, _, err = ds.UpdateDelivery(ctx, d, nil)
				if errors.Is(err, storage.ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		}()
	}
	wg.Wait()
	if d := must[storage.Delivery](t, "GetDelivery")(ds.GetDelivery(ctx, id)); d.Attempts != n || d.Revision != n+1 {
		t.Fatalf("after %d CAS increments: attempts %d revision %d", n, d.Attempts, d.Revision)
	}
}
