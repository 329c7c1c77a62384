package server

import (
	"net/url"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

func TestParseFleetQuery(t *testing.T) {
	t.Parallel()
	q, err := parseFleetQuery(url.Values{})
	if err != nil || q.Limit != 100 || q.Flagged != nil || q.TenantID != "" {
		t.Fatalf("defaults: %+v %v", q, err)
	}
	v, _ := url.ParseQuery("tenant_id=acme&provider=github&status=degraded&flagged=true&limit=1000&after=acme/crm")
	q, err = parseFleetQuery(v)
	if err != nil || q.TenantID != "acme" || q.Provider != "github" || q.Status != "degraded" || q.Flagged == nil || !*q.Flagged ||
		q.Limit != 1000 || q.AfterTenant != "acme" || q.AfterID != "crm" {
		t.Fatalf("full: %+v %v", q, err)
	}
	for _, bad := range []string{
		"limit=0", "limit=1001", "limit=x", "flagged=yes", "status=gone", "after=acme", "after=/crm",
		"after=acme/crm/x", "tenant_id=..", "provider=a%20b", "nosuch=1", "limit=1&limit=2",
	} {
		v, _ := url.ParseQuery(bad)
		if _, err := parseFleetQuery(v); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzParseFleetQuery(f *testing.F) {
	for _, s := range []string{"", "limit=5&after=a/b", "flagged=false&status=active", "tenant_id=x&tenant_id=y", "after=%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseFleetQuery(v)
		if err != nil {
			if raw != "" && len(raw) > 8 && strings.Contains(err.Error(), raw) {
				t.Fatalf("error echoes the query: %v", err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > 1000 {
			t.Fatalf("limit %d", q.Limit)
		}
		if (q.AfterTenant == "") != (q.AfterID == "") || (q.AfterTenant != "" && (!storage.ValidID(q.AfterTenant) || !storage.ValidID(q.AfterID))) {
			t.Fatalf("after %q/%q", q.AfterTenant, q.AfterID)
		}
		if q.TenantID != "" && !storage.ValidID(q.TenantID) {
			t.Fatalf("tenant %q", q.TenantID)
		}
	})
}
