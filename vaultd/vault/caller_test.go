package vault

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Writes take a Caller and build their events themselves: actor,
// on_behalf_of and request id come from the Caller, http_status from
// WithStatus, the rest from the operation.
func TestWritesAuditTheirCaller(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	op := Caller{Principal: "op", RequestID: "r-op"}
	app := Caller{Principal: "app", OnBehalfOf: "user-7", RequestID: "r-app"}
	if _, err := f.svc.CreateTenant(ctx, op, "initech", WithStatus(201)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.RotateDEK(ctx, op, "initech", WithStatus(200)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.RewrapTenant(ctx, op, "initech"); err != nil {
		t.Fatal(err)
	}
	tok := oauth.Token{AccessToken: secret.NewString("at-x"), RefreshToken: secret.NewString("rt-x"), ExpiresIn: 3600}
	if _, err := f.svc.StoreToken(ctx, app, "initech", "crm", "example", tok, WithStatus(200)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Disconnect(ctx, app, "initech", "crm", WithStatus(200)); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := f.audit.Query(ctx, audit.Filter{TenantID: "initech", Limit: 100}, func(line []byte) error {
		ev, err := audit.ParseEvent(line)
		if err != nil {
			return err
		}
		got = append(got, fmt.Sprintf("%s %s %s/%s %s %s %d %q", ev.Action, ev.Outcome, ev.Actor, ev.OnBehalfOf, ev.RequestID, ev.IntegrationID, ev.HTTPStatus, ev.Detail))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`tenant.create success op/ r-op  201 "kek_version=1 dek_version=1"`,
		`key.rotate success op/ r-op  200 "dek_version=2 kek_version=1"`,
		`key.rotate success op/ r-op  0 "rewrap deks=0 kek_version=1"`,
		`token.store success app/user-7 r-app crm 200 "provider=example"`,
		`token.revoke success app/user-7 r-app crm 0 "refresh_token"`,
		`token.revoke success app/user-7 r-app crm 0 "access_token"`,
		`integration.delete success app/user-7 r-app crm 200 "revoked_at_provider=true"`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", fmt.Sprint(got), fmt.Sprint(want))
	}
}

func TestSafeName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"example": "example", "bad name!": "(invalid)", "": "(invalid)",
		strings.Repeat("a", 65): "(invalid)", strings.Repeat("a", 64): strings.Repeat("a", 64)} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
}
