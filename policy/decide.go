package policy

import "slices"

// Action is something a request wants to do. Handlers name exactly one per
// request and ask Decide before doing anything.
type Action string

// Operator actions (platform-wide; never touch a token).
const (
	ActTenantCreate Action = "tenant.create"
	ActTenantRead   Action = "tenant.read"
	ActTenantList   Action = "tenant.list"
	ActKeyRotate    Action = "key.rotate"
	ActProviderList Action = "provider.list"
	// ActStoreBackup streams a snapshot of the database: sealed tokens and
	// wrapped DEKs only, useless without the HSM's KEK, so an operator
	// action like the others that never see a token.
	ActStoreBackup Action = "store.backup"
	// Tenant lifecycle and the fleet's operations (none returns a token).
	ActTenantDisable   Action = "tenant.disable" // disable and enable
	ActTenantOffboard  Action = "tenant.offboard"
	ActFleetRead       Action = "fleet.read"       // GET /v1/admin/integrations
	ActRevocationList  Action = "revocation.list"  // GET /v1/admin/revocations
	ActWebhookDelivery Action = "webhook.delivery" // list and redeliver notifications
)

// App actions (only within the subject's own tenant).
const (
	ActIntegrationWrite  Action = "integration.write" // store_token
	ActIntegrationRead   Action = "integration.read"
	ActIntegrationList   Action = "integration.list"
	ActIntegrationDelete Action = "integration.delete"
	ActIntegrationUse    Action = "integration.use" // proxy and execute
	// ActConnectCreate starts a connect flow (a session whose completion
	// stores a token, so an app action like store_token); ActConnectRead
	// reads a session's status.
	ActConnectCreate Action = "connect.create"
	ActConnectRead   Action = "connect.read"
	// ActIntegrationHealth reads an integration's health score.
	ActIntegrationHealth Action = "integration.health"
)

// Auditor actions.
const (
	ActAuditRead Action = "audit.read"
)

// Actions lists every action Decide knows, for tables and tests.
func Actions() []Action {
	return []Action{
		ActTenantCreate, ActTenantRead, ActTenantList, ActKeyRotate, ActProviderList, ActStoreBackup,
		ActTenantDisable, ActTenantOffboard, ActFleetRead, ActRevocationList, ActWebhookDelivery,
		ActIntegrationWrite, ActIntegrationRead, ActIntegrationList, ActIntegrationDelete, ActIntegrationUse,
		ActConnectCreate, ActConnectRead, ActIntegrationHealth, ActAuditRead,
	}
}

// Subject is who asks: the principal name, its roles, and the tenant the
// request acts for: the principal's fixed tenant or the tenant of its
// verified tenant-context JWT, "" for a platform-wide request.
// OnBehalfOf is the JWT's sub, for audit only; Decide ignores it.
type Subject struct {
	Principal  string
	Roles      []Role
	Tenant     string
	OnBehalfOf string
}

// HasRole reports whether s holds role r.
func (s Subject) HasRole(r Role) bool { return slices.Contains(s.Roles, r) }

// Resource is what an action applies to. Tenant is the tenant the handler
// will read or write: for integration actions the subject's tenant as the
// handler will use it, for ActAuditRead the tenant filter the handler will
// apply ("" = all tenants); operator actions ignore it.
type Resource struct {
	Tenant string
}

// Decision is Decide's answer. Reason is a short fixed phrase, safe to log
// and to put in an audit event's detail.
type Decision struct {
	Allow  bool
	Reason string
}

func allow(reason string) Decision { return Decision{Allow: true, Reason: reason} }
func deny(reason string) Decision  { return Decision{Reason: reason} }

// Decide says whether s may do a on r. It is pure (no I/O, no clock) and
// denies everything it does not explicitly allow:
//
//   - operator actions: subjects with RoleOperator, whatever the tenants;
//   - integration actions: subjects with RoleApp, and NOT RoleOperator (an
//     operator never gets a token action, even if a Subject is built with
//     both roles), acting for a tenant (s.Tenant != "") equal to r.Tenant;
//   - ActAuditRead: subjects with RoleAuditor; an unbound auditor
//     (s.Tenant == "") may read any tenant filter including "" (all), a
//     bound one only r.Tenant == s.Tenant.
func Decide(s Subject, a Action, r Resource) Decision {
	switch a {
	case ActTenantCreate, ActTenantRead, ActTenantList, ActKeyRotate, ActProviderList, ActStoreBackup,
		ActTenantDisable, ActTenantOffboard, ActFleetRead, ActRevocationList, ActWebhookDelivery:
		if !s.HasRole(RoleOperator) {
			return deny("operator role required")
		}
		return allow("operator")

	case ActIntegrationWrite, ActIntegrationRead, ActIntegrationList, ActIntegrationDelete, ActIntegrationUse,
		ActConnectCreate, ActConnectRead, ActIntegrationHealth:
		switch {
		case s.HasRole(RoleOperator):
			return deny("operators never access tokens")
		case !s.HasRole(RoleApp):
			return deny("app role required")
		case s.Tenant == "":
			return deny("no tenant context")
		case r.Tenant != s.Tenant:
			return deny("tenant mismatch")
		}
		return allow("app within its tenant")

	case ActAuditRead:
		switch {
		case !s.HasRole(RoleAuditor):
			return deny("auditor role required")
		case s.Tenant == "":
			return allow("platform-wide auditor")
		case r.Tenant != s.Tenant:
			return deny("tenant mismatch")
		}
		return allow("auditor within its tenant")
	}
	return deny("unknown action")
}
