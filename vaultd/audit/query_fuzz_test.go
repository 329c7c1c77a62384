package audit

import (
	"errors"
	"net/url"
	"testing"
)

// FuzzParseFilter: any query string either parses into a filter that
// validates and holds exactly the values asked for, or is refused with
// ErrBadFilter; it never panics.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"tenant_id=acme&action=token.refresh&limit=5",
		"actor=spiffe%3A%2F%2Fexample.internal%2Fapp%2Fcrm-sync&outcome=denied",
		"request_id=6f1c0e1a2b3c4d5e6f708192&after_seq=7",
		"outcome=Success", "actor=%00", "actor=%FF", "request_id=a%20b", "actor=a&actor=b",
		"since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", "tenant=acme",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := ParseFilter(q)
		if err != nil {
			if !errors.Is(err, ErrBadFilter) {
				t.Fatalf("%q: error %v is not ErrBadFilter", raw, err)
			}
			return
		}
		if err := flt.validate(); err != nil {
			t.Fatalf("%q: accepted filter does not validate: %v", raw, err)
		}
		if flt.Actor != q.Get("actor") || flt.Outcome != q.Get("outcome") || flt.RequestID != q.Get("request_id") ||
			flt.TenantID != q.Get("tenant_id") || flt.Action != q.Get("action") {
			t.Fatalf("%q: filter %+v differs from the query", raw, flt)
		}
		if flt.Outcome != "" && !ValidOutcome(flt.Outcome) {
			t.Fatalf("%q: outcome %q accepted", raw, flt.Outcome)
		}
	})
}
