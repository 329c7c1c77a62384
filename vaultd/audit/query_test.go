package audit

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func queryEvents(t *testing.T, l *Log, f Filter) []Event {
	t.Helper()
	var out []Event
	err := l.Query(t.Context(), f, func(line []byte) error {
		if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
			t.Fatalf("not one NDJSON line: %q", line)
		}
		ev, err := ParseEvent(line)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
		return nil
	})
	if err != nil {
		t.Fatalf("Query(%+v): %v", f, err)
	}
	return out
}

func TestQueryFilters(t *testing.T) {
	store := &fakeStore{}
	c := newClock()
	l := newTestLog(t, store, "", c)
	start := NewTimestamp(c.Now()).Time // event times keep microseconds
	const n = 700                       // crosses queryChunk
	for i := range n {
		if _, err := l.Record(t.Context(), sampleEvent(i)); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Second)
	}
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Second) }

	count := func(pred func(i int) bool) int {
		k := 0
		for i := range n {
			if pred(i) {
				k++
			}
		}
		return k
	}
	cases := []struct {
		name string
		f    Filter
		want func(i int) bool
	}{
		{"all", Filter{}, func(int) bool { return true }},
		{"tenant", Filter{TenantID: "globex"}, func(i int) bool { return i%3 == 1 }},
		{"tenant+integration", Filter{TenantID: "acme", IntegrationID: "int-2"}, func(i int) bool { return i%3 == 0 && i%5 == 2 }},
		{"action", Filter{Action: ActionTokenRefresh}, func(i int) bool { return i%4 == 2 }},
		{"since inclusive", Filter{Since: at(650)}, func(i int) bool { return i >= 650 }},
		{"until exclusive", Filter{Until: at(10)}, func(i int) bool { return i < 10 }},
		{"window+tenant", Filter{TenantID: "initech", Since: at(100), Until: at(200)}, func(i int) bool { return i%3 == 2 && i >= 100 && i < 200 }},
		{"after_seq", Filter{AfterSeq: 690}, func(i int) bool { return i >= 690 }},
		{"no match", Filter{TenantID: "nobody"}, func(int) bool { return false }},
		{"actor", Filter{Actor: "spiffe://example.internal/app/crm-sync"}, func(int) bool { return true }},
		{"outcome", Filter{Outcome: OutcomeFailure}, func(i int) bool { return i%3 == 1 }},
		{"request_id", Filter{RequestID: "req-0042"}, func(i int) bool { return i == 42 }},
		{"actor+outcome+action", Filter{Actor: "spiffe://example.internal/app/crm-sync", Outcome: OutcomeDenied, Action: ActionAuthDenied},
			func(i int) bool { return i%3 == 2 && i%4 == 3 }},
		{"other actor", Filter{Actor: "ops-admin"}, func(int) bool { return false }},
		{"actor no match", Filter{Actor: "spiffe://example.internal/app"}, func(int) bool { return false }}, // exact, not a prefix
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := queryEvents(t, l, tc.f)
			if want := count(tc.want); len(got) != want {
				t.Fatalf("%d events, want %d", len(got), want)
			}
			for j, ev := range got {
				i := int(ev.Seq) - 1
				if !tc.want(i) {
					t.Fatalf("seq %d should not match", ev.Seq)
				}
				if j > 0 && ev.Seq <= got[j-1].Seq {
					t.Fatalf("not oldest first: %d after %d", ev.Seq, got[j-1].Seq)
				}
			}
		})
	}

	t.Run("limit", func(t *testing.T) {
		got := queryEvents(t, l, Filter{Limit: 100, TenantID: "acme"})
		if len(got) != 100 || got[0].Seq != 1 || got[99].Seq != 298 {
			t.Fatalf("%d events, first %d last %d", len(got), got[0].Seq, got[len(got)-1].Seq)
		}
		// Paging with after_seq continues where the page ended.
		rest := queryEvents(t, l, Filter{AfterSeq: got[99].Seq, TenantID: "acme"})
		if len(got)+len(rest) != count(func(i int) bool { return i%3 == 0 }) {
			t.Fatalf("pages: %d + %d", len(got), len(rest))
		}
	})
	t.Run("default limit", func(t *testing.T) {
		store2 := &fakeStore{}
		l2 := newTestLog(t, store2, "", newClock())
		record(t, l2, 0, DefaultLimit+5)
		if got := queryEvents(t, l2, Filter{}); len(got) != DefaultLimit {
			t.Fatalf("%d events, want the default %d", len(got), DefaultLimit)
		}
	})
	t.Run("fn error stops the stream", func(t *testing.T) {
		stop := errors.New("client went away")
		calls := 0
		err := l.Query(t.Context(), Filter{}, func([]byte) error {
			calls++
			if calls == 3 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 3 {
			t.Fatalf("err %v after %d calls", err, calls)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := l.Query(ctx, Filter{}, func([]byte) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("invalid filter", func(t *testing.T) {
		for _, f := range []Filter{{Limit: MaxLimit + 1}, {Limit: -1}, {TenantID: "../x"}, {Since: at(5), Until: at(5)},
			{Outcome: "ok"}, {Actor: "a\nb"}, {RequestID: "a b"}} {
			if err := l.Query(t.Context(), f, func([]byte) error { return nil }); !errors.Is(err, ErrBadFilter) {
				t.Fatalf("%+v: %v", f, err)
			}
		}
	})
}

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter(url.Values{
		"tenant_id": {"acme"}, "integration_id": {"crm"}, "action": {"token.refresh"},
		"actor": {"spiffe://example.internal/app/crm-sync"}, "outcome": {"denied"}, "request_id": {"6f1c0e1a2b3c4d5e6f708192"},
		"since": {"2026-03-01T00:00:00Z"}, "until": {"2026-03-02T00:00:00.5+01:00"},
		"limit": {"50"}, "after_seq": {"7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Filter{
		TenantID: "acme", IntegrationID: "crm", Action: "token.refresh",
		Actor: "spiffe://example.internal/app/crm-sync", Outcome: "denied", RequestID: "6f1c0e1a2b3c4d5e6f708192",
		Since: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Limit: 50, AfterSeq: 7,
	}
	if !f.Until.Equal(time.Date(2026, 3, 1, 23, 0, 0, 5e8, time.UTC)) {
		t.Fatalf("until %v", f.Until)
	}
	f.Until = time.Time{}
	if !f.Since.Equal(want.Since) {
		t.Fatalf("since %v", f.Since)
	}
	f.Since = want.Since
	if f != want {
		t.Fatalf("got %+v, want %+v", f, want)
	}
	if f, err := ParseFilter(url.Values{}); err != nil || f != (Filter{}) {
		t.Fatalf("empty: %+v, %v", f, err)
	}
	for name, q := range map[string]url.Values{
		"bad since":       {"since": {"yesterday"}},
		"bad until":       {"until": {"2026-03-01"}},
		"limit zero":      {"limit": {"0"}},
		"limit too big":   {"limit": {"10001"}},
		"limit not int":   {"limit": {"ten"}},
		"negative after":  {"after_seq": {"-1"}},
		"unknown key":     {"tenant": {"acme"}},
		"repeated key":    {"tenant_id": {"acme", "globex"}},
		"bad tenant":      {"tenant_id": {"a/b"}},
		"bad action":      {"action": {"DROP TABLE"}},
		"empty window":    {"since": {"2026-03-02T00:00:00Z"}, "until": {"2026-03-01T00:00:00Z"}},
		"bad outcome":     {"outcome": {"Success"}},
		"actor control":   {"actor": {"ops\x00admin"}},
		"actor too long":  {"actor": {strings.Repeat("a", 513)}},
		"actor bad utf8":  {"actor": {"\xff"}},
		"request_id bad":  {"request_id": {"6f1c/../x"}},
		"request_id long": {"request_id": {strings.Repeat("a", 129)}},
		"repeated actor":  {"actor": {"a", "b"}},
	} {
		if _, err := ParseFilter(q); !errors.Is(err, ErrBadFilter) {
			t.Errorf("%s: err %v, want ErrBadFilter", name, err)
		}
	}
}
