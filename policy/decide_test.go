package policy

import (
	"fmt"
	"strings"
	"testing"
)

// TestDecideTable runs every role set x every action (plus unknown ones) x
// every subject/resource tenant combination, and asserts that exactly the
// combinations listed in allowed are allowed: anything not listed must be
// denied.
func TestDecideTable(t *testing.T) {
	t.Parallel()
	roleSets := map[string][]Role{
		"none":              nil,
		"unknown":           {"root"},
		"app":               {RoleApp},
		"operator":          {RoleOperator},
		"auditor":           {RoleAuditor},
		"app+auditor":       {RoleApp, RoleAuditor},
		"operator+auditor":  {RoleOperator, RoleAuditor},
		"operator+app":      {RoleOperator, RoleApp}, // refused by NewDirectory; Decide must still hold
		"app+unknown":       {RoleApp, "root"},
		"operator (case)":   {"Operator"},
		"all three":         {RoleApp, RoleOperator, RoleAuditor},
		"app twice":         {RoleApp, RoleApp},
		"auditor+unknown":   {"x", RoleAuditor},
		"empty role string": {""},
	}
	actions := append(Actions(), "", "tenant.delete", "TENANT.CREATE", "integration.use ", "*")
	tenants := []string{"", "acme", "globex"}

	opActs := []Action{ActTenantCreate, ActTenantRead, ActTenantList, ActKeyRotate, ActProviderList, ActStoreBackup,
		ActTenantDisable, ActTenantOffboard, ActFleetRead, ActRevocationList, ActWebhookDelivery}
	appActs := []Action{ActIntegrationWrite, ActIntegrationRead, ActIntegrationList, ActIntegrationDelete, ActIntegrationUse, ActConnectCreate, ActConnectRead, ActIntegrationHealth}

	// allowed lists, as "roles|action|subjectTenant|resourceTenant" with
	// "*" for any tenant, every allowed combination.
	allowed := map[string]bool{}
	add := func(roles, act, st, rt string) {
		allowed[fmt.Sprintf("%s|%s|%s|%s", roles, act, st, rt)] = true
	}
	for _, rs := range []string{"operator", "operator+auditor", "operator+app", "all three"} {
		for _, a := range opActs {
			add(rs, string(a), "*", "*")
		}
	}
	for _, rs := range []string{"app", "app+auditor", "app+unknown", "app twice"} {
		for _, a := range appActs {
			add(rs, string(a), "acme", "acme")
			add(rs, string(a), "globex", "globex")
		}
	}
	for _, rs := range []string{"auditor", "app+auditor", "operator+auditor", "all three", "auditor+unknown"} {
		add(rs, string(ActAuditRead), "", "*")
		add(rs, string(ActAuditRead), "acme", "acme")
		add(rs, string(ActAuditRead), "globex", "globex")
	}
	isAllowed := func(roles string, a Action, st, rt string) bool {
		for _, k := range []string{
			fmt.Sprintf("%s|%s|%s|%s", roles, a, st, rt),
			fmt.Sprintf("%s|%s|%s|*", roles, a, st),
			fmt.Sprintf("%s|%s|*|*", roles, a),
		} {
			if allowed[k] {
				return true
			}
		}
		return false
	}

	seenAllow := map[string]bool{}
	n := 0
	for rname, roles := range roleSets {
		for _, a := range actions {
			for _, st := range tenants {
				for _, rt := range tenants {
					s := Subject{Principal: "p", Roles: roles, Tenant: st, OnBehalfOf: "u"}
					got := Decide(s, a, Resource{Tenant: rt})
					want := isAllowed(rname, a, st, rt)
					n++
					if got.Allow != want {
						t.Errorf("Decide(roles=%s, %q, subject tenant %q, resource tenant %q) = %+v; want allow=%v", rname, a, st, rt, got, want)
					}
					if got.Reason == "" {
						t.Errorf("Decide(roles=%s, %q, %q, %q): empty reason", rname, a, st, rt)
					}
					if got.Allow {
						seenAllow[rname+"|"+string(a)] = true
					}
				}
			}
		}
	}
	// Guard against a vacuous table: every listed role/action pair was
	// allowed somewhere.
	for k := range allowed {
		parts := strings.SplitN(k, "|", 4)
		if !seenAllow[parts[0]+"|"+parts[1]] {
			t.Errorf("allowed entry %q never exercised", k)
		}
	}
	if n != len(roleSets)*len(actions)*len(tenants)*len(tenants) {
		t.Fatalf("ran %d cases", n)
	}
}

func TestDecideReasons(t *testing.T) {
	t.Parallel()
	app := Subject{Principal: "a", Roles: []Role{RoleApp}, Tenant: "acme"}
	cases := []struct {
		s      Subject
		a      Action
		r      Resource
		reason string
	}{
		{app, ActIntegrationUse, Resource{Tenant: "globex"}, "tenant mismatch"},
		{Subject{Roles: []Role{RoleApp}}, ActIntegrationUse, Resource{}, "no tenant context"},
		{Subject{Roles: []Role{RoleOperator, RoleApp}, Tenant: "acme"}, ActIntegrationRead, Resource{Tenant: "acme"}, "operators never access tokens"},
		{app, ActTenantCreate, Resource{}, "operator role required"},
		{app, ActAuditRead, Resource{Tenant: "acme"}, "auditor role required"},
		{Subject{Roles: []Role{RoleAuditor}, Tenant: "acme"}, ActAuditRead, Resource{}, "tenant mismatch"},
		{app, "bogus", Resource{Tenant: "acme"}, "unknown action"},
	}
	for _, tc := range cases {
		d := Decide(tc.s, tc.a, tc.r)
		if d.Allow || d.Reason != tc.reason {
			t.Errorf("Decide(%+v, %q, %+v) = %+v; want deny %q", tc.s, tc.a, tc.r, d, tc.reason)
		}
	}
}

func TestActionsDistinct(t *testing.T) {
	t.Parallel()
	seen := map[Action]bool{}
	for _, a := range Actions() {
		if a == "" || seen[a] {
			t.Fatalf("action %q empty or repeated", a)
		}
		seen[a] = true
	}
	if len(seen) != 20 {
		t.Fatalf("%d actions", len(seen))
	}
}

func BenchmarkDecide(b *testing.B) {
	s := Subject{Principal: "p", Roles: []Role{RoleApp, RoleAuditor}, Tenant: "acme"}
	for b.Loop() {
		if !Decide(s, ActIntegrationUse, Resource{Tenant: "acme"}).Allow {
			b.Fatal("denied")
		}
	}
}
