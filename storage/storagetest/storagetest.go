// Package storagetest is the behaviour every storage.Store backend must
// show, as one shared test suite: a backend's tests call Run with a
// constructor for fresh, empty stores.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// Run runs the suite. newStore must return a new, empty, open store for
// each call; Run closes it (Close must be idempotent, so newStore may also
// register its own Close with t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"Tenants", testTenants},
		{"UpdateTenant", testUpdateTenant},
		{"Integrations", testIntegrations},
		{"CompareAndSwap", testCompareAndSwap},
		{"Delete", testDelete},
		{"TenantIsolation", testTenantIsolation},
		{"InvalidIDs", testInvalidIDs},
		{"ReturnsCopies", testReturnsCopies},
		{"Audit", testAudit},
		{"AuditRejects", testAuditRejects},
		{"AuditConcurrent", testAuditConcurrent},
		{"AuditPrune", testAuditPrune},
		{"AuditPruneWhileAppending", testAuditPruneWhileAppending},
		{"AuditAnchorImport", testAuditAnchorImport},
		{"AuditAnchorImportNotEmpty", testAuditAnchorImportNotEmpty},
		{"NoEventWrites", testNoEventWrites},
		{"PutIntegrationAudited", testPutIntegrationAudited},
		{"TenantAudited", testTenantAudited},
		{"CASAudited", testCASAudited},
		{"AuditedMore", testAuditedMore},
		{"AuditedWritesUnderBatching", testAuditedWritesUnderBatching},
		{"Concurrency", testConcurrency},
		{"Backup", testBackup},
		{"Context", testContext},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
	t.Run("Lifecycle", func(t *testing.T) {
		for _, tc := range lifecycleTests {
			t.Run(tc.name, func(t *testing.T) {
				s := newStore(t)
				t.Cleanup(func() { _ = s.Close() })
				tc.fn(t, s)
			})
		}
	})
	t.Run("Connect", func(t *testing.T) {
		for _, tc := range connectTests {
			t.Run(tc.name, func(t *testing.T) {
				s := newStore(t)
				t.Cleanup(func() { _ = s.Close() })
				tc.fn(t, s)
			})
		}
	})
}

// T0 is a fixed time with nanoseconds, so a backend that loses precision
// or zone handling shows up.
var T0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// Ciphertext returns n deterministic pseudo-random bytes standing in for
// envelope ciphertext (realistic records are ~1 KiB).
func Ciphertext(seed string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	block := sha256.Sum256([]byte(seed))
	for len(out) < n {
		out = append(out, block[:]...)
		block = sha256.Sum256(block[:])
	}
	return out[:n]
}

// NewTenant returns a plausible tenant record.
func NewTenant(id string) storage.Tenant {
	return storage.Tenant{
		ID:         id,
		CreatedAt:  T0,
		Status:     storage.TenantActive,
		KEKVersion: 1,
		DEKVersion: 1,
		DEKs: []storage.WrappedDEK{{
			Version: 1, KEKVersion: 1,
			Nonce:      Ciphertext(id+"/nonce", 12),
			Ciphertext: Ciphertext(id+"/dek", 48),
			CreatedAt:  T0,
		}},
	}
}

// NewIntegration returns a plausible integration record whose token
// fields hold ctSize bytes of stand-in ciphertext each.
func NewIntegration(tenantID, id string, ctSize int) storage.Integration {
	return storage.Integration{
		ID:            id,
		TenantID:      tenantID,
		Provider:      "example",
		Scopes:        []string{"contacts.read", "contacts.write"},
		Status:        storage.StatusActive,
		TokenType:     "Bearer",
		ExpiresAt:     T0.Add(time.Hour),
		CreatedAt:     T0,
		UpdatedAt:     T0,
		LastRefreshAt: T0,
		AccessToken:   Ciphertext(tenantID+"/"+id+"/at", ctSize),
		RefreshToken:  Ciphertext(tenantID+"/"+id+"/rt", ctSize),
	}
}

func normTime(t time.Time) time.Time { return t.UTC() }

func normIntegration(in storage.Integration) storage.Integration {
	for _, p := range []*time.Time{&in.ExpiresAt, &in.CreatedAt, &in.UpdatedAt, &in.LastRefreshAt, &in.LastUsedAt, &in.NextRefreshAt} {
		*p = normTime(*p)
	}
	if len(in.Scopes) == 0 {
		in.Scopes = nil
	}
	if len(in.AccessToken) == 0 {
		in.AccessToken = nil
	}
	if len(in.RefreshToken) == 0 {
		in.RefreshToken = nil
	}
	if len(in.Params) == 0 {
		in.Params = nil
	}
	if len(in.Client) == 0 {
		in.Client = nil
	}
	return in
}

func normTenant(t storage.Tenant) storage.Tenant {
	t.CreatedAt = normTime(t.CreatedAt)
	if len(t.DEKs) == 0 {
		t.DEKs = nil
	}
	deks := make([]storage.WrappedDEK, len(t.DEKs))
	for i, d := range t.DEKs {
		d.CreatedAt = normTime(d.CreatedAt)
		deks[i] = d
	}
	if t.DEKs != nil {
		t.DEKs = deks
	}
	return t
}

// EqualIntegration reports whether a and b hold the same data (times
// compared as instants, nil and empty slices alike).
func EqualIntegration(a, b storage.Integration) bool {
	return reflect.DeepEqual(normIntegration(a), normIntegration(b))
}

// EqualTenant is EqualIntegration for tenants.
func EqualTenant(a, b storage.Tenant) bool {
	return reflect.DeepEqual(normTenant(a), normTenant(b))
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// pruner returns s's optional PruneAudit, skipping the test without it.
func pruner(t *testing.T, s storage.Store) storage.AuditPruner {
	t.Helper()
	p, ok := s.(storage.AuditPruner)
	if !ok {
		t.Skip("the store has no PruneAudit (optional storage.AuditPruner)")
	}
	return p
}

func createTenant(t *testing.T, s storage.Store, id string) storage.Tenant {
	t.Helper()
	return must[storage.Tenant](t, "CreateTenant "+id)(NoEvent(s).CreateTenant(context.Background(), NewTenant(id)))
}

func testTenants(t *testing.T, s storage.Store) {
	ctx := context.Background()
	list := must[[]storage.Tenant](t, "ListTenants empty")(s.ListTenants(ctx))
	if len(list) != 0 {
		t.Fatalf("ListTenants on empty store = %d tenants", len(list))
	}
	for _, id := range []string{"beta", "alpha", "gamma.1", "Alpha-2"} {
		in := NewTenant(id)
		in.Revision = 77 // ignored on create
		got := must[storage.Tenant](t, "CreateTenant")(NoEvent(s).CreateTenant(ctx, in))
		if got.Revision != 1 {
			t.Errorf("CreateTenant %s revision = %d, want 1", id, got.Revision)
		}
		in.Revision = 1
		if !EqualTenant(got, in) {
			t.Errorf("CreateTenant %s returned %+v, want %+v", id, got, in)
		}
	}
	_, err := NoEvent(s).CreateTenant(ctx, NewTenant("alpha"))
	wantErr(t, "CreateTenant duplicate", err, storage.ErrExists)

	got := must[storage.Tenant](t, "GetTenant")(s.GetTenant(ctx, "alpha"))
	want := NewTenant("alpha")
	want.Revision = 1
	if !EqualTenant(got, want) {
		t.Fatalf("GetTenant = %+v, want %+v", got, want)
	}
	if d, ok := got.CurrentDEK(); !ok || !bytes.Equal(d.Ciphertext, want.DEKs[0].Ciphertext) {
		t.Fatalf("GetTenant lost the wrapped DEK")
	}
	_, err = s.GetTenant(ctx, "nobody")
	wantErr(t, "GetTenant missing", err, storage.ErrTenantNotFound)

	list = must[[]storage.Tenant](t, "ListTenants")(s.ListTenants(ctx))
	var ids []string
	for _, tn := range list {
		ids = append(ids, tn.ID)
	}
	if want := []string{"Alpha-2", "alpha", "beta", "gamma.1"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("ListTenants ids = %v, want %v (sorted)", ids, want)
	}
}

func testUpdateTenant(t *testing.T, s storage.Store) {
	ctx := context.Background()
	t1 := createTenant(t, s, "acme")
	upd := t1
	upd.Status = storage.TenantDisabled
	upd.DEKVersion = 2
	upd.DEKs = append(upd.DEKs, storage.WrappedDEK{Version: 2, KEKVersion: 1, Nonce: Ciphertext("n2", 12), Ciphertext: Ciphertext("d2", 48), CreatedAt: T0})
	t2 := must[storage.Tenant](t, "UpdateTenant")(NoEvent(s).UpdateTenant(ctx, upd))
	if t2.Revision != 2 || t2.Status != storage.TenantDisabled || len(t2.DEKs) != 2 {
		t.Fatalf("UpdateTenant = rev %d status %q deks %d", t2.Revision, t2.Status, len(t2.DEKs))
	}
	// A second writer holding revision 1 must lose.
	stale := t1
	stale.Status = storage.TenantActive
	_, err := NoEvent(s).UpdateTenant(ctx, stale)
	wantErr(t, "UpdateTenant stale", err, storage.ErrConflict)
	got := must[storage.Tenant](t, "GetTenant")(s.GetTenant(ctx, "acme"))
	if !EqualTenant(got, t2) {
		t.Fatalf("after a conflicting update GetTenant = %+v, want %+v", got, t2)
	}
	if _, ok := got.DEK(2); !ok {
		t.Fatal("DEK version 2 missing after update")
	}
	missing := NewTenant("ghost")
	_, err = NoEvent(s).UpdateTenant(ctx, missing)
	wantErr(t, "UpdateTenant missing", err, storage.ErrTenantNotFound)
}

func testIntegrations(t *testing.T, s storage.Store) {
	ctx := context.Background()
	_, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 64))
	wantErr(t, "PutIntegration into missing tenant", err, storage.ErrTenantNotFound)
	_, err = s.ListIntegrations(ctx, "acme")
	wantErr(t, "ListIntegrations of missing tenant", err, storage.ErrTenantNotFound)

	createTenant(t, s, "acme")
	if l := must[[]storage.Integration](t, "ListIntegrations empty")(s.ListIntegrations(ctx, "acme")); len(l) != 0 {
		t.Fatalf("ListIntegrations of new tenant = %d records", len(l))
	}

	in := NewIntegration("", "crm", 1024) // TenantID filled in by the store
	in.Revision = 42                      // ignored by Put
	p1 := must[storage.Integration](t, "PutIntegration create")(NoEvent(s).PutIntegration(ctx, "acme", in))
	if p1.Revision != 1 || p1.TenantID != "acme" {
		t.Fatalf("PutIntegration create: revision %d tenant %q, want 1 acme", p1.Revision, p1.TenantID)
	}
	want := in
	want.TenantID, want.Revision = "acme", 1
	if !EqualIntegration(p1, want) {
		t.Fatalf("PutIntegration returned %+v, want %+v", p1, want)
	}
	got := must[storage.Integration](t, "GetIntegration")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(got, want) {
		t.Fatalf("GetIntegration = %+v, want %+v", got, want)
	}

	in.Status = storage.StatusDegraded
	in.LastError = "provider timeout"
	in.Revision = 0
	p2 := must[storage.Integration](t, "PutIntegration replace")(NoEvent(s).PutIntegration(ctx, "acme", in))
	if p2.Revision != 2 {
		t.Fatalf("PutIntegration replace revision = %d, want 2", p2.Revision)
	}
	got = must[storage.Integration](t, "GetIntegration")(s.GetIntegration(ctx, "acme", "crm"))
	if got.Status != storage.StatusDegraded || got.LastError != "provider timeout" || got.Revision != 2 {
		t.Fatalf("after replace GetIntegration = status %q error %q rev %d", got.Status, got.LastError, got.Revision)
	}

	for _, id := range []string{"zeta", "alpha", "mid-1", "Mid_2"} {
		must[storage.Integration](t, "PutIntegration "+id)(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", id, 32)))
	}
	list := must[[]storage.Integration](t, "ListIntegrations")(s.ListIntegrations(ctx, "acme"))
	var ids []string
	for _, x := range list {
		ids = append(ids, x.ID)
		if x.TenantID != "acme" {
			t.Errorf("listed %s with tenant %q", x.ID, x.TenantID)
		}
	}
	if w := []string{"Mid_2", "alpha", "crm", "mid-1", "zeta"}; !reflect.DeepEqual(ids, w) {
		t.Fatalf("ListIntegrations ids = %v, want %v", ids, w)
	}

	_, err = s.GetIntegration(ctx, "acme", "nope")
	wantErr(t, "GetIntegration missing", err, storage.ErrNotFound)
}

func testCompareAndSwap(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	p1 := must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 128)))

	next := p1
	next.RefreshCount = 1
	next.AccessToken = Ciphertext("new-at", 128)
	c2 := must[storage.Integration](t, "CAS")(NoEvent(s).CompareAndSwapIntegration(ctx, "acme", next))
	if c2.Revision != 2 || c2.RefreshCount != 1 {
		t.Fatalf("CAS = rev %d count %d, want 2 1", c2.Revision, c2.RefreshCount)
	}

	stale := p1 // still revision 1
	stale.RefreshCount = 99
	_, err := NoEvent(s).CompareAndSwapIntegration(ctx, "acme", stale)
	wantErr(t, "CAS with stale revision", err, storage.ErrConflict)
	got := must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(got, c2) {
		t.Fatalf("a failed CAS changed the record: %+v, want %+v", got, c2)
	}

	future := c2
	future.Revision = 10
	_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "acme", future)
	wantErr(t, "CAS with future revision", err, storage.ErrConflict)

	ghost := NewIntegration("acme", "ghost", 16)
	_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "acme", ghost)
	wantErr(t, "CAS of missing id", err, storage.ErrNotFound)
	_, err = s.GetIntegration(ctx, "acme", "ghost")
	wantErr(t, "CAS must not create", err, storage.ErrNotFound)
	ghost.TenantID = ""
	_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "nobody", ghost)
	wantErr(t, "CAS in missing tenant", err, storage.ErrNotFound)
}

func testDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 16)))
	must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "erp", 16)))
	if err := NoEvent(s).DeleteIntegration(ctx, "acme", "crm"); err != nil {
		t.Fatalf("DeleteIntegration: %v", err)
	}
	_, err := s.GetIntegration(ctx, "acme", "crm")
	wantErr(t, "Get after delete", err, storage.ErrNotFound)
	wantErr(t, "second delete", NoEvent(s).DeleteIntegration(ctx, "acme", "crm"), storage.ErrNotFound)
	wantErr(t, "delete in missing tenant", NoEvent(s).DeleteIntegration(ctx, "nobody", "crm"), storage.ErrNotFound)
	list := must[[]storage.Integration](t, "List")(s.ListIntegrations(ctx, "acme"))
	if len(list) != 1 || list[0].ID != "erp" {
		t.Fatalf("after delete List = %v", list)
	}
	// A re-created record starts over.
	p := must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 16)))
	if p.Revision != 1 {
		t.Fatalf("re-created record revision = %d, want 1", p.Revision)
	}
}

func testTenantIsolation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "tenant-a")
	createTenant(t, s, "tenant-b")

	// What B sees for an id nobody has, before A creates it.
	_, errBefore := s.GetIntegration(ctx, "tenant-b", "shared")
	wantErr(t, "B get before", errBefore, storage.ErrNotFound)

	a := must[storage.Integration](t, "A put")(NoEvent(s).PutIntegration(ctx, "tenant-a", NewIntegration("tenant-a", "shared", 256)))

	_, errAfter := s.GetIntegration(ctx, "tenant-b", "shared")
	wantErr(t, "B get A's id", errAfter, storage.ErrNotFound)
	if errBefore.Error() != errAfter.Error() {
		t.Fatalf("B's view of A's id differs from a missing id: %q vs %q", errAfter, errBefore)
	}
	_, errGhost := s.GetIntegration(ctx, "no-such-tenant", "shared")
	wantErr(t, "unknown tenant get", errGhost, storage.ErrNotFound)
	if errGhost.Error() != errBefore.Error() {
		t.Fatalf("unknown tenant answers %q, missing id answers %q", errGhost, errBefore)
	}

	cas := a
	cas.Status = storage.StatusReauthorizationRequired
	cas.TenantID = ""
	_, err := NoEvent(s).CompareAndSwapIntegration(ctx, "tenant-b", cas)
	wantErr(t, "B CAS on A's id", err, storage.ErrNotFound)
	wantErr(t, "B delete A's id", NoEvent(s).DeleteIntegration(ctx, "tenant-b", "shared"), storage.ErrNotFound)
	if l := must[[]storage.Integration](t, "B list")(s.ListIntegrations(ctx, "tenant-b")); len(l) != 0 {
		t.Fatalf("B lists %d integrations, want 0", len(l))
	}

	// A record naming tenant A cannot be written through tenant B.
	forged := a
	forged.AccessToken = Ciphertext("forged", 256)
	_, err = NoEvent(s).PutIntegration(ctx, "tenant-b", forged)
	wantErr(t, "B put naming tenant A", err, storage.ErrInvalidRecord)
	_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "tenant-a", func() storage.Integration { x := a; x.TenantID = "tenant-b"; return x }())
	wantErr(t, "CAS naming another tenant", err, storage.ErrInvalidRecord)

	// B may own the same id independently.
	b := NewIntegration("tenant-b", "shared", 256)
	b.Provider = "other"
	pb := must[storage.Integration](t, "B put")(NoEvent(s).PutIntegration(ctx, "tenant-b", b))
	pb = must[storage.Integration](t, "B put again")(NoEvent(s).PutIntegration(ctx, "tenant-b", b))
	if pb.Revision != 2 {
		t.Fatalf("B's revision = %d, want 2 (independent of A)", pb.Revision)
	}

	gotA := must[storage.Integration](t, "A get")(s.GetIntegration(ctx, "tenant-a", "shared"))
	if !EqualIntegration(gotA, a) {
		t.Fatalf("tenant B's operations changed A's record: %+v, want %+v", gotA, a)
	}
	gotB := must[storage.Integration](t, "B get")(s.GetIntegration(ctx, "tenant-b", "shared"))
	if gotB.Provider != "other" || gotB.TenantID != "tenant-b" {
		t.Fatalf("B's record = provider %q tenant %q", gotB.Provider, gotB.TenantID)
	}
}

// BadIDs are ids storage.ValidID must refuse.
var BadIDs = []string{"", "-lead", ".lead", "a/b", "../x", "a b", "a\x00b", "t/x", "ü", "a\nb", strings.Repeat("a", 129)}

func testInvalidIDs(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "ok", 16)))
	if !storage.ValidID(strings.Repeat("a", 128)) {
		t.Fatal("a 128-character id must be valid")
	}
	for _, bad := range BadIDs {
		if storage.ValidID(bad) {
			t.Fatalf("ValidID(%q) = true", bad)
		}
		_, err := NoEvent(s).CreateTenant(ctx, NewTenant(bad))
		wantErr(t, fmt.Sprintf("CreateTenant(%q)", bad), err, storage.ErrInvalidID)
		_, err = s.GetTenant(ctx, bad)
		wantErr(t, fmt.Sprintf("GetTenant(%q)", bad), err, storage.ErrInvalidID)
		_, err = s.ListIntegrations(ctx, bad)
		wantErr(t, fmt.Sprintf("ListIntegrations(%q)", bad), err, storage.ErrInvalidID)
		_, err = NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", bad, 16))
		wantErr(t, fmt.Sprintf("PutIntegration id %q", bad), err, storage.ErrInvalidID)
		_, err = NoEvent(s).PutIntegration(ctx, bad, NewIntegration("", "ok", 16))
		wantErr(t, fmt.Sprintf("PutIntegration tenant %q", bad), err, storage.ErrInvalidID)
		_, err = s.GetIntegration(ctx, "acme", bad)
		wantErr(t, fmt.Sprintf("GetIntegration id %q", bad), err, storage.ErrInvalidID)
		_, err = s.GetIntegration(ctx, bad, "ok")
		wantErr(t, fmt.Sprintf("GetIntegration tenant %q", bad), err, storage.ErrInvalidID)
		_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "acme", NewIntegration("acme", bad, 16))
		wantErr(t, fmt.Sprintf("CAS id %q", bad), err, storage.ErrInvalidID)
		wantErr(t, fmt.Sprintf("Delete id %q", bad), NoEvent(s).DeleteIntegration(ctx, "acme", bad), storage.ErrInvalidID)
		wantErr(t, fmt.Sprintf("Delete tenant %q", bad), NoEvent(s).DeleteIntegration(ctx, bad, "ok"), storage.ErrInvalidID)
	}
	if l := must[[]storage.Tenant](t, "ListTenants")(s.ListTenants(ctx)); len(l) != 1 {
		t.Fatalf("invalid creates left %d tenants, want 1", len(l))
	}
}

func testReturnsCopies(t *testing.T, s storage.Store) {
	ctx := context.Background()
	tn := NewTenant("acme")
	created := must[storage.Tenant](t, "CreateTenant")(NoEvent(s).CreateTenant(ctx, tn))
	tn.DEKs[0].Ciphertext[0] ^= 0xff // caller's input after the call
	created.DEKs[0].Nonce[0] ^= 0xff // the returned value
	got := must[storage.Tenant](t, "GetTenant")(s.GetTenant(ctx, "acme"))
	if !bytes.Equal(got.DEKs[0].Ciphertext, NewTenant("acme").DEKs[0].Ciphertext) ||
		!bytes.Equal(got.DEKs[0].Nonce, NewTenant("acme").DEKs[0].Nonce) {
		t.Fatal("mutating CreateTenant's input or result changed the stored tenant")
	}
	got.DEKs[0].Ciphertext[1] ^= 0xff
	if again := must[storage.Tenant](t, "GetTenant")(s.GetTenant(ctx, "acme")); !bytes.Equal(again.DEKs[0].Ciphertext, NewTenant("acme").DEKs[0].Ciphertext) {
		t.Fatal("mutating GetTenant's result changed the stored tenant")
	}

	in := NewIntegration("acme", "crm", 64)
	pristine := NewIntegration("acme", "crm", 64)
	put := must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", in))
	in.Scopes[0] = "admin"
	in.AccessToken[0] ^= 0xff
	put.Scopes[1] = "admin"
	put.RefreshToken[0] ^= 0xff
	got1 := must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	pristine.Revision = 1
	if !EqualIntegration(got1, pristine) {
		t.Fatal("mutating PutIntegration's input or result changed the stored record")
	}
	got1.Scopes[0] = "admin"
	got1.AccessToken[0] ^= 0xff
	list := must[[]storage.Integration](t, "List")(s.ListIntegrations(ctx, "acme"))
	list[0].RefreshToken[0] ^= 0xff
	list[0].Scopes = append(list[0].Scopes[:0], "admin")
	got2 := must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(got2, pristine) {
		t.Fatal("mutating GetIntegration/ListIntegrations results changed the stored record")
	}

	rec := must[storage.AuditRecord](t, "AppendAudit")(s.AppendAudit(ctx, ChainBuilder(`"action":"x"`)))
	rec.Data[0] = 'X'
	var scanned []storage.AuditRecord
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		scanned = append(scanned, r)
		r.Data[0] = 'Y'
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		if r.Data[0] != '{' {
			t.Errorf("mutating an audit record's Data changed the store: %q", r.Data)
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(scanned) != 1 {
		t.Fatalf("scanned %d records, want 1", len(scanned))
	}
}

// ChainBuilder returns a pure AppendAudit build function producing an
// event `{"seq":N,<body>,"prev_hash":...,"hash":...}` with a simplified
// chain (SHA-256 over prev_hash, "\n", the event text without hash; not
// the RFC 8785 form the audit package uses, which storage need not know).
// It is deterministic in head, as build functions must be.
func ChainBuilder(body string) storage.AuditFunc {
	return func(head storage.AuditHead) (storage.AuditRecord, error) {
		seq := head.Seq + 1
		unhashed := fmt.Sprintf(`{"seq":%d,%s,"prev_hash":%q}`, seq, body, head.Hash)
		sum := sha256.Sum256([]byte(head.Hash + "\n" + unhashed))
		h := hex.EncodeToString(sum[:])
		data := fmt.Sprintf(`{"seq":%d,%s,"prev_hash":%q,"hash":%q}`, seq, body, head.Hash, h)
		return storage.AuditRecord{Seq: seq, Hash: h, Data: []byte(data)}, nil
	}
}

// VerifyChain checks that recs are contiguous from seq 1 and chain as
// ChainBuilder makes them.
func VerifyChain(recs []storage.AuditRecord) error {
	prev := storage.GenesisHash
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			return fmt.Errorf("record %d has seq %d", i, r.Seq)
		}
		var ev map[string]any
		if err := json.Unmarshal(r.Data, &ev); err != nil {
			return fmt.Errorf("seq %d: %v", r.Seq, err)
		}
		if ev["prev_hash"] != prev || ev["hash"] != r.Hash {
			return fmt.Errorf("seq %d: chain broken", r.Seq)
		}
		idx := bytes.LastIndex(r.Data, []byte(`,"hash":`))
		if idx < 0 {
			return fmt.Errorf("seq %d: no hash field", r.Seq)
		}
		unhashed := string(r.Data[:idx]) + "}"
		sum := sha256.Sum256([]byte(prev + "\n" + unhashed))
		if hex.EncodeToString(sum[:]) != r.Hash {
			return fmt.Errorf("seq %d: hash mismatch", r.Seq)
		}
		prev = r.Hash
	}
	return nil
}

func scanAll(t *testing.T, s storage.Store, after uint64) []storage.AuditRecord {
	t.Helper()
	var out []storage.AuditRecord
	if err := s.ScanAudit(context.Background(), after, func(r storage.AuditRecord) (bool, error) {
		out = append(out, r)
		return true, nil
	}); err != nil {
		t.Fatalf("ScanAudit(%d): %v", after, err)
	}
	return out
}

func testAudit(t *testing.T, s storage.Store) {
	ctx := context.Background()
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	if head.Seq != 0 || head.Hash != storage.GenesisHash {
		t.Fatalf("empty AuditHead = %+v", head)
	}
	if got := scanAll(t, s, 0); len(got) != 0 {
		t.Fatalf("empty scan returned %d records", len(got))
	}
	const n = 10
	var appended []storage.AuditRecord
	for i := range n {
		var seen storage.AuditHead
		build := ChainBuilder(fmt.Sprintf(`"action":"token.store","detail":"event %d"`, i))
		rec := must[storage.AuditRecord](t, "AppendAudit")(s.AppendAudit(ctx, func(h storage.AuditHead) (storage.AuditRecord, error) {
			seen = h
			return build(h)
		}))
		if seen.Seq != uint64(i) {
			t.Fatalf("build saw head seq %d, want %d", seen.Seq, i)
		}
		if rec.Seq != uint64(i+1) {
			t.Fatalf("AppendAudit seq = %d, want %d", rec.Seq, i+1)
		}
		appended = append(appended, rec)
	}
	head = must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	if head.Seq != n || head.Hash != appended[n-1].Hash {
		t.Fatalf("AuditHead = %+v, want seq %d hash %s", head, n, appended[n-1].Hash)
	}
	all := scanAll(t, s, 0)
	if !reflect.DeepEqual(all, appended) {
		t.Fatalf("ScanAudit(0) differs from what was appended")
	}
	if err := VerifyChain(all); err != nil {
		t.Fatalf("stored chain: %v", err)
	}
	tail := scanAll(t, s, 7)
	if len(tail) != 3 || tail[0].Seq != 8 || tail[2].Seq != 10 {
		t.Fatalf("ScanAudit(7) = %d records starting %v", len(tail), tail)
	}
	if got := scanAll(t, s, n); len(got) != 0 {
		t.Fatalf("ScanAudit(head) returned %d records", len(got))
	}
	if got := scanAll(t, s, n+100); len(got) != 0 {
		t.Fatalf("ScanAudit(beyond head) returned %d records", len(got))
	}

	var count int
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		count++
		return count < 3, nil
	}); err != nil || count != 3 {
		t.Fatalf("ScanAudit stopping after 3: count %d err %v", count, err)
	}
	stop := errors.New("consumer failed")
	count = 0
	err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		count++
		return true, stop
	})
	if !errors.Is(err, stop) || count != 1 {
		t.Fatalf("ScanAudit with failing fn: count %d err %v", count, err)
	}
}

func testAuditRejects(t *testing.T, s storage.Store) {
	ctx := context.Background()
	first := must[storage.AuditRecord](t, "AppendAudit")(s.AppendAudit(ctx, ChainBuilder(`"action":"a"`)))
	head0 := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))

	boom := errors.New("build failed")
	_, err := s.AppendAudit(ctx, func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("build error: got %v", err)
	}
	for name, build := range map[string]func(storage.AuditHead) (storage.AuditRecord, error){
		"seq reused": func(h storage.AuditHead) (storage.AuditRecord, error) { return first, nil },
		"seq skipped": func(h storage.AuditHead) (storage.AuditRecord, error) {
			return ChainBuilder(`"action":"b"`)(storage.AuditHead{Seq: h.Seq + 1, Hash: h.Hash})
		},
		"hash missing": func(h storage.AuditHead) (storage.AuditRecord, error) {
			r, _ := ChainBuilder(`"action":"b"`)(h)
			r.Hash = ""
			return r, nil
		},
		"data hash differs": func(h storage.AuditHead) (storage.AuditRecord, error) {
			r, _ := ChainBuilder(`"action":"b"`)(h)
			r.Hash = strings.Repeat("1", 64)
			return r, nil
		},
		"data not json": func(h storage.AuditHead) (storage.AuditRecord, error) {
			r, _ := ChainBuilder(`"action":"b"`)(h)
			r.Data = []byte("not json")
			return r, nil
		},
		"data multi-line": func(h storage.AuditHead) (storage.AuditRecord, error) {
			r, _ := ChainBuilder(`"action":"b"`)(h)
			r.Data = bytes.Replace(r.Data, []byte(`,"action"`), []byte(",\n\"action\""), 1)
			return r, nil
		},
	} {
		_, err := s.AppendAudit(ctx, build)
		wantErr(t, "AppendAudit "+name, err, storage.ErrInvalidRecord)
	}
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	if head != head0 {
		t.Fatalf("rejected appends moved the head: %+v, want %+v", head, head0)
	}
	if got := scanAll(t, s, 0); len(got) != 1 {
		t.Fatalf("rejected appends stored records: %d", len(got))
	}
	// The chain continues normally afterwards.
	must[storage.AuditRecord](t, "AppendAudit")(s.AppendAudit(ctx, ChainBuilder(`"action":"c"`)))
	if err := VerifyChain(scanAll(t, s, 0)); err != nil {
		t.Fatal(err)
	}
}

func testAuditConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const writers, each = 20, 5
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.AppendAudit(ctx, ChainBuilder(fmt.Sprintf(`"actor":"w%d","detail":"%d"`, w, i))); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	all := scanAll(t, s, 0)
	if len(all) != writers*each {
		t.Fatalf("stored %d events, want %d", len(all), writers*each)
	}
	if err := VerifyChain(all); err != nil {
		t.Fatalf("chain after concurrent appends: %v", err)
	}
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	if head.Seq != writers*each || head.Hash != all[len(all)-1].Hash {
		t.Fatalf("AuditHead = %+v", head)
	}
}

// testConcurrency: 100 goroutines at once. CAS incrementers must produce
// exactly the right count (no lost update), readers must never see a torn
// or regressing record, and plain writers must not disturb either.
func testConcurrency(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	must[storage.Integration](t, "Put counter")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "counter", 512)))

	const (
		incrementers = 50
		increments   = 2
		readers      = 25
		reads        = 20
		writers      = 25
		writes       = 4
		maxAttempts  = 2000 // per increment: bounded retries
	)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conflicts int
	for g := range incrementers {
		wg.Go(func() {
			for range increments {
				done := false
				for attempt := 0; attempt < maxAttempts && !done; attempt++ {
					cur, err := s.GetIntegration(ctx, "acme", "counter")
					if err != nil {
						t.Errorf("incrementer %d: get: %v", g, err)
						return
					}
					cur.RefreshCount++
					cur.UpdatedAt = T0.Add(time.Duration(cur.RefreshCount) * time.Second)
					_, err = NoEvent(s).CompareAndSwapIntegration(ctx, "acme", cur)
					switch {
					case err == nil:
						done = true
					case errors.Is(err, storage.ErrConflict):
						mu.Lock()
						conflicts++
						mu.Unlock()
					default:
						t.Errorf("incrementer %d: CAS: %v", g, err)
						return
					}
				}
				if !done {
					t.Errorf("incrementer %d: no success in %d attempts", g, maxAttempts)
					return
				}
			}
		})
	}
	for g := range readers {
		wg.Go(func() {
			var last uint64
			for range reads {
				cur, err := s.GetIntegration(ctx, "acme", "counter")
				if err != nil {
					t.Errorf("reader %d: %v", g, err)
					return
				}
				// Only CAS increments write the counter after the initial
				// Put, so revision and count move in lockstep.
				if cur.Revision != cur.RefreshCount+1 {
					t.Errorf("reader %d: torn record: revision %d count %d", g, cur.Revision, cur.RefreshCount)
					return
				}
				if cur.RefreshCount < last {
					t.Errorf("reader %d: counter went back from %d to %d", g, last, cur.RefreshCount)
					return
				}
				last = cur.RefreshCount
			}
		})
	}
	for g := range writers {
		wg.Go(func() {
			id := fmt.Sprintf("writer-%d", g)
			for i := range writes {
				p, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", id, 512))
				if err != nil {
					t.Errorf("writer %d: %v", g, err)
					return
				}
				if p.Revision != uint64(i+1) {
					t.Errorf("writer %d: revision %d after %d puts", g, p.Revision, i+1)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	final := must[storage.Integration](t, "Get counter")(s.GetIntegration(ctx, "acme", "counter"))
	if final.RefreshCount != incrementers*increments || final.Revision != incrementers*increments+1 {
		t.Fatalf("counter = %d (revision %d), want %d (revision %d)",
			final.RefreshCount, final.Revision, incrementers*increments, incrementers*increments+1)
	}
	list := must[[]storage.Integration](t, "List")(s.ListIntegrations(ctx, "acme"))
	if len(list) != writers+1 {
		t.Fatalf("listed %d integrations, want %d", len(list), writers+1)
	}
	for _, in := range list {
		if in.ID != "counter" && in.Revision != writes {
			t.Errorf("%s: revision %d, want %d", in.ID, in.Revision, writes)
		}
	}
	t.Logf("%d CAS conflicts retried", conflicts)
}

func testBackup(t *testing.T, s storage.Store) {
	ctx := context.Background()
	b, ok := s.(storage.Backuper)
	if !ok {
		t.Skip("the store has no Backup (optional storage.Backuper)")
	}
	createTenant(t, s, "acme")
	must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 1024)))
	var buf bytes.Buffer
	n, err := b.Backup(ctx, &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if n <= 0 || int64(buf.Len()) != n {
		t.Fatalf("Backup wrote %d bytes, reported %d", buf.Len(), n)
	}
	// The store stays online.
	must[storage.Integration](t, "Put after backup")(NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "erp", 16)))
}

func testContext(t *testing.T, s storage.Store) {
	createTenant(t, s, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	_, checks["CreateTenant"] = NoEvent(s).CreateTenant(ctx, NewTenant("other"))
	_, checks["GetTenant"] = s.GetTenant(ctx, "acme")
	_, checks["ListTenants"] = s.ListTenants(ctx)
	_, checks["PutIntegration"] = NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 16))
	_, checks["GetIntegration"] = s.GetIntegration(ctx, "acme", "crm")
	_, checks["ListIntegrations"] = s.ListIntegrations(ctx, "acme")
	checks["DeleteIntegration"] = NoEvent(s).DeleteIntegration(ctx, "acme", "crm")
	connectChecks(ctx, s, checks)
	lifecycleChecks(ctx, s, checks)
	_, checks["AppendAudit"] = s.AppendAudit(ctx, ChainBuilder(`"action":"x"`))
	_, checks["AuditHead"] = s.AuditHead(ctx)
	if b, ok := s.(storage.Backuper); ok {
		_, checks["Backup"] = b.Backup(ctx, &bytes.Buffer{})
	}
	checks["Ping"] = s.Ping(ctx)
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	bg := context.Background()
	if _, err := s.GetTenant(bg, "other"); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Errorf("a cancelled CreateTenant left a tenant behind: %v", err)
	}
	if _, err := s.GetIntegration(bg, "acme", "crm"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a cancelled PutIntegration left a record behind: %v", err)
	}
	if _, err := s.GetConnectSession(bg, "acme", "cs-1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a cancelled CreateConnectSession left a session behind: %v", err)
	}
	if _, err := s.FindConnectSession(bg, NewConnectSession("acme", "cs-1").LinkHash); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a cancelled CreateConnectSession left a digest indexed: %v", err)
	}
	if h, err := s.AuditHead(bg); err != nil || h.Seq != 0 {
		t.Errorf("a cancelled AppendAudit moved the head: %+v %v", h, err)
	}
	lifecycleUntouched(t, s)
}

func testClose(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	createTenant(t, s, "acme")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["CreateTenant"] = NoEvent(s).CreateTenant(ctx, NewTenant("other"))
	_, checks["GetTenant"] = s.GetTenant(ctx, "acme")
	_, checks["ListTenants"] = s.ListTenants(ctx)
	_, checks["UpdateTenant"] = NoEvent(s).UpdateTenant(ctx, NewTenant("acme"))
	_, checks["PutIntegration"] = NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 16))
	_, checks["GetIntegration"] = s.GetIntegration(ctx, "acme", "crm")
	_, checks["ListIntegrations"] = s.ListIntegrations(ctx, "acme")
	_, checks["CompareAndSwapIntegration"] = NoEvent(s).CompareAndSwapIntegration(ctx, "acme", NewIntegration("acme", "crm", 16))
	checks["DeleteIntegration"] = NoEvent(s).DeleteIntegration(ctx, "acme", "crm")
	connectChecks(ctx, s, checks)
	lifecycleChecks(ctx, s, checks)
	_, checks["AppendAudit"] = s.AppendAudit(ctx, ChainBuilder(`"action":"x"`))
	checks["ScanAudit"] = s.ScanAudit(ctx, 0, func(storage.AuditRecord) (bool, error) { return true, nil })
	_, checks["AuditHead"] = s.AuditHead(ctx)
	if b, ok := s.(storage.Backuper); ok {
		_, checks["Backup"] = b.Backup(ctx, &bytes.Buffer{})
	}
	checks["Ping"] = s.Ping(ctx)
	for name, err := range checks {
		if !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close: %v, want storage.ErrClosed", name, err)
		}
	}
}

// testNoEventWrites: a write with a nil AuditFunc commits alone, returns a
// zero AuditRecord and leaves the chain as it was; AppendAudit, which has
// nothing but the event to write, refuses a nil one.
func testNoEventWrites(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := s.AppendAudit(ctx, ChainBuilder(`"action":"a"`)); err != nil {
		t.Fatal(err)
	}
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	zero := storage.AuditRecord{}
	check := func(what string, rec storage.AuditRecord, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !reflect.DeepEqual(rec, zero) {
			t.Fatalf("%s with no event returned record %+v", what, rec)
		}
		if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h != head {
			t.Fatalf("%s with no event moved the head from %+v to %+v", what, head, h)
		}
	}
	tn, rec, err := s.CreateTenant(ctx, NewTenant("acme"), nil)
	check("CreateTenant", rec, err)
	_, rec, err = s.UpdateTenant(ctx, tn, nil)
	check("UpdateTenant", rec, err)
	in, rec, err := s.PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 64), nil)
	check("PutIntegration", rec, err)
	in.LastUsedAt = T0.Add(time.Minute)
	got, rec, err := s.CompareAndSwapIntegration(ctx, "acme", in, nil)
	check("CompareAndSwapIntegration", rec, err)
	if got.Revision != 2 || !got.LastUsedAt.Equal(in.LastUsedAt) {
		t.Fatalf("CAS with no event stored %+v", got)
	}
	rec, err = s.DeleteIntegration(ctx, "acme", "crm", nil)
	check("DeleteIntegration", rec, err)
	if _, err := s.GetIntegration(ctx, "acme", "crm"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after DeleteIntegration with no event: %v", err)
	}
	if _, err := s.AppendAudit(ctx, nil); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("AppendAudit(nil): %v, want ErrInvalidRecord", err)
	}
	check("AppendAudit(nil)", zero, nil)
}

// testPutIntegrationAudited: the record and its audit event commit together,
// or neither does.
func testPutIntegrationAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := NoEvent(s).CreateTenant(ctx, NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	in := NewIntegration("acme", "crm", 256)
	got, rec, err := s.PutIntegration(ctx, "acme", in, ChainBuilder(`"action":"token.store"`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != 1 || rec.Seq != 1 {
		t.Fatalf("revision %d seq %d", got.Revision, rec.Seq)
	}
	if _, err := s.GetIntegration(ctx, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	// A failing build rolls the record back too.
	boom := errors.New("build failed")
	in2 := NewIntegration("acme", "other", 256)
	_, _, err = s.PutIntegration(ctx, "acme", in2, func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("want build error, got %v", err)
	}
	if _, err := s.GetIntegration(ctx, "acme", "other"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("record written without its audit event: %v", err)
	}
	// A missing tenant writes no audit event.
	_, _, err = s.PutIntegration(ctx, "nosuch", NewIntegration("nosuch", "x", 16), ChainBuilder(`"action":"token.store"`))
	if !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("missing tenant: %v", err)
	}
	head, err := s.AuditHead(ctx)
	if err != nil || head.Seq != 1 {
		t.Fatalf("audit head %+v %v", head, err)
	}
	// Replacing bumps the revision and appends the next event.
	got, rec, err = s.PutIntegration(ctx, "acme", in, ChainBuilder(`"action":"token.store"`))
	if err != nil || got.Revision != 2 || rec.Seq != 2 {
		t.Fatalf("replace: rev %d seq %d err %v", got.Revision, rec.Seq, err)
	}
}

// testTenantAudited: a tenant creation or update and its audit event commit
// together, or neither does; a refused update (conflict) writes no event.
func testTenantAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	boom := errors.New("build failed")
	failing := func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom }
	headSeq := func() uint64 {
		t.Helper()
		h, err := s.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h.Seq
	}

	if _, _, err := s.CreateTenant(ctx, NewTenant("acme"), failing); !errors.Is(err, boom) {
		t.Fatalf("create with a failing build: %v", err)
	}
	if _, err := s.GetTenant(ctx, "acme"); !errors.Is(err, storage.ErrTenantNotFound) {
		t.Fatalf("tenant created without its audit event: %v", err)
	}
	tn, rec, err := s.CreateTenant(ctx, NewTenant("acme"), ChainBuilder(`"action":"tenant.create"`))
	if err != nil || tn.Revision != 1 || rec.Seq != 1 {
		t.Fatalf("create: rev %d seq %d %v", tn.Revision, rec.Seq, err)
	}
	if _, _, err := s.CreateTenant(ctx, NewTenant("acme"), ChainBuilder(`"action":"tenant.create"`)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if headSeq() != 1 {
		t.Fatal("a refused create appended an event")
	}

	next := tn
	next.DEKVersion = 2
	if _, _, err := s.UpdateTenant(ctx, next, failing); !errors.Is(err, boom) {
		t.Fatalf("update with a failing build: %v", err)
	}
	if got, _ := s.GetTenant(ctx, "acme"); got.Revision != 1 || got.DEKVersion != 1 {
		t.Fatalf("tenant updated without its audit event: %+v", got)
	}
	upd, rec, err := s.UpdateTenant(ctx, next, ChainBuilder(`"action":"key.rotate"`))
	if err != nil || upd.Revision != 2 || upd.DEKVersion != 2 || rec.Seq != 2 {
		t.Fatalf("update: %+v seq %d %v", upd, rec.Seq, err)
	}
	if _, _, err := s.UpdateTenant(ctx, next, ChainBuilder(`"action":"key.rotate"`)); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if headSeq() != 2 {
		t.Fatal("a refused update appended an event")
	}
	var recs []storage.AuditRecord
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) { recs = append(recs, r); return true, nil }); err != nil {
		t.Fatal(err)
	}
	if err := VerifyChain(recs); err != nil {
		t.Fatal(err)
	}
}

// testCASAudited: a compare-and-swap and its audit event commit together;
// a conflict or a failing build writes neither.
func testCASAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := NoEvent(s).CreateTenant(ctx, NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	in, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 64))
	if err != nil {
		t.Fatal(err)
	}
	// A delete and its event likewise.
	if _, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "gone", 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteIntegration(ctx, "acme", "gone", func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{}, errors.New("build failed")
	}); err == nil {
		t.Fatal("delete with a failing build succeeded")
	}
	if _, err := s.GetIntegration(ctx, "acme", "gone"); err != nil {
		t.Fatalf("deleted without its audit event: %v", err)
	}
	if _, err := s.DeleteIntegration(ctx, "acme", "gone", ChainBuilder(`"action":"integration.delete"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetIntegration(ctx, "acme", "gone"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after audited delete: %v", err)
	}
	if _, err := s.DeleteIntegration(ctx, "acme", "gone", ChainBuilder(`"action":"integration.delete"`)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}

	upd := in
	upd.RefreshCount = 1
	boom := errors.New("build failed")
	if _, _, err := s.CompareAndSwapIntegration(ctx, "acme", upd, func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{}, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failing build: %v", err)
	}
	if got, _ := s.GetIntegration(ctx, "acme", "crm"); got.Revision != in.Revision || got.RefreshCount != 0 {
		t.Fatalf("swapped without its audit event: %+v", got)
	}
	out, rec, err := s.CompareAndSwapIntegration(ctx, "acme", upd, ChainBuilder(`"action":"token.refresh"`))
	if err != nil || out.Revision != in.Revision+1 || out.RefreshCount != 1 || rec.Seq != 2 {
		t.Fatalf("swap: %+v seq %d %v", out, rec.Seq, err)
	}
	if _, _, err := s.CompareAndSwapIntegration(ctx, "acme", upd, ChainBuilder(`"action":"token.refresh"`)); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale swap: %v", err)
	}
	if h, _ := s.AuditHead(ctx); h.Seq != 2 {
		t.Fatalf("audit head %d after a refused swap", h.Seq)
	}
}

// testAuditedWritesUnderBatching: an audited write whose event the store
// refuses (here: a record that does not continue the chain) must roll its
// own record back even while concurrent writes share its transaction.
func testAuditedWritesUnderBatching(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := NoEvent(s).CreateTenant(ctx, NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	badChain := func(head storage.AuditHead) (storage.AuditRecord, error) {
		rec, err := ChainBuilder(`"action":"token.store"`)(head)
		rec.Seq += 5 // not head+1: the store must refuse it
		return rec, err
	}
	for round := range 30 {
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("plain-%d-%d", round, w)
				if _, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", id, 32)); err != nil {
					t.Error(err)
				}
			}()
		}
		id := fmt.Sprintf("audited-%d", round)
		_, _, err := s.PutIntegration(ctx, "acme", NewIntegration("acme", id, 32), badChain)
		wg.Wait()
		if err == nil {
			t.Fatalf("round %d: a broken chain record was accepted", round)
		}
		if _, err := s.GetIntegration(ctx, "acme", id); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("round %d: record committed without its audit event (%v)", round, err)
		}
	}
}

// chainPair builds a record with one More event chaining on it, as the
// audit package does for a refresh and the scope.drift it revealed. With
// skip, the second record's seq jumps by one (a caller bug to refuse).
func chainPair(first, second string, skip bool) func(storage.AuditHead) (storage.AuditRecord, error) {
	return func(head storage.AuditHead) (storage.AuditRecord, error) {
		a, err := ChainBuilder(first)(head)
		if err != nil {
			return a, err
		}
		next := storage.AuditHead{Seq: a.Seq, Hash: a.Hash}
		if skip {
			next.Seq++
		}
		b, err := ChainBuilder(second)(next)
		a.More = []storage.AuditRecord{b}
		return a, err
	}
}

// testAuditedMore: a write with two events commits both, chained and in
// order, or (on a bad second event) neither, nor the record.
func testAuditedMore(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := NoEvent(s).CreateTenant(ctx, NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	in, err := NoEvent(s).PutIntegration(ctx, "acme", NewIntegration("acme", "crm", 64))
	if err != nil {
		t.Fatal(err)
	}
	upd := in
	upd.RefreshCount = 7
	if _, _, err := s.CompareAndSwapIntegration(ctx, "acme", upd, chainPair(`"action":"token.refresh"`, `"action":"scope.drift"`, true)); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("second event out of sequence: %v, want ErrInvalidRecord", err)
	}
	if got, _ := s.GetIntegration(ctx, "acme", "crm"); got.Revision != in.Revision {
		t.Fatalf("record swapped although its second event was refused: %+v", got)
	}
	if h, _ := s.AuditHead(ctx); h.Seq != 0 {
		t.Fatalf("head moved to %d after a refused write", h.Seq)
	}
	out, rec, err := s.CompareAndSwapIntegration(ctx, "acme", upd, chainPair(`"action":"token.refresh"`, `"action":"scope.drift"`, false))
	if err != nil || out.RefreshCount != 7 {
		t.Fatalf("swap with two events: %+v %v", out, err)
	}
	if rec.Seq != 1 || len(rec.More) != 1 || rec.More[0].Seq != 2 || !bytes.Contains(rec.More[0].Data, []byte("scope.drift")) {
		t.Fatalf("returned records: %+v", rec)
	}
	var recs []storage.AuditRecord
	if err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) { recs = append(recs, r); return true, nil }); err != nil {
		t.Fatal(err)
	}
	if err := VerifyChain(recs); err != nil || len(recs) != 2 {
		t.Fatalf("stored chain (%d records): %v", len(recs), err)
	}
	if h, _ := s.AuditHead(ctx); h.Seq != 2 || h.Hash != recs[1].Hash {
		t.Fatalf("head %+v, want the second event", h)
	}
}

// appendN appends n ChainBuilder events and returns them.
func appendN(t *testing.T, s storage.Store, n int) []storage.AuditRecord {
	t.Helper()
	var out []storage.AuditRecord
	for i := range n {
		out = append(out, must[storage.AuditRecord](t, "AppendAudit")(s.AppendAudit(context.Background(),
			ChainBuilder(fmt.Sprintf(`"action":"token.store","detail":"event %d"`, i)))))
	}
	return out
}

func testAuditPrune(t *testing.T, s storage.Store) {
	ctx := context.Background()
	p := pruner(t, s)
	anchor := must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx))
	if anchor.Seq != 0 || anchor.Hash != storage.GenesisHash {
		t.Fatalf("AuditAnchor of an empty store = %+v, want {0, genesis}", anchor)
	}
	if n, err := p.PruneAudit(ctx, 10, 100); err != nil || n != 0 {
		t.Fatalf("PruneAudit on an empty store = %d, %v", n, err)
	}
	if _, err := p.PruneAudit(ctx, 10, 0); !errors.Is(err, storage.ErrInvalidRecord) {
		t.Fatalf("PruneAudit max 0: %v, want ErrInvalidRecord", err)
	}
	recs := appendN(t, s, 20)
	head := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))

	// max bounds one call; upToSeq bounds them all.
	if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, 8, 3)); n != 3 {
		t.Fatalf("PruneAudit(8, max 3) = %d, want 3", n)
	}
	anchor = must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx))
	if anchor.Seq != 3 || anchor.Hash != recs[2].Hash {
		t.Fatalf("anchor after pruning 1-3 = %+v, want seq 3 hash %s", anchor, recs[2].Hash)
	}
	if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, 8, 100)); n != 5 {
		t.Fatalf("PruneAudit(8, max 100) = %d, want 5", n)
	}
	if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, 8, 100)); n != 0 {
		t.Fatalf("PruneAudit(8) again = %d, want 0", n)
	}
	if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, 5, 100)); n != 0 {
		t.Fatalf("PruneAudit below the anchor = %d, want 0", n)
	}
	anchor = must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx))
	if anchor.Seq != 8 || anchor.Hash != recs[7].Hash {
		t.Fatalf("anchor = %+v, want seq 8 hash %s", anchor, recs[7].Hash)
	}
	if got := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); got != head {
		t.Fatalf("AuditHead changed by a prune: %+v, want %+v", got, head)
	}

	// A scan from 0 (or from inside the pruned prefix) starts at the first
	// remaining event, which chains on to the anchor.
	for _, after := range []uint64{0, 5, 8} {
		got := scanAll(t, s, after)
		if !reflect.DeepEqual(got, recs[8:]) {
			t.Fatalf("ScanAudit(%d) after prune: %d records from seq %d, want 12 from 9", after, len(got), got[0].Seq)
		}
	}
	if got := scanAll(t, s, 15); len(got) != 5 || got[0].Seq != 16 {
		t.Fatalf("ScanAudit(15) = %d records", len(got))
	}
	var first map[string]any
	if err := json.Unmarshal(scanAll(t, s, 0)[0].Data, &first); err != nil || first["prev_hash"] != anchor.Hash {
		t.Fatalf("first remaining event's prev_hash %v is not the anchor's hash %s (%v)", first["prev_hash"], anchor.Hash, err)
	}

	// The head is never pruned, and appends carry on after a prune.
	if n := must[int](t, "PruneAudit")(p.PruneAudit(ctx, math.MaxUint64, 1000)); n != 11 {
		t.Fatalf("PruneAudit(all) = %d, want 11 (all but the head)", n)
	}
	if got := scanAll(t, s, 0); len(got) != 1 || got[0].Seq != 20 {
		t.Fatalf("after pruning all: %d records left", len(got))
	}
	more := appendN(t, s, 2)
	if more[0].Seq != 21 {
		t.Fatalf("append after prune: seq %d, want 21", more[0].Seq)
	}
	if got := scanAll(t, s, 0); len(got) != 3 || got[0].Seq != 20 || got[2].Seq != 22 {
		t.Fatalf("scan after append: %d records", len(got))
	}
	anchor = must[storage.AuditHead](t, "AuditAnchor")(s.AuditAnchor(ctx))
	if anchor.Seq != 19 || anchor.Hash != recs[18].Hash {
		t.Fatalf("anchor = %+v, want seq 19", anchor)
	}
}

// testAuditPruneWhileAppending: small prunes interleave with appends and
// lose nothing that was not asked for.
func testAuditPruneWhileAppending(t *testing.T, s storage.Store) {
	ctx := context.Background()
	p := pruner(t, s)
	appendN(t, s, 50)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			if _, err := s.AppendAudit(ctx, ChainBuilder(fmt.Sprintf(`"action":"a","detail":"%d"`, i))); err != nil {
				t.Errorf("AppendAudit: %v", err)
				return
			}
		}
	})
	pruned := 0
	for pruned < 40 {
		n, err := p.PruneAudit(ctx, 40, 7)
		if err != nil {
			t.Fatalf("PruneAudit: %v", err)
		}
		if n == 0 {
			t.Fatalf("PruneAudit stopped at %d of 40", pruned)
		}
		pruned += n
	}
	wg.Wait()
	got := scanAll(t, s, 0)
	if len(got) != 60 || got[0].Seq != 41 || got[59].Seq != 100 {
		t.Fatalf("after pruning 40 of 100: %d records from seq %d", len(got), got[0].Seq)
	}
}
