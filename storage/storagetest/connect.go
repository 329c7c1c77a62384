package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// connectTests are the connect-session part of the suite (Run's "Connect"
// group), each on a fresh store.
var connectTests = []struct {
	name string
	fn   func(t *testing.T, s storage.Store)
}{
	{"Sessions", testConnectSessions},
	{"ReturnsCopies", testConnectReturnsCopies},
	{"TenantIsolation", testConnectTenantIsolation},
	{"Find", testConnectFind},
	{"Update", testConnectUpdate},
	{"DigestIndex", testConnectDigestIndex},
	{"Complete", testConnectComplete},
	{"Delete", testConnectDelete},
	{"Audited", testConnectAudited},
	{"Invalid", testConnectInvalid},
	{"Concurrent", testConnectConcurrent},
	{"IntegrationFields", testIntegrationConnectFields},
}

// Digest is the SHA-256 of s: a stand-in for the digest of a link
// secret, an OAuth state or a browser cookie.
func Digest(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// NewConnectSession returns a plausible pending session, as created over
// the API: a link digest, a browser digest and a sealed verifier, no state
// digest yet (that is set when the link is opened).
func NewConnectSession(tenantID, id string) storage.ConnectSession {
	return storage.ConnectSession{
		ID:            id,
		TenantID:      tenantID,
		IntegrationID: "int-" + id,
		Provider:      "example",
		Scopes:        []string{"contacts.read"},
		ReturnTo:      "https://app.example/connected",
		Params:        map[string]string{"subdomain": "acme"},
		Actor:         "app:" + tenantID,
		OnBehalfOf:    "user-7",
		Status:        storage.ConnectPending,
		CreatedAt:     T0,
		ExpiresAt:     T0.Add(10 * time.Minute),
		UpdatedAt:     T0,
		LinkHash:      Digest(tenantID + "/" + id + "/link"),
		BrowserHash:   Digest(tenantID + "/" + id + "/browser"),
		Verifier:      Ciphertext(tenantID+"/"+id+"/verifier", 96),
		Client:        Ciphertext(tenantID+"/"+id+"/client", 128),
	}
}

func normSession(cs storage.ConnectSession) storage.ConnectSession {
	for _, p := range []*time.Time{&cs.CreatedAt, &cs.ExpiresAt, &cs.UpdatedAt} {
		*p = normTime(*p)
	}
	if len(cs.Scopes) == 0 {
		cs.Scopes = nil
	}
	if len(cs.Params) == 0 {
		cs.Params = nil
	}
	for _, b := range []*[]byte{&cs.LinkHash, &cs.StateHash, &cs.BrowserHash, &cs.Verifier, &cs.Client} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	return cs
}

// EqualConnectSession is EqualIntegration for connect sessions.
func EqualConnectSession(a, b storage.ConnectSession) bool {
	return reflect.DeepEqual(normSession(a), normSession(b))
}

func createSession(t *testing.T, s storage.Store, cs storage.ConnectSession) storage.ConnectSession {
	t.Helper()
	return must[storage.ConnectSession](t, "CreateConnectSession "+cs.ID)(NoEvent(s).CreateConnectSession(context.Background(), cs))
}

// connectChecks calls every connect-session method on tenant "acme" (which
// exists) and records the errors, for the context and Close checks.
func connectChecks(ctx context.Context, s storage.Store, checks map[string]error) {
	cs := NewConnectSession("acme", "cs-1")
	_, checks["CreateConnectSession"] = NoEvent(s).CreateConnectSession(ctx, cs)
	_, checks["GetConnectSession"] = s.GetConnectSession(ctx, "acme", "cs-1")
	_, checks["FindConnectSession"] = s.FindConnectSession(ctx, cs.LinkHash)
	_, checks["ListConnectSessions"] = s.ListConnectSessions(ctx, "acme")
	cs.Revision = 1
	_, checks["UpdateConnectSession"] = NoEvent(s).UpdateConnectSession(ctx, cs)
	_, _, checks["CompleteConnectSession"] = NoEvent(s).CompleteConnectSession(ctx, cs, NewIntegration("acme", cs.IntegrationID, 16))
	checks["DeleteConnectSession"] = NoEvent(s).DeleteConnectSession(ctx, "acme", "cs-1")
}

func testConnectSessions(t *testing.T, s storage.Store) {
	ctx := context.Background()
	_, err := NoEvent(s).CreateConnectSession(ctx, NewConnectSession("acme", "cs-1"))
	wantErr(t, "CreateConnectSession in a missing tenant", err, storage.ErrTenantNotFound)
	if l, err := s.ListConnectSessions(ctx, "acme"); err != nil || len(l) != 0 {
		t.Fatalf("ListConnectSessions of a missing tenant = %d sessions, %v; want none, nil", len(l), err)
	}
	createTenant(t, s, "acme")
	if l, err := s.ListConnectSessions(ctx, "acme"); err != nil || len(l) != 0 {
		t.Fatalf("ListConnectSessions of a new tenant = %d sessions, %v", len(l), err)
	}
	for _, id := range []string{"zeta", "cs-1", "Alpha", "mid.2"} {
		in := NewConnectSession("acme", id)
		in.Revision = 77 // ignored on create
		got := createSession(t, s, in)
		in.Revision = 1
		if !EqualConnectSession(got, in) {
			t.Fatalf("CreateConnectSession %s returned %+v, want %+v", id, got, in)
		}
	}
	_, err = NoEvent(s).CreateConnectSession(ctx, func() storage.ConnectSession {
		x := NewConnectSession("acme", "cs-1")
		x.LinkHash = Digest("a fresh link") // only the id collides
		return x
	}())
	wantErr(t, "CreateConnectSession duplicate id", err, storage.ErrExists)

	want := NewConnectSession("acme", "cs-1")
	want.Revision = 1
	got := must[storage.ConnectSession](t, "GetConnectSession")(s.GetConnectSession(ctx, "acme", "cs-1"))
	if !EqualConnectSession(got, want) {
		t.Fatalf("GetConnectSession = %+v, want %+v", got, want)
	}
	_, err = s.GetConnectSession(ctx, "acme", "nope")
	wantErr(t, "GetConnectSession missing", err, storage.ErrNotFound)

	list := must[[]storage.ConnectSession](t, "ListConnectSessions")(s.ListConnectSessions(ctx, "acme"))
	var ids []string
	for _, cs := range list {
		ids = append(ids, cs.ID)
		if cs.TenantID != "acme" || cs.Revision != 1 {
			t.Errorf("listed %s with tenant %q revision %d", cs.ID, cs.TenantID, cs.Revision)
		}
	}
	if w := []string{"Alpha", "cs-1", "mid.2", "zeta"}; !reflect.DeepEqual(ids, w) {
		t.Fatalf("ListConnectSessions ids = %v, want %v (sorted)", ids, w)
	}
	if !EqualConnectSession(list[1], want) {
		t.Fatalf("listed %+v, want %+v", list[1], want)
	}
	// Sessions are not integrations.
	if l := must[[]storage.Integration](t, "ListIntegrations")(s.ListIntegrations(ctx, "acme")); len(l) != 0 {
		t.Fatalf("sessions show up as %d integrations", len(l))
	}
}

func testConnectReturnsCopies(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	pristine := NewConnectSession("acme", "cs-1")
	pristine.StateHash = Digest("state")
	in := NewConnectSession("acme", "cs-1")
	in.StateHash = Digest("state")
	out := createSession(t, s, in)
	pristine.Revision = 1
	in.Scopes[0] = "admin"
	in.Params["subdomain"] = "evil"
	in.LinkHash[0] ^= 0xff
	in.Verifier[0] ^= 0xff
	out.Params["subdomain"] = "evil"
	out.StateHash[0] ^= 0xff
	out.BrowserHash[0] ^= 0xff
	out.Client[0] ^= 0xff
	got := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1"))
	if !EqualConnectSession(got, pristine) {
		t.Fatal("mutating CreateConnectSession's input or result changed the stored session")
	}
	got.Params["extra"] = "x"
	got.Scopes[0] = "admin"
	found := must[storage.ConnectSession](t, "Find")(s.FindConnectSession(ctx, pristine.StateHash))
	found.LinkHash[0] ^= 0xff
	list := must[[]storage.ConnectSession](t, "List")(s.ListConnectSessions(ctx, "acme"))
	list[0].Params["subdomain"] = "evil"
	list[0].Verifier[0] ^= 0xff
	if again := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); !EqualConnectSession(again, pristine) {
		t.Fatal("mutating Get/Find/List results changed the stored session")
	}
	upd := pristine
	upd.Params = map[string]string{"subdomain": "beta"}
	upd.Scopes = []string{"a", "b"}
	res := must[storage.ConnectSession](t, "Update")(NoEvent(s).UpdateConnectSession(ctx, upd))
	upd.Params["subdomain"] = "evil"
	upd.Scopes[0] = "admin"
	res.Params["subdomain"] = "evil"
	if again := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); again.Params["subdomain"] != "beta" || again.Scopes[0] != "a" {
		t.Fatalf("mutating UpdateConnectSession's input or result changed the stored session: %+v", again)
	}
}

func testConnectTenantIsolation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "tenant-a")
	createTenant(t, s, "tenant-b")
	_, errBefore := s.GetConnectSession(ctx, "tenant-b", "shared")
	wantErr(t, "B get before", errBefore, storage.ErrNotFound)

	a := createSession(t, s, NewConnectSession("tenant-a", "shared"))

	_, errAfter := s.GetConnectSession(ctx, "tenant-b", "shared")
	wantErr(t, "B get A's id", errAfter, storage.ErrNotFound)
	if errAfter.Error() != errBefore.Error() {
		t.Fatalf("B's view of A's id differs from a missing id: %q vs %q", errAfter, errBefore)
	}
	_, errGhost := s.GetConnectSession(ctx, "no-such-tenant", "shared")
	wantErr(t, "unknown tenant get", errGhost, storage.ErrNotFound)
	if errGhost.Error() != errBefore.Error() {
		t.Fatalf("unknown tenant answers %q, missing id answers %q", errGhost, errBefore)
	}
	// A's record relabelled as B's reaches nothing of A's.
	forged := a
	forged.TenantID = "tenant-b"
	forged.Status = storage.ConnectFailed
	_, err := NoEvent(s).UpdateConnectSession(ctx, forged)
	wantErr(t, "B update A's id", err, storage.ErrNotFound)
	_, _, err = NoEvent(s).CompleteConnectSession(ctx, forged, NewIntegration("tenant-b", forged.IntegrationID, 16))
	wantErr(t, "B complete A's id", err, storage.ErrNotFound)
	if _, err := s.GetIntegration(ctx, "tenant-b", forged.IntegrationID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a refused complete stored B's integration: %v", err)
	}
	wantErr(t, "B delete A's id", NoEvent(s).DeleteConnectSession(ctx, "tenant-b", "shared"), storage.ErrNotFound)
	if l := must[[]storage.ConnectSession](t, "B list")(s.ListConnectSessions(ctx, "tenant-b")); len(l) != 0 {
		t.Fatalf("B lists %d sessions, want 0", len(l))
	}
	// B may own the same id independently (with its own digests).
	b := createSession(t, s, NewConnectSession("tenant-b", "shared"))
	if b.Revision != 1 {
		t.Fatalf("B's revision = %d, want 1", b.Revision)
	}
	// Find knows no tenant: each digest leads to its own tenant's record.
	fa := must[storage.ConnectSession](t, "Find A")(s.FindConnectSession(ctx, a.LinkHash))
	fb := must[storage.ConnectSession](t, "Find B")(s.FindConnectSession(ctx, b.LinkHash))
	if fa.TenantID != "tenant-a" || !EqualConnectSession(fa, a) {
		t.Fatalf("Find(A's link) = tenant %q %+v", fa.TenantID, fa)
	}
	if fb.TenantID != "tenant-b" || !EqualConnectSession(fb, b) {
		t.Fatalf("Find(B's link) = tenant %q %+v", fb.TenantID, fb)
	}
	// B deleting its own session leaves A's alone.
	if err := NoEvent(s).DeleteConnectSession(ctx, "tenant-b", "shared"); err != nil {
		t.Fatal(err)
	}
	if got := must[storage.ConnectSession](t, "A get")(s.GetConnectSession(ctx, "tenant-a", "shared")); !EqualConnectSession(got, a) {
		t.Fatalf("B's operations changed A's session: %+v", got)
	}
	must[storage.ConnectSession](t, "Find A after B's delete")(s.FindConnectSession(ctx, a.LinkHash))
}

func testConnectFind(t *testing.T, s storage.Store) {
	ctx := context.Background()
	_, err := s.FindConnectSession(ctx, Digest("nothing"))
	wantErr(t, "Find on an empty store", err, storage.ErrNotFound)
	createTenant(t, s, "acme")
	cs := createSession(t, s, NewConnectSession("acme", "cs-1"))
	other := createSession(t, s, NewConnectSession("acme", "cs-2"))

	got := must[storage.ConnectSession](t, "Find by link")(s.FindConnectSession(ctx, cs.LinkHash))
	if !EqualConnectSession(got, cs) {
		t.Fatalf("Find by link = %+v, want %+v", got, cs)
	}
	_, err = s.FindConnectSession(ctx, cs.BrowserHash)
	wantErr(t, "Find by the browser digest (not indexed)", err, storage.ErrNotFound)
	_, err = s.FindConnectSession(ctx, Digest("unknown"))
	wantErr(t, "Find unknown digest", err, storage.ErrNotFound)
	for _, bad := range [][]byte{nil, {}, cs.LinkHash[:31], append(bytes.Clone(cs.LinkHash), 0)} {
		_, err = s.FindConnectSession(ctx, bad)
		wantErr(t, fmt.Sprintf("Find with a %d-byte digest", len(bad)), err, storage.ErrInvalidRecord)
	}

	// Opening the link: the link digest is spent, a state digest issued.
	opened := cs
	opened.LinkHash = nil
	opened.StateHash = Digest("state-1")
	opened = must[storage.ConnectSession](t, "Update")(NoEvent(s).UpdateConnectSession(ctx, opened))
	got = must[storage.ConnectSession](t, "Find by state")(s.FindConnectSession(ctx, opened.StateHash))
	if got.ID != "cs-1" || got.Revision != 2 || !EqualConnectSession(got, opened) {
		t.Fatalf("Find by state = %+v, want %+v", got, opened)
	}
	_, err = s.FindConnectSession(ctx, cs.LinkHash)
	wantErr(t, "Find by a spent link", err, storage.ErrNotFound)
	if got := must[storage.ConnectSession](t, "Find other")(s.FindConnectSession(ctx, other.LinkHash)); got.ID != "cs-2" {
		t.Fatalf("Find(cs-2's link) = %s", got.ID)
	}
}

func testConnectUpdate(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	v1 := createSession(t, s, NewConnectSession("acme", "cs-1"))

	next := v1
	next.Status = storage.ConnectFailed
	next.Error = "access_denied"
	next.UpdatedAt = T0.Add(time.Minute)
	next.Revision = 99 // a future revision conflicts too
	_, err := NoEvent(s).UpdateConnectSession(ctx, next)
	wantErr(t, "Update with a future revision", err, storage.ErrConflict)
	next.Revision = 1
	v2 := must[storage.ConnectSession](t, "Update")(NoEvent(s).UpdateConnectSession(ctx, next))
	if v2.Revision != 2 || v2.Status != storage.ConnectFailed || v2.Error != "access_denied" {
		t.Fatalf("Update = rev %d status %q error %q", v2.Revision, v2.Status, v2.Error)
	}
	stale := v1
	stale.Status = storage.ConnectCompleted
	_, err = NoEvent(s).UpdateConnectSession(ctx, stale)
	wantErr(t, "Update with a stale revision", err, storage.ErrConflict)
	if got := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); !EqualConnectSession(got, v2) {
		t.Fatalf("a conflicting update changed the session: %+v, want %+v", got, v2)
	}
	// Two writers from the same revision: exactly one wins.
	x, y := v2, v2
	x.Error, y.Error = "x", "y"
	_, errX := NoEvent(s).UpdateConnectSession(ctx, x)
	_, errY := NoEvent(s).UpdateConnectSession(ctx, y)
	if errX != nil || !errors.Is(errY, storage.ErrConflict) {
		t.Fatalf("racing updates: %v, %v; want nil, ErrConflict", errX, errY)
	}

	ghost := NewConnectSession("acme", "ghost")
	ghost.Revision = 1
	_, err = NoEvent(s).UpdateConnectSession(ctx, ghost)
	wantErr(t, "Update of a missing id", err, storage.ErrNotFound)
	_, err = s.GetConnectSession(ctx, "acme", "ghost")
	wantErr(t, "Update must not create", err, storage.ErrNotFound)
	_, err = s.FindConnectSession(ctx, ghost.LinkHash)
	wantErr(t, "Update of a missing id must not index", err, storage.ErrNotFound)
	_, err = NoEvent(s).UpdateConnectSession(ctx, NewConnectSession("nobody", "cs-1"))
	wantErr(t, "Update in a missing tenant", err, storage.ErrNotFound)
}

// testConnectDigestIndex: the index follows every write; a digest indexed
// for one session is refused to any other.
func testConnectDigestIndex(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	createTenant(t, s, "beta")
	one := createSession(t, s, NewConnectSession("acme", "one"))
	two := createSession(t, s, NewConnectSession("acme", "two"))

	// Create with a digest another session holds, as link or as state,
	// even in another tenant: refused, nothing stored.
	for _, c := range []struct {
		name string
		edit func(*storage.ConnectSession)
	}{
		{"link taken as link", func(x *storage.ConnectSession) { x.LinkHash = one.LinkHash }},
		{"link taken as state", func(x *storage.ConnectSession) { x.StateHash = one.LinkHash }},
	} {
		for _, tenant := range []string{"acme", "beta"} {
			x := NewConnectSession(tenant, "three")
			c.edit(&x)
			_, err := NoEvent(s).CreateConnectSession(ctx, x)
			wantErr(t, "Create "+c.name+" in "+tenant, err, storage.ErrExists)
			_, err = s.GetConnectSession(ctx, tenant, "three")
			wantErr(t, "a refused create stored the session", err, storage.ErrNotFound)
		}
	}
	if got := must[storage.ConnectSession](t, "Find one")(s.FindConnectSession(ctx, one.LinkHash)); got.ID != "one" {
		t.Fatalf("a refused create took over the digest: Find = %s", got.ID)
	}

	// Update to a digest another session holds: refused, unchanged.
	steal := two
	steal.LinkHash = nil
	steal.StateHash = one.LinkHash
	_, err := NoEvent(s).UpdateConnectSession(ctx, steal)
	wantErr(t, "Update to a taken digest", err, storage.ErrExists)
	if got := must[storage.ConnectSession](t, "Get two")(s.GetConnectSession(ctx, "acme", "two")); !EqualConnectSession(got, two) {
		t.Fatalf("a refused update changed the session: %+v", got)
	}
	must[storage.ConnectSession](t, "two's link still indexed")(s.FindConnectSession(ctx, two.LinkHash))

	// A session may keep its own digests, or move one from link to state.
	keep := two
	keep.Error = "kept"
	two = must[storage.ConnectSession](t, "Update keeping digests")(NoEvent(s).UpdateConnectSession(ctx, keep))
	if got := must[storage.ConnectSession](t, "Find kept")(s.FindConnectSession(ctx, two.LinkHash)); got.Revision != two.Revision {
		t.Fatalf("Find after a same-digest update = rev %d, want %d", got.Revision, two.Revision)
	}
	moved := two
	moved.StateHash, moved.LinkHash = two.LinkHash, nil
	two = must[storage.ConnectSession](t, "Update moving the digest")(NoEvent(s).UpdateConnectSession(ctx, moved))
	if got := must[storage.ConnectSession](t, "Find moved")(s.FindConnectSession(ctx, two.StateHash)); got.ID != "two" || got.LinkHash != nil {
		t.Fatalf("Find after moving the digest = %s link %x", got.ID, got.LinkHash)
	}

	// Replacing the digest frees the old one for anybody.
	old := one.LinkHash
	repl := one
	repl.LinkHash = nil
	repl.StateHash = Digest("one-state")
	one = must[storage.ConnectSession](t, "Update")(NoEvent(s).UpdateConnectSession(ctx, repl))
	_, err = s.FindConnectSession(ctx, old)
	wantErr(t, "Find by the replaced digest", err, storage.ErrNotFound)
	if got := must[storage.ConnectSession](t, "Find new")(s.FindConnectSession(ctx, one.StateHash)); got.ID != "one" {
		t.Fatalf("Find(new state) = %s", got.ID)
	}
	reuse := NewConnectSession("beta", "three")
	reuse.LinkHash = old
	createSession(t, s, reuse)
	if got := must[storage.ConnectSession](t, "Find reused")(s.FindConnectSession(ctx, old)); got.TenantID != "beta" || got.ID != "three" {
		t.Fatalf("Find(reused digest) = %s/%s", got.TenantID, got.ID)
	}
	// Clearing both digests unindexes the session entirely.
	spent := one
	spent.StateHash = nil
	spent.Status = storage.ConnectFailed
	must[storage.ConnectSession](t, "Update clearing digests")(NoEvent(s).UpdateConnectSession(ctx, spent))
	_, err = s.FindConnectSession(ctx, one.StateHash)
	wantErr(t, "Find by a cleared digest", err, storage.ErrNotFound)
}

func testConnectComplete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	cs := NewConnectSession("acme", "cs-1")
	cs.LinkHash = nil
	cs.StateHash = Digest("state")
	cs = createSession(t, s, cs)
	head0 := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))

	done := cs
	done.Status = storage.ConnectCompleted
	done.StateHash = nil
	done.Verifier = nil
	done.UpdatedAt = T0.Add(time.Minute)
	in := NewIntegration("", cs.IntegrationID, 256) // TenantID filled in
	in.APIBaseURL = "https://acme.example.com/api"
	in.Params = map[string]string{"subdomain": "acme"}
	in.Client = Ciphertext("client", 64)
	in.ConnectSession = cs.ID

	boom := errors.New("build failed")
	_, _, _, err := s.CompleteConnectSession(ctx, done, in, func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Complete with a refusing build: %v", err)
	}
	if got := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); !EqualConnectSession(got, cs) {
		t.Fatalf("session completed without its audit event: %+v", got)
	}
	if _, err := s.GetIntegration(ctx, "acme", in.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("integration stored without its audit event: %v", err)
	}
	must[storage.ConnectSession](t, "state still indexed")(s.FindConnectSession(ctx, cs.StateHash))

	// A conflicting session (another node completed or failed it first)
	// stores no integration either.
	stale := done
	stale.Revision = 7
	_, _, _, err = s.CompleteConnectSession(ctx, stale, in, ChainBuilder(`"action":"token.store"`))
	wantErr(t, "Complete with a stale session", err, storage.ErrConflict)
	if _, err := s.GetIntegration(ctx, "acme", in.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("integration stored although the session conflicted: %v", err)
	}
	if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h != head0 {
		t.Fatalf("refused completes moved the head to %+v", h)
	}

	gotS, gotI, rec, err := s.CompleteConnectSession(ctx, done, in, ChainBuilder(`"action":"token.store"`))
	if err != nil {
		t.Fatal(err)
	}
	if gotS.Revision != 2 || gotS.Status != storage.ConnectCompleted {
		t.Fatalf("completed session rev %d status %q", gotS.Revision, gotS.Status)
	}
	wantI := in
	wantI.TenantID, wantI.Revision = "acme", 1
	if !EqualIntegration(gotI, wantI) {
		t.Fatalf("Complete returned integration %+v, want %+v", gotI, wantI)
	}
	if rec.Seq != head0.Seq+1 || len(rec.More) != 0 {
		t.Fatalf("Complete's audit record seq %d (%d more), want one event at %d", rec.Seq, len(rec.More), head0.Seq+1)
	}
	if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h.Seq != head0.Seq+1 || h.Hash != rec.Hash {
		t.Fatalf("head after Complete = %+v, want seq %d", h, head0.Seq+1)
	}
	if got := must[storage.Integration](t, "GetIntegration")(s.GetIntegration(ctx, "acme", in.ID)); !EqualIntegration(got, wantI) {
		t.Fatalf("stored integration %+v, want %+v", got, wantI)
	}
	if got := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); !EqualConnectSession(got, gotS) {
		t.Fatalf("stored session %+v, want %+v", got, gotS)
	}
	_, err = s.FindConnectSession(ctx, cs.StateHash)
	wantErr(t, "Find by the consumed state", err, storage.ErrNotFound)
	if err := VerifyChain(scanAll(t, s, 0)); err != nil {
		t.Fatal(err)
	}

	// A replayed completion (same revision) conflicts and leaves both.
	_, _, _, err = s.CompleteConnectSession(ctx, done, in, ChainBuilder(`"action":"token.store"`))
	wantErr(t, "replayed Complete", err, storage.ErrConflict)

	// Completing over an existing integration replaces it (PutIntegration).
	again := createSession(t, s, func() storage.ConnectSession {
		x := NewConnectSession("acme", "cs-2")
		x.IntegrationID = in.ID
		return x
	}())
	again.Status = storage.ConnectCompleted
	again.LinkHash = nil
	_, gotI, err = NoEvent(s).CompleteConnectSession(ctx, again, in)
	if err != nil || gotI.Revision != 2 {
		t.Fatalf("Complete over an existing integration: rev %d, %v; want 2", gotI.Revision, err)
	}

	// The integration must be the session's, in the session's tenant.
	createTenant(t, s, "other")
	cs3 := createSession(t, s, NewConnectSession("acme", "cs-3"))
	for name, bad := range map[string]storage.Integration{
		"another tenant":      NewIntegration("other", cs3.IntegrationID, 16),
		"another integration": NewIntegration("acme", "not-the-one", 16),
	} {
		_, _, err := NoEvent(s).CompleteConnectSession(ctx, cs3, bad)
		wantErr(t, "Complete with "+name, err, storage.ErrInvalidRecord)
		if _, err := s.GetIntegration(ctx, bad.TenantID, bad.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Complete with %s stored it: %v", name, err)
		}
	}
	if got := must[storage.ConnectSession](t, "Get cs-3")(s.GetConnectSession(ctx, "acme", "cs-3")); got.Revision != 1 {
		t.Fatalf("a refused complete changed the session: rev %d", got.Revision)
	}
	// A completion whose session is gone stores nothing.
	gone := NewConnectSession("acme", "gone")
	gone.Revision = 1
	_, _, err = NoEvent(s).CompleteConnectSession(ctx, gone, NewIntegration("acme", gone.IntegrationID, 16))
	wantErr(t, "Complete of a missing session", err, storage.ErrNotFound)
	if _, err := s.GetIntegration(ctx, "acme", gone.IntegrationID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Complete of a missing session stored its integration: %v", err)
	}
}

func testConnectDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	a := NewConnectSession("acme", "a")
	a.StateHash = Digest("a-state")
	a = createSession(t, s, a)
	b := createSession(t, s, NewConnectSession("acme", "b"))
	head0 := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))

	// The expiry sweep: no event.
	rec, err := s.DeleteConnectSession(ctx, "acme", "a", nil)
	if err != nil || !reflect.DeepEqual(rec, storage.AuditRecord{}) {
		t.Fatalf("Delete with no event: %+v, %v", rec, err)
	}
	if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h != head0 {
		t.Fatalf("Delete with no event moved the head to %+v", h)
	}
	_, err = s.GetConnectSession(ctx, "acme", "a")
	wantErr(t, "Get after delete", err, storage.ErrNotFound)
	for _, d := range [][]byte{a.LinkHash, a.StateHash} {
		_, err = s.FindConnectSession(ctx, d)
		wantErr(t, "Find after delete", err, storage.ErrNotFound)
	}
	_, err = s.DeleteConnectSession(ctx, "acme", "a", nil)
	wantErr(t, "second delete", err, storage.ErrNotFound)
	_, err = s.DeleteConnectSession(ctx, "nobody", "b", nil)
	wantErr(t, "delete in a missing tenant", err, storage.ErrNotFound)

	// Its digests and id are free again.
	createSession(t, s, a)

	// An audited delete commits with its event, or not at all.
	if _, err := s.DeleteConnectSession(ctx, "acme", "b", func(storage.AuditHead) (storage.AuditRecord, error) {
		return storage.AuditRecord{}, errors.New("build failed")
	}); err == nil {
		t.Fatal("delete with a failing build succeeded")
	}
	must[storage.ConnectSession](t, "b after a refused delete")(s.FindConnectSession(ctx, b.LinkHash))
	rec, err = s.DeleteConnectSession(ctx, "acme", "b", ChainBuilder(`"action":"connect.cancel"`))
	if err != nil || rec.Seq != head0.Seq+1 {
		t.Fatalf("audited delete: seq %d, %v", rec.Seq, err)
	}
	_, err = s.FindConnectSession(ctx, b.LinkHash)
	wantErr(t, "Find after audited delete", err, storage.ErrNotFound)
	if l := must[[]storage.ConnectSession](t, "List")(s.ListConnectSessions(ctx, "acme")); len(l) != 1 || l[0].ID != "a" {
		t.Fatalf("after deletes List = %v", l)
	}
}

// testConnectAudited: each session write and its audit event commit
// together, or neither does; a refused write appends nothing.
func testConnectAudited(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	boom := errors.New("build failed")
	failing := func(storage.AuditHead) (storage.AuditRecord, error) { return storage.AuditRecord{}, boom }

	cs := NewConnectSession("acme", "cs-1")
	if _, _, err := s.CreateConnectSession(ctx, cs, failing); !errors.Is(err, boom) {
		t.Fatalf("Create with a failing build: %v", err)
	}
	if _, err := s.GetConnectSession(ctx, "acme", "cs-1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("session created without its audit event: %v", err)
	}
	if _, err := s.FindConnectSession(ctx, cs.LinkHash); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("digest indexed without the audit event: %v", err)
	}
	got, rec, err := s.CreateConnectSession(ctx, cs, ChainBuilder(`"action":"connect.create"`))
	if err != nil || got.Revision != 1 || rec.Seq != 1 {
		t.Fatalf("audited create: rev %d seq %d %v", got.Revision, rec.Seq, err)
	}
	if _, _, err := s.CreateConnectSession(ctx, cs, ChainBuilder(`"action":"connect.create"`)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: %v", err)
	}

	next := got
	next.LinkHash = nil
	next.StateHash = Digest("state")
	if _, _, err := s.UpdateConnectSession(ctx, next, failing); !errors.Is(err, boom) {
		t.Fatalf("Update with a failing build: %v", err)
	}
	if cur := must[storage.ConnectSession](t, "Get")(s.GetConnectSession(ctx, "acme", "cs-1")); !EqualConnectSession(cur, got) {
		t.Fatalf("session updated without its audit event: %+v", cur)
	}
	must[storage.ConnectSession](t, "link still indexed")(s.FindConnectSession(ctx, cs.LinkHash))
	if _, err := s.FindConnectSession(ctx, next.StateHash); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("state indexed without the audit event: %v", err)
	}
	upd, rec, err := s.UpdateConnectSession(ctx, next, chainPair(`"action":"connect.open"`, `"action":"connect.note"`, false))
	if err != nil || upd.Revision != 2 || rec.Seq != 2 || len(rec.More) != 1 || rec.More[0].Seq != 3 {
		t.Fatalf("audited update: %+v rec %+v %v", upd, rec, err)
	}
	if _, _, err := s.UpdateConnectSession(ctx, next, ChainBuilder(`"action":"connect.open"`)); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if h := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx)); h.Seq != 3 {
		t.Fatalf("audit head %d after refused writes, want 3", h.Seq)
	}
	if err := VerifyChain(scanAll(t, s, 0)); err != nil {
		t.Fatal(err)
	}
}

func testConnectInvalid(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	ok := createSession(t, s, NewConnectSession("acme", "ok"))
	for _, bad := range BadIDs {
		for field, edit := range map[string]func(*storage.ConnectSession){
			"tenant":      func(x *storage.ConnectSession) { x.TenantID = bad },
			"id":          func(x *storage.ConnectSession) { x.ID = bad },
			"integration": func(x *storage.ConnectSession) { x.IntegrationID = bad },
		} {
			x := NewConnectSession("acme", "new")
			x.LinkHash = Digest("fresh")
			edit(&x)
			_, err := NoEvent(s).CreateConnectSession(ctx, x)
			wantErr(t, fmt.Sprintf("Create with %s %q", field, bad), err, storage.ErrInvalidRecord)
			wantErr(t, fmt.Sprintf("Create with %s %q", field, bad), err, storage.ErrInvalidID)
			x.Revision = 1
			_, err = NoEvent(s).UpdateConnectSession(ctx, x)
			wantErr(t, fmt.Sprintf("Update with %s %q", field, bad), err, storage.ErrInvalidRecord)
			_, _, err = NoEvent(s).CompleteConnectSession(ctx, x, NewIntegration("", x.IntegrationID, 16))
			wantErr(t, fmt.Sprintf("Complete with %s %q", field, bad), err, storage.ErrInvalidRecord)
		}
		_, err := s.GetConnectSession(ctx, "acme", bad)
		wantErr(t, fmt.Sprintf("Get id %q", bad), err, storage.ErrInvalidID)
		_, err = s.GetConnectSession(ctx, bad, "ok")
		wantErr(t, fmt.Sprintf("Get tenant %q", bad), err, storage.ErrInvalidID)
		_, err = s.DeleteConnectSession(ctx, "acme", bad, nil)
		wantErr(t, fmt.Sprintf("Delete id %q", bad), err, storage.ErrInvalidID)
		_, err = s.DeleteConnectSession(ctx, bad, "ok", nil)
		wantErr(t, fmt.Sprintf("Delete tenant %q", bad), err, storage.ErrInvalidID)
		_, err = s.ListConnectSessions(ctx, bad)
		wantErr(t, fmt.Sprintf("List tenant %q", bad), err, storage.ErrInvalidID)
	}
	for name, edit := range map[string]func(*storage.ConnectSession){
		"short link":            func(x *storage.ConnectSession) { x.LinkHash = x.LinkHash[:31] },
		"long state":            func(x *storage.ConnectSession) { x.StateHash = append(Digest("s"), 0) },
		"short browser":         func(x *storage.ConnectSession) { x.BrowserHash = []byte("cookie") },
		"link equal to state":   func(x *storage.ConnectSession) { x.StateHash = bytes.Clone(x.LinkHash) },
		"plaintext state":       func(x *storage.ConnectSession) { x.StateHash = []byte("state-value") },
		"one-byte link":         func(x *storage.ConnectSession) { x.LinkHash = []byte{1} },
		"browser of 64 bytes":   func(x *storage.ConnectSession) { x.BrowserHash = append(Digest("a"), Digest("b")...) },
		"state of 33 zero byte": func(x *storage.ConnectSession) { x.StateHash = make([]byte, 33) },
	} {
		x := NewConnectSession("acme", "new")
		edit(&x)
		_, err := NoEvent(s).CreateConnectSession(ctx, x)
		wantErr(t, "Create with "+name, err, storage.ErrInvalidRecord)
		if err != nil && (bytes.Contains([]byte(err.Error()), []byte("state-value")) || bytes.Contains([]byte(err.Error()), []byte("cookie"))) {
			t.Fatalf("error echoes the digest field: %v", err)
		}
		y := ok
		edit(&y)
		_, err = NoEvent(s).UpdateConnectSession(ctx, y)
		wantErr(t, "Update with "+name, err, storage.ErrInvalidRecord)
	}
	if l := must[[]storage.ConnectSession](t, "List")(s.ListConnectSessions(ctx, "acme")); len(l) != 1 || l[0].Revision != 1 {
		t.Fatalf("invalid writes left %d sessions (first at rev %d), want the one at rev 1", len(l), l[0].Revision)
	}
}

// testConnectConcurrent: many flows at once (creates, opens, completes,
// colliding digests, refused events) leave the sessions and the digest
// index consistent; under a batching backend they share transactions.
func testConnectConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	createTenant(t, s, "beta")
	const flows = 24
	badChain := func(head storage.AuditHead) (storage.AuditRecord, error) {
		rec, err := ChainBuilder(`"action":"connect.create"`)(head)
		rec.Seq += 5 // the store must refuse it
		return rec, err
	}
	var pending []storage.ConnectSession
	for i := range flows {
		pending = append(pending, createSession(t, s, NewConnectSession("acme", fmt.Sprintf("pending-%d", i))))
	}
	head0 := must[storage.AuditHead](t, "AuditHead")(s.AuditHead(ctx))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners int
	)
	for i := range flows {
		wg.Go(func() {
			tenant := []string{"acme", "beta"}[i%2]
			cs := NewConnectSession(tenant, fmt.Sprintf("flow-%d", i))
			cs, _, err := s.CreateConnectSession(ctx, cs, ChainBuilder(`"action":"connect.create"`))
			if err != nil {
				t.Errorf("flow %d: create: %v", i, err)
				return
			}
			cs.LinkHash, cs.StateHash = nil, Digest(fmt.Sprintf("state-%d", i))
			if cs, err = NoEvent(s).UpdateConnectSession(ctx, cs); err != nil {
				t.Errorf("flow %d: open: %v", i, err)
				return
			}
			if i%3 == 0 {
				cs.StateHash, cs.Status = nil, storage.ConnectCompleted
				if _, _, _, err := s.CompleteConnectSession(ctx, cs, NewIntegration(tenant, cs.IntegrationID, 32), ChainBuilder(`"action":"token.store"`)); err != nil {
					t.Errorf("flow %d: complete: %v", i, err)
				}
			}
		})
		// Racers for one shared link digest: exactly one may hold it.
		wg.Go(func() {
			x := NewConnectSession("beta", fmt.Sprintf("racer-%d", i))
			x.LinkHash = Digest("contested")
			_, err := NoEvent(s).CreateConnectSession(ctx, x)
			switch {
			case err == nil:
				mu.Lock()
				winners++
				mu.Unlock()
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("racer %d: %v", i, err)
			}
		})
		// A write whose event is refused leaves no trace, batch or not.
		wg.Go(func() {
			x := NewConnectSession("acme", fmt.Sprintf("refused-%d", i))
			if _, _, err := s.CreateConnectSession(ctx, x, badChain); !errors.Is(err, storage.ErrInvalidRecord) {
				t.Errorf("refused %d: %v, want ErrInvalidRecord", i, err)
			}
			p := pending[i]
			p.Status, p.LinkHash = storage.ConnectCompleted, nil
			if _, _, _, err := s.CompleteConnectSession(ctx, p, NewIntegration("acme", p.IntegrationID, 32), badChain); !errors.Is(err, storage.ErrInvalidRecord) {
				t.Errorf("refused complete %d: %v, want ErrInvalidRecord", i, err)
			}
		})
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d racers hold the contested digest, want 1", winners)
	}
	winner := must[storage.ConnectSession](t, "Find contested")(s.FindConnectSession(ctx, Digest("contested")))
	if winner.TenantID != "beta" {
		t.Fatalf("contested digest found in tenant %q", winner.TenantID)
	}
	for i := range flows {
		tenant := []string{"acme", "beta"}[i%2]
		id := fmt.Sprintf("flow-%d", i)
		_, err := s.FindConnectSession(ctx, NewConnectSession(tenant, id).LinkHash)
		wantErr(t, id+": Find by the spent link", err, storage.ErrNotFound)
		got, err := s.FindConnectSession(ctx, Digest(fmt.Sprintf("state-%d", i)))
		if i%3 == 0 {
			wantErr(t, id+": Find by the consumed state", err, storage.ErrNotFound)
			if _, err := s.GetIntegration(ctx, tenant, "int-"+id); err != nil {
				t.Fatalf("%s: completed without its integration: %v", id, err)
			}
			continue
		}
		if err != nil || got.ID != id || got.TenantID != tenant || got.Revision != 2 {
			t.Fatalf("%s: Find by state = %s/%s rev %d, %v", id, got.TenantID, got.ID, got.Revision, err)
		}
	}
	for i, p := range pending {
		if _, err := s.GetConnectSession(ctx, "acme", fmt.Sprintf("refused-%d", i)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("refused-%d committed without its event: %v", i, err)
		}
		if got := must[storage.ConnectSession](t, "Get pending")(s.GetConnectSession(ctx, "acme", p.ID)); !EqualConnectSession(got, p) {
			t.Fatalf("%s completed although its event was refused: %+v", p.ID, got)
		}
		if _, err := s.GetIntegration(ctx, "acme", p.IntegrationID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s's integration stored although the event was refused: %v", p.ID, err)
		}
		must[storage.ConnectSession](t, "Find pending")(s.FindConnectSession(ctx, p.LinkHash))
	}
	for _, tenant := range []string{"acme", "beta"} {
		l := must[[]storage.ConnectSession](t, "List")(s.ListConnectSessions(ctx, tenant))
		want := flows / 2
		if tenant == "beta" {
			want++ // the contested digest's winner
		} else {
			want += flows // pending-*
		}
		if len(l) != want {
			t.Fatalf("tenant %s lists %d sessions, want %d", tenant, len(l), want)
		}
	}
	recs := scanAll(t, s, 0)
	if err := VerifyChain(recs); err != nil {
		t.Fatalf("chain after concurrent flows: %v", err)
	}
	// One event per create and per complete; none for what was refused.
	if want := head0.Seq + flows + (flows+2)/3; uint64(len(recs)) != want {
		t.Fatalf("%d audit events, want %d", len(recs), want)
	}
}

// testIntegrationConnectFields: the per-connection fields of an
// integration round-trip through every write and read, as copies.
func testIntegrationConnectFields(t *testing.T, s storage.Store) {
	ctx := context.Background()
	createTenant(t, s, "acme")
	in := NewIntegration("acme", "crm", 64)
	in.APIBaseURL = "https://acme.example.com/api/v2"
	in.Params = map[string]string{"subdomain": "acme", "region": "eu"}
	in.Client = Ciphertext("per-integration-client", 200)
	in.Grant = "client_credentials"
	in.ConnectSession = "cs-1"
	want := in
	want.Params = map[string]string{"subdomain": "acme", "region": "eu"}
	want.Client = Ciphertext("per-integration-client", 200)
	want.Revision = 1

	put := must[storage.Integration](t, "Put")(NoEvent(s).PutIntegration(ctx, "acme", in))
	in.Params["subdomain"] = "evil"
	in.Client[0] ^= 0xff
	put.Params["region"] = "us"
	put.Client[1] ^= 0xff
	got := must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(got, want) {
		t.Fatalf("GetIntegration = %+v, want %+v", got, want)
	}
	got.Params["subdomain"] = "evil"
	got.Client[2] ^= 0xff
	list := must[[]storage.Integration](t, "List")(s.ListIntegrations(ctx, "acme"))
	if len(list) != 1 || !EqualIntegration(list[0], want) {
		t.Fatalf("ListIntegrations = %+v, want [%+v]", list, want)
	}
	list[0].Params["x"] = "y"
	next := must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(next, want) {
		t.Fatal("mutating results changed the stored integration")
	}
	next.Params = nil
	next.Client = nil
	next.APIBaseURL, next.Grant, next.ConnectSession = "", "", ""
	cas := must[storage.Integration](t, "CAS")(NoEvent(s).CompareAndSwapIntegration(ctx, "acme", next))
	got = must[storage.Integration](t, "Get")(s.GetIntegration(ctx, "acme", "crm"))
	if !EqualIntegration(got, cas) || got.Params != nil || got.Client != nil || got.APIBaseURL != "" || got.Grant != "" || got.ConnectSession != "" {
		t.Fatalf("clearing the fields by CAS: %+v", got)
	}
}
