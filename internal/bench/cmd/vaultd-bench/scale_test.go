package main

import (
	"fmt"
	"testing"
)

func TestParseScale(t *testing.T) {
	for _, c := range []struct {
		in   string
		want [2]int
		ok   bool
	}{
		{"10/1000", [2]int{10, 1000}, true},
		{"10000/1000000", [2]int{10000, 1000000}, true},
		{"1/1", [2]int{1, 1}, true},
		{"0/10", [2]int{}, false},  // no tenant
		{"10/5", [2]int{}, false},  // fewer integrations than tenants
		{"-1/10", [2]int{}, false}, // negative
		{"10", [2]int{}, false},
		{"", [2]int{}, false},
		{"a/b", [2]int{}, false},
		{"10/1000x", [2]int{}, false}, // trailing garbage
		{" 10/1000", [2]int{}, false},
	} {
		got, err := parseScale(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseScale(%q) = %v, %v; want %v, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func FuzzParseScale(f *testing.F) {
	f.Add("10/1000")
	f.Add("0/0")
	f.Add("9999999999999999999/1")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseScale(s)
		if err != nil {
			return
		}
		// Whatever it accepts is usable by grow: at least one tenant,
		// and no tenant without an integration.
		if got[0] < 1 || got[1] < got[0] {
			t.Fatalf("parseScale(%q) accepted %v", s, got)
		}
	})
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1000000: "1,000,000", 12345: "12,345"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestRetentionFlat(t *testing.T) {
	for _, c := range []struct {
		sizes []int64
		want  bool
	}{
		{[]int64{100, 100, 100}, true},
		{[]int64{100, 104, 109}, true},  // a few pages of bookkeeping
		{[]int64{100, 150, 200}, false}, // grows by a round's worth
		{[]int64{100, 100}, false},      // not three rounds
		{[]int64{0, 0, 0}, false},
	} {
		if got := (retentionResult{Sizes: c.sizes}).flat(); got != c.want {
			t.Errorf("flat(%v) = %v, want %v", c.sizes, got, c.want)
		}
	}
}

func TestScaleTenantID(t *testing.T) {
	if scaleTenantID(0) != "acme" {
		t.Fatalf("tenant 0 must be the app's tenant, got %q", scaleTenantID(0))
	}
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := scaleTenantID(i)
		if seen[id] {
			t.Fatalf("tenant id %q repeats", id)
		}
		seen[id] = true
	}
	if got := scaleTenantID(9999); got != fmt.Sprintf("t-%05d", 9999) {
		t.Fatalf("scaleTenantID(9999) = %q", got)
	}
}
