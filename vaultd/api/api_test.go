package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// The error body and the tenant views are the wire format: pin their bytes.
func TestWireShapes(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{ErrorBody{Error: ErrorDetail{Code: CodeNotFound, Message: "no such endpoint", RequestID: "r1"}},
			`{"error":{"code":"not_found","message":"no such endpoint","request_id":"r1"}}`},
		{Tenant{ID: "acme", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), KEKVersion: 1, DEKVersion: 2, Status: "active"},
			`{"id":"acme","created_at":"2026-01-02T03:04:05Z","kek_version":1,"dek_version":2,"status":"active"}`},
		{TenantRewrap{TenantKeys: TenantKeys{Tenant: Tenant{ID: "a", Status: "active"}, KEKVersionsInUse: []uint32{2}}},
			`{"id":"a","created_at":"0001-01-01T00:00:00Z","kek_version":0,"dek_version":0,"status":"active","kek_versions_in_use":[2],"rewrapped_deks":0}`},
		{DeleteResult{}, `{"revoked_at_provider":false}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T: %s %v, want %s", c.v, b, err, c.want)
		}
	}
}

func TestCodeStatus(t *testing.T) {
	seen := map[Code]bool{}
	for _, c := range Codes() {
		if seen[c] {
			t.Fatalf("%s listed twice", c)
		}
		seen[c] = true
		if _, ok := codeStatus[c]; !ok {
			t.Fatalf("%s has no status", c)
		}
	}
	if len(seen) != len(codeStatus) {
		t.Fatalf("Codes lists %d codes, the status table has %d", len(seen), len(codeStatus))
	}
	if CodeEgressDenied.Status() != http.StatusForbidden || Code("nosuch").Status() != http.StatusInternalServerError {
		t.Fatal("status table")
	}
}
