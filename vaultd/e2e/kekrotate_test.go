package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/client"
)

// TestKEKRotation: the operator procedure of docs/operations.md, against a
// running vaultd. `vaultctl kek-rotate` adds KEK version 2 in the HSM; a
// reload makes it current for new wraps; `tenant rewrap` moves a tenant's
// DEKs under it without touching a sealed record; every integration keeps
// working, across a restart too, and each step is audited.
func TestKEKRotation(t *testing.T) {
	e := New(t, Options{})
	ctx := t.Context()
	op := e.Client(Operator)
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")
	hc := e.HTTP(AppAcme)
	proxyOK := func(t *testing.T, when string) {
		t.Helper()
		if r := obProxy(t, e, hc, "crm", http.MethodGet, "contacts/1", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("proxy %s: %d %s", when, r.Status, r.Body)
		}
	}
	proxyOK(t, "before rotation")

	out, err := e.Ctl("kek-rotate", "-config", e.ConfigPath)
	if err != nil || !strings.Contains(out, "version 2 created") {
		t.Fatalf("kek-rotate: %v\n%s", err, out)
	}
	// Not current in vaultd until it reloads.
	if tn, err := op.CreateTenant(ctx, "globex"); err != nil || tn.KEKVersion != 1 {
		t.Fatalf("tenant before reload: %+v %v", tn, err)
	}
	e.Signal(syscall.SIGHUP)
	waitLog(t, e, `"kek_version":2`)
	if tn, err := op.CreateTenant(ctx, "initech"); err != nil || tn.KEKVersion != 2 {
		t.Fatalf("tenant after reload: %+v %v", tn, err)
	}
	proxyOK(t, "after reload, before rewrap")

	tn, err := op.RewrapTenant(ctx, "acme")
	if err != nil || tn.RewrappedDEKs != 1 || tn.KEKVersion != 2 || !slices.Equal(tn.KEKVersionsInUse, []uint32{2}) {
		t.Fatalf("rewrap: %+v %v", tn, err)
	}
	if tn, err := op.RewrapTenant(ctx, "acme"); err != nil || tn.RewrappedDEKs != 0 {
		t.Fatalf("second rewrap: %+v %v", tn, err)
	}
	if _, err := op.RewrapTenant(ctx, "nosuch"); !client.IsCode(err, api.CodeNotFound) {
		t.Fatalf("rewrap of a missing tenant: %v", err)
	}
	proxyOK(t, "after rewrap")

	ts, err := op.ListTenants(ctx)
	must(t, err)
	inUse := map[string][]uint32{}
	for _, x := range ts {
		inUse[x.ID] = x.KEKVersionsInUse
	}
	if !slices.Equal(inUse["acme"], []uint32{2}) || !slices.Equal(inUse["globex"], []uint32{1}) || !slices.Equal(inUse["initech"], []uint32{2}) {
		t.Fatalf("KEK versions in use: %v", inUse)
	}
	out, err = e.Ctl("kek-info", "-config", e.ConfigPath)
	if err != nil {
		t.Fatalf("kek-info: %v\n%s", err, out)
	}
	var infos []struct {
		Version                uint32
		Sensitive, Extractable bool
	}
	must(t, json.Unmarshal([]byte(out), &infos))
	var versions []uint32
	for _, in := range infos {
		if !in.Sensitive || in.Extractable {
			t.Fatalf("KEK version %d: sensitive %v extractable %v", in.Version, in.Sensitive, in.Extractable)
		}
		versions = append(versions, in.Version)
	}
	if !slices.Equal(versions, []uint32{1, 2}) {
		t.Fatalf("kek-info versions %v, want [1 2]", versions)
	}

	// The rewrapped DEK, from the database, after a restart.
	if err := e.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	e.Start()
	proxyOK(t, "after restart")

	var rewraps []string
	for _, ev := range obAudit(t, e) {
		detail, _ := ev["detail"].(string)
		tenant, _ := ev["tenant_id"].(string)
		if ev["action"] == "key.rotate" && strings.HasPrefix(detail, "rewrap") {
			rewraps = append(rewraps, tenant+" "+detail)
		}
	}
	if !slices.Equal(rewraps, []string{"acme rewrap deks=1 kek_version=2", "acme rewrap deks=0 kek_version=2"}) {
		t.Fatalf("rewrap audit events: %q", rewraps)
	}
}
