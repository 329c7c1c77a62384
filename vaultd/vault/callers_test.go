package vault

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Regression tests for an adversarial review: callers that hang up, and
// upstream 401s used to drain the shared refresh budget.

// A caller who hangs up while the provider is answering a refresh does
// not stop it: the rotated tokens are committed and the integration stays
// active (it went degraded, then reauthorization_required, when the grant
// ran on the caller's context).
func TestRefreshSurvivesCallerHangUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store0(t, "acme", "crm", 30) // inside the margin: refresh due
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	f.fp.mu.Lock()
	f.fp.gate, f.fp.entered = gate, entered
	f.fp.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := f.svc.AccessToken(ctx, Caller{Principal: "app"}, "acme", "crm")
		errc <- err
	}()
	<-entered // the provider has the refresh token
	cancel()
	// The caller is released while the provider still holds the call.
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("hung-up caller got %v, want context.Canceled", err)
	}
	close(gate)
	f.svc.bg.Wait()
	in, err := f.store.GetIntegration(t.Context(), "acme", "crm")
	if err != nil || in.Status != storage.StatusActive || in.RefreshCount != 1 {
		t.Fatalf("after the hang-up: status %q count %d err %v", in.Status, in.RefreshCount, err)
	}
	l, err := f.svc.AccessToken(t.Context(), Caller{}, "acme", "crm")
	if err != nil || l.Token.Reveal() != "at-1" || f.fp.calls.Load() != 1 {
		t.Fatalf("next call: token %q err %v refreshes %d", l.Token.Reveal(), err, f.fp.calls.Load())
	}
	if got := auditActions(t, f)["token.refresh/success"]; got != 1 {
		t.Fatalf("token.refresh success events: %d", got)
	}
}

// Upstream 401s force at most one refresh per access token and per
// ForcedRefreshInterval: a fresh token that also gets a 401 does not earn
// another at once (ten 401s made ten token_url calls).
func TestForcedRefreshThrottled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	l0, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	l1, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l0)
	if err != nil || l1.Token.Reveal() != "at-1" {
		t.Fatalf("first forced refresh: %q %v", l1.Token.Reveal(), err)
	}
	for i := 0; i < 10; i++ {
		if _, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l1); !errors.Is(err, ErrRefreshThrottled) {
			t.Fatalf("401 #%d on the fresh token: %v, want ErrRefreshThrottled", i, err)
		}
	}
	// The stale lease's 401 gets the newer token, not a refresh.
	if l, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l0); err != nil || l.Token.Reveal() != "at-1" {
		t.Fatalf("stale lease: %q %v", l.Token.Reveal(), err)
	}
	if c := f.fp.calls.Load(); c != 1 {
		t.Fatalf("token_url calls: %d, want 1", c)
	}
	f.clk.Add(DefaultForcedRefreshInterval)
	if l, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l1); err != nil || l.Token.Reveal() != "at-2" {
		t.Fatalf("after the interval: %q %v", l.Token.Reveal(), err)
	}
}

// A last_used_at flush bumps the record's revision without changing the
// token: a 401 on that token still forces its one refresh (comparing
// revisions skipped it).
func TestForceRefreshAfterUsageFlush(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.store0(t, "acme", "crm", 3600)
	l0, err := f.svc.AccessToken(ctx, Caller{}, "acme", "crm")
	if err != nil {
		t.Fatal(err)
	}
	f.svc.MarkUsed("acme", "crm")
	f.svc.flushUsage(ctx)
	if in, _ := f.store.GetIntegration(ctx, "acme", "crm"); in.Revision == l0.Revision {
		t.Fatal("the usage flush did not write the record; the test needs it to")
	}
	l1, err := f.svc.ForceRefresh(ctx, Caller{}, "acme", "crm", l0)
	if err != nil || l1.Token.Reveal() != "at-1" || f.fp.calls.Load() != 1 {
		t.Fatalf("forced refresh after a flush: %q %v, %d calls", l1.Token.Reveal(), err, f.fp.calls.Load())
	}
}

// recordFails fails every standalone Record: only events committed with
// their change survive it.
type recordFails struct{ *audit.Log }

func (recordFails) Record(context.Context, audit.Event) (audit.Event, error) {
	return audit.Event{}, errors.New("standalone audit write refused")
}

// The scope.drift event commits with the refresh that revealed it, in the
// same transaction, right after its token.refresh event.
func TestScopeDriftCommittedWithRefresh(t *testing.T) {
	t.Parallel()
	var wrapped recordFails
	f := newFixture(t, func(o *Options) {
		wrapped = recordFails{o.Audit.(*audit.Log)}
		o.Audit = wrapped
	})
	f.store0(t, "acme", "crm", 30)
	f.fp.scopes = []string{"a", "admin"}
	if _, err := f.svc.AccessToken(t.Context(), Caller{}, "acme", "crm"); err != nil {
		t.Fatalf("refresh with drift: %v", err)
	}
	var evs []audit.Event
	if err := f.audit.Query(t.Context(), audit.Filter{Limit: 100}, func(line []byte) error {
		ev, err := audit.ParseEvent(line)
		evs = append(evs, ev)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	n := len(evs)
	if n < 2 || evs[n-2].Action != audit.ActionTokenRefresh || evs[n-1].Action != audit.ActionScopeDrift ||
		evs[n-1].Seq != evs[n-2].Seq+1 || !strings.Contains(evs[n-1].Detail, "admin") {
		t.Fatalf("last events: %+v", evs[max(0, n-2):])
	}
}

// A disconnect whose caller hangs up while the provider revokes still
// ends with both revocations and the delete audited and the record gone
// (the refresh token reached /revoke, and the record stayed active).
func TestDisconnectCompletesAfterCallerHangUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store0(t, "acme", "crm", 3600)
	gate, entered := make(chan struct{}), make(chan struct{}, 2)
	f.fp.mu.Lock()
	f.fp.revokeGate, f.fp.revokeEntered = gate, entered
	f.fp.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		revoked bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		r, err := f.svc.Disconnect(ctx, Caller{Principal: "app"}, "acme", "crm")
		done <- result{r, err}
	}()
	<-entered // the refresh token is at the provider
	cancel()
	close(gate)
	r := <-done
	if r.err != nil || !r.revoked {
		t.Fatalf("disconnect after the hang-up: revoked %t err %v", r.revoked, r.err)
	}
	if _, err := f.store.GetIntegration(t.Context(), "acme", "crm"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("record after disconnect: %v", err)
	}
	a := auditActions(t, f)
	if a["token.revoke/success"] != 2 || a["integration.delete/success"] != 1 {
		t.Fatalf("audit: %v", a)
	}
}

// Tokens are capped at MaxTokenBytes (a 9 MB access token was accepted).
func TestStoreTokenSizeCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	big := secret.NewString(strings.Repeat("x", MaxTokenBytes+1))
	for name, tok := range map[string]oauth.Token{
		"access":  {AccessToken: big},
		"refresh": {AccessToken: secret.NewString("at"), RefreshToken: big},
	} {
		if _, err := f.svc.StoreToken(t.Context(), Caller{Principal: "app"}, "acme", "crm", "example", tok); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("%s token over the cap: %v, want ErrBadRequest", name, err)
		}
	}
	ok := oauth.Token{AccessToken: secret.NewString(strings.Repeat("y", MaxTokenBytes))}
	if _, err := f.svc.StoreToken(t.Context(), Caller{Principal: "app"}, "acme", "crm", "example", ok); err != nil {
		t.Fatalf("token at the cap: %v", err)
	}
}
