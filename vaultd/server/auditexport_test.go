package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/inmem"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// failingAppend wraps a store whose appends can be made to fail, to see
// what an export does when its audit.read event cannot be written.
type failingAppend struct {
	*inmem.Store
	fail bool
}

func (f *failingAppend) AppendAudit(ctx context.Context, fn storage.AuditFunc) (storage.AuditRecord, error) {
	if f.fail {
		return storage.AuditRecord{}, errors.New("store down")
	}
	return f.Store.AppendAudit(ctx, fn)
}

func exportServer(t *testing.T) (*Server, *failingAppend) {
	t.Helper()
	st := &failingAppend{Store: inmem.New()}
	l, err := audit.New(t.Context(), st, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	for i, ev := range []audit.Event{
		{TenantID: "acme", Actor: "ops-admin", Action: audit.ActionTenantCreate, Outcome: audit.OutcomeSuccess},
		{TenantID: "acme", Actor: "spiffe://x/app", Action: audit.ActionAuthDenied, Outcome: audit.OutcomeDenied},
		{TenantID: "globex", Actor: "ops-admin", Action: audit.ActionTenantCreate, Outcome: audit.OutcomeFailure},
	} {
		ev.RequestID = "req" + string(rune('a'+i))
		if _, err := l.Record(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	return &Server{log: slog.New(slog.DiscardHandler), audit: l}, st
}

func exportRequest(t *testing.T, rawQuery string, sub policy.Subject) (*request, *httptest.ResponseRecorder) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/audit?"+rawQuery, nil)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey, "rid-export-1"))
	w := httptest.NewRecorder()
	q := &request{w: w, r: r, sub: sub, status: http.StatusOK}
	if _, ok := auditFilter(q); !ok {
		t.Fatalf("filter %q refused: %s", rawQuery, w.Body)
	}
	return q, w
}

func lastEvent(t *testing.T, s *Server) audit.Event {
	t.Helper()
	var last []byte
	if err := s.audit.Query(t.Context(), audit.Filter{}, func(line []byte) error { last = line; return nil }); err != nil {
		t.Fatal(err)
	}
	ev, err := audit.ParseEvent(last)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// An export is recorded after its last line: who, which filters, how many.
func TestAuditReadRecorded(t *testing.T) {
	s, _ := exportServer(t)
	q, w := exportRequest(t, "actor=ops-admin&outcome=success&limit=10", policy.Subject{Principal: "siem-reader"})
	s.queryAudit(q)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	n := 0
	for sc := bufio.NewScanner(w.Body); sc.Scan(); n++ {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Actor != "ops-admin" || ev.Outcome != audit.OutcomeSuccess {
			t.Fatalf("line %d: %s %v", n, sc.Bytes(), err)
		}
	}
	if n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	ev := lastEvent(t, s)
	if ev.Action != audit.ActionAuditRead || ev.Actor != "siem-reader" || ev.Outcome != audit.OutcomeSuccess ||
		ev.HTTPStatus != 200 || ev.RequestID != "rid-export-1" || ev.TenantID != "" ||
		ev.Detail != "actor=ops-admin outcome=success limit=10 events=1" {
		t.Fatalf("audit.read = %+v", ev)
	}

	// A tenant-bound auditor's export names its tenant.
	q, _ = exportRequest(t, "request_id=reqb", policy.Subject{Principal: "acme-auditor", Tenant: "acme"})
	s.queryAudit(q)
	ev = lastEvent(t, s)
	if ev.TenantID != "acme" || ev.Detail != "tenant_id=acme request_id=reqb events=1" {
		t.Fatalf("tenant audit.read = %+v", ev)
	}
}

// An export that cannot be recorded is not delivered as complete.
func TestAuditReadUnrecordable(t *testing.T) {
	s, st := exportServer(t)
	q, _ := exportRequest(t, "since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), policy.Subject{Principal: "siem-reader"})
	st.fail = true
	// Nothing matched, nothing written yet: a plain 503.
	s.queryAudit(q)
	if w := q.w.(*httptest.ResponseRecorder); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	// Lines already written: the stream is reset.
	q, _ = exportRequest(t, "", policy.Subject{Principal: "siem-reader"})
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	s.queryAudit(q)
	t.Fatal("an unrecorded export ended normally")
}

func TestAuditReadDetail(t *testing.T) {
	f := audit.Filter{TenantID: "acme", IntegrationID: "crm", Action: "token.refresh", Actor: "a", Outcome: "failure",
		RequestID: "r1", Since: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 3, 2, 0, 0, 0, 5e8, time.UTC),
		AfterSeq: 7, Limit: 50}
	want := "tenant_id=acme integration_id=crm action=token.refresh actor=a outcome=failure request_id=r1 " +
		"since=2026-03-01T00:00:00Z until=2026-03-02T00:00:00.5Z after_seq=7 limit=50 events=3"
	if got := auditReadDetail(f, 3); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := auditReadDetail(audit.Filter{}, 0); got != "events=0" {
		t.Errorf("empty filter: %q", got)
	}
	if strings.Contains(auditReadDetail(audit.Filter{}, 0), "  ") {
		t.Error("double space")
	}
}
