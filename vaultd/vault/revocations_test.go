package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

func (f *lifeFixture) pending(t *testing.T) []PendingRevocation {
	t.Helper()
	rs, err := f.svc.ListRevocations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// A revocation the provider refuses at disconnect is queued, retried with
// doubling delays on the injected clock, and removed once the provider
// confirms; every step is audited and no token is ever listed.
func TestFailedRevocationRetriedUntilSuccess(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t, func(o *Options) {
		o.Lifecycle = Lifecycle{RevocationRetryInitial: 30 * time.Second, RevocationRetryFor: 24 * time.Hour}
	})
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.revoke.set(true)
	revoked, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm")
	if err != nil || revoked {
		t.Fatalf("disconnect: %v %v", revoked, err)
	}
	if _, err := f.svc.GetIntegration(ctx, "acme", "crm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the record outlives a failed revocation: %v", err)
	}
	rs := f.pending(t)
	if len(rs) != 2 {
		t.Fatalf("pending: %+v", rs)
	}
	start := f.clk.Now()
	for _, r := range rs {
		if r.TenantID != "acme" || r.IntegrationID != "crm" || r.Provider != "example" || r.Attempts != 0 ||
			r.LastError != "http_503" || !r.NextAttemptAt.Equal(start.Add(30*time.Second)) {
			t.Fatalf("pending revocation: %+v", r)
		}
	}
	// The stored record holds the token sealed, never in the clear.
	raw, err := f.store.(storage.RevocationStore).ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		js, _ := json.Marshal(r)
		if bytes.Contains(js, []byte("rt-0")) || bytes.Contains(js, []byte("at-0")) {
			t.Fatalf("a queued revocation holds its token in the clear: %s", js)
		}
	}
	evs := f.events(t, audit.ActionTokenRevoke)
	if len(evs) != 2 || evs[0].Outcome != audit.OutcomeFailure || evs[0].Detail != "refresh_token: http_503; retry queued" {
		t.Fatalf("token.revoke events: %+v", evs)
	}

	// Not due yet: nothing is tried.
	attempts := len(f.revoke.attempted)
	if res, err := f.svc.RetryRevocations(ctx, f.clk.Now()); err != nil || res != (RetryResult{Pending: 2}) {
		t.Fatalf("early round: %+v %v", res, err)
	}
	if len(f.revoke.attempted) != attempts {
		t.Fatal("a revocation was retried before it was due")
	}
	// Due, still failing: attempts 1, the next one 60s later.
	f.clk.Add(30 * time.Second)
	if res, err := f.svc.RetryRevocations(ctx, f.clk.Now()); err != nil || res != (RetryResult{Failed: 2, Pending: 2}) {
		t.Fatalf("failing round: %+v %v", res, err)
	}
	for _, r := range f.pending(t) {
		if r.Attempts != 1 || !r.NextAttemptAt.Equal(f.clk.Now().Add(time.Minute)) {
			t.Fatalf("after one failed retry: %+v", r)
		}
	}
	f.clk.Add(59 * time.Second)
	if res, _ := f.svc.RetryRevocations(ctx, f.clk.Now()); res.Failed != 0 {
		t.Fatalf("retried before the backoff ended: %+v", res)
	}
	// The provider recovers: both confirmed and removed.
	f.revoke.set(false)
	f.clk.Add(time.Second)
	if res, err := f.svc.RetryRevocations(ctx, f.clk.Now()); err != nil || res != (RetryResult{Revoked: 2}) {
		t.Fatalf("recovering round: %+v %v", res, err)
	}
	if rs := f.pending(t); len(rs) != 0 {
		t.Fatalf("pending after success: %+v", rs)
	}
	if got := strings.Join(f.fp.revoked, ","); !strings.Contains(got, "refresh_token=rt-0") || !strings.Contains(got, "access_token=at-0") {
		t.Fatalf("provider saw: %s", got)
	}
	var ok, failed int
	for _, ev := range f.events(t, audit.ActionRevocationRetry) {
		if ev.Actor != SystemPrincipal || ev.TenantID != "acme" || ev.IntegrationID != "crm" {
			t.Fatalf("revocation.retry event: %+v", ev)
		}
		switch ev.Outcome {
		case audit.OutcomeSuccess:
			ok++
		case audit.OutcomeFailure:
			failed++
			if ev.Detail != "http_503" {
				t.Fatalf("failure detail: %q", ev.Detail)
			}
		}
	}
	if ok != 2 || failed != 2 {
		t.Fatalf("revocation.retry events: %d success, %d failure", ok, failed)
	}
}

// A revocation still failing after revocation_retry_for is dropped and
// that is audited; it outlives its tenant's offboarding until then.
func TestFailedRevocationDroppedAfterRetryFor(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t, func(o *Options) {
		o.Lifecycle = Lifecycle{RevocationRetryInitial: time.Minute, RevocationRetryFor: 3 * time.Hour}
	})
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.revoke.set(true)
	res, err := f.svc.OffboardTenant(ctx, Caller{Principal: "op"}, "acme")
	if err != nil || res != (OffboardResult{Integrations: 1, RevokedAtProvider: 0, RevocationsPending: 2, Shredded: true}) {
		t.Fatalf("offboard: %+v %v", res, err)
	}
	if evs := f.events(t, audit.ActionTenantOffboard); len(evs) != 1 || evs[0].Detail != "integrations=1 revoked_at_provider=0 revocations_pending=2" {
		t.Fatalf("tenant.offboard: %+v", evs)
	}
	// Retried (the tenant's key is gone; the queue's seal is the KEK's)
	// until three hours have passed.
	rounds := 0
	for rounds < 100 {
		f.clk.Add(10 * time.Minute)
		r, err := f.svc.RetryRevocations(ctx, f.clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		rounds++
		if r.Dropped > 0 {
			if r.Dropped != 2 || r.Pending != 0 {
				t.Fatalf("drop round: %+v", r)
			}
			break
		}
	}
	if rs := f.pending(t); len(rs) != 0 {
		t.Fatalf("pending after retry_for: %+v", rs)
	}
	var dropped int
	for _, ev := range f.events(t, audit.ActionRevocationRetry) {
		if ev.Outcome == audit.OutcomeFailure && ev.Detail == "dropped after 3h0m0s" {
			dropped++
		}
	}
	if dropped != 2 {
		t.Fatalf("dropped events: %d", dropped)
	}
	if n := len(f.revoke.attempted); n < 6 {
		t.Fatalf("only %d revocation attempts in three hours", n)
	}
}

// A sealed revocation moved to another record, or tampered with, never
// opens; it is dropped, not retried forever.
func TestTamperedRevocationDropped(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.store0(t, "globex", "crm", 3600)
	f.revoke.set(true)
	for _, tn := range []string{"acme", "globex"} {
		if _, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, tn, "crm"); err != nil {
			t.Fatal(err)
		}
	}
	revs := f.store.(storage.RevocationStore)
	rs, _ := revs.ListRevocations(ctx)
	if len(rs) != 4 {
		t.Fatalf("queued: %d", len(rs))
	}
	// acme's first takes globex's seal.
	var victim, donor storage.Revocation
	for _, r := range rs {
		if r.TenantID == "acme" && victim.ID == "" {
			victim = r
		}
	}
	for _, r := range rs {
		if r.TenantID == "globex" && r.Hint == victim.Hint {
			donor = r
		}
	}
	if victim.ID == "" || donor.ID == "" {
		t.Fatalf("no victim or donor among %d records", len(rs))
	}
	victim.Sealed = donor.Sealed
	if _, _, err := revs.UpdateRevocation(ctx, victim, nil); err != nil {
		t.Fatal(err)
	}
	f.revoke.set(false)
	f.clk.Add(time.Hour)
	res, err := f.svc.RetryRevocations(ctx, f.clk.Now())
	if err != nil || res != (RetryResult{Revoked: 3, Dropped: 1}) {
		t.Fatalf("round: %+v %v", res, err)
	}
	var unsealable int
	for _, ev := range f.events(t, audit.ActionRevocationRetry) {
		if ev.Detail == "dropped: unsealable" && ev.TenantID == "acme" {
			unsealable++
		}
	}
	if unsealable != 1 {
		t.Fatalf("unsealable drops: %d", unsealable)
	}
	// The donor's token went to the provider once, for globex, not again
	// for acme.
	n := 0
	for _, r := range f.fp.revoked {
		if strings.HasPrefix(r, donor.Hint+"=") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("revocations with the donor's hint: %d, want 1 (%v)", n, f.fp.revoked)
	}
}

// With the HSM down a retry is a failed attempt like any other, not a drop.
func TestRetryWithHSMDownIsAFailure(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.revoke.failNext = 1
	if _, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm"); err != nil {
		t.Fatal(err)
	}
	if rs := f.pending(t); len(rs) != 1 || rs[0].Hint != "refresh_token" {
		t.Fatalf("pending: %+v", rs)
	}
	f.clk.Add(time.Hour)
	f.kr.Fail.Store(true)
	res, err := f.svc.RetryRevocations(ctx, f.clk.Now())
	f.kr.Fail.Store(false)
	if err != nil || res != (RetryResult{Failed: 1, Pending: 1}) {
		t.Fatalf("round with the HSM down: %+v %v", res, err)
	}
	if rs := f.pending(t); rs[0].LastError != "hsm_unavailable" || rs[0].Attempts != 1 {
		t.Fatalf("after the HSM failure: %+v", rs)
	}
	f.clk.Add(time.Hour)
	if res, err := f.svc.RetryRevocations(ctx, f.clk.Now()); err != nil || res.Revoked != 1 {
		t.Fatalf("round with the HSM back: %+v %v", res, err)
	}
}

// Without a queue (no keyring), a failed revocation is logged and audited
// as before, and the disconnect still happens.
func TestNoQueueDisconnectStillDeletes(t *testing.T) {
	t.Parallel()
	f := newLifeFixture(t, func(o *Options) { o.Keyring = nil })
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	f.revoke.set(true)
	if revoked, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm"); err != nil || revoked {
		t.Fatalf("disconnect: %v %v", revoked, err)
	}
	if rs := f.pending(t); len(rs) != 0 {
		t.Fatalf("queued without a keyring: %+v", rs)
	}
	evs := f.events(t, audit.ActionTokenRevoke)
	if len(evs) != 2 || evs[0].Detail != "refresh_token: http_503" {
		t.Fatalf("token.revoke: %+v", evs)
	}
}

func TestRevocationBackoff(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		initial  time.Duration
		attempts uint32
		want     time.Duration
	}{
		{30 * time.Second, 0, 30 * time.Second},
		{30 * time.Second, 1, time.Minute},
		{30 * time.Second, 2, 2 * time.Minute},
		{30 * time.Second, 7, time.Hour}, // 64m, capped
		{30 * time.Second, 1000, time.Hour},
		{time.Second, 3, 8 * time.Second},
		{2 * time.Hour, 0, time.Hour},
	} {
		if got := revocationBackoff(c.initial, c.attempts); got != c.want {
			t.Errorf("revocationBackoff(%v, %d) = %v, want %v", c.initial, c.attempts, got, c.want)
		}
	}
}

func TestSealedRoundTrip(t *testing.T) {
	t.Parallel()
	w := hsm.WrappedKey{KEKVersion: 3, Nonce: bytes.Repeat([]byte{7}, 12), Ciphertext: []byte("ciphertext-and-tag")}
	b, err := encodeSealed(w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSealed(b, 3)
	if err != nil || got.KEKVersion != 3 || !bytes.Equal(got.Nonce, w.Nonce) || !bytes.Equal(got.Ciphertext, w.Ciphertext) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, []byte("VRV"), []byte("VRV\x02\x01ab"), []byte("VRV\x01\x00abc"), []byte("VRV\x01\x05abc"), []byte("VRV\x01\x02ab")} {
		if _, err := decodeSealed(bad, 1); !errors.Is(err, errSealedFormat) {
			t.Errorf("decodeSealed(%q): %v", bad, err)
		}
	}
	if _, err := encodeSealed(hsm.WrappedKey{Nonce: nil, Ciphertext: []byte("x")}); err == nil {
		t.Fatal("encodeSealed took an empty nonce")
	}
	if a, b := revocationAAD("r1", "t", "i", "h"), revocationAAD("r1", "ti", "", "h"); bytes.Equal(a, b) {
		t.Fatal("revocationAAD is not injective")
	}
}

func FuzzDecodeSealed(f *testing.F) {
	good, _ := encodeSealed(hsm.WrappedKey{Nonce: bytes.Repeat([]byte{1}, 12), Ciphertext: bytes.Repeat([]byte{2}, 40)})
	f.Add(good)
	f.Add([]byte("VRV\x01\xffabc"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := decodeSealed(b, 9)
		if err != nil {
			return
		}
		if len(w.Nonce) == 0 || len(w.Ciphertext) == 0 || w.KEKVersion != 9 {
			t.Fatalf("accepted %x as %+v", b, w)
		}
		again, err := encodeSealed(w)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %x gave %x (%v)", b, again, err)
		}
	})
}
