// Package settings is the parsed form of the vaultd config file, kept
// apart from the file itself (vaultd/config: schema, defaults, paths).
// Some values in the file are words of another package's vocabulary: the
// [harden] modes and extra_syscalls (harden), principal roles (policy) and
// a provider's auth_style (oauth). config keeps them as written; here each
// is read by the package that owns its meaning, and a refusal becomes a
// config error naming the key and its line (config.KeyError), exactly as
// if config.Load had found it. vaultd reads them at start-up and on
// reload; vaultctl checks them too, so it refuses what vaultd would.
//
// Providers merges each [providers.NAME] table with the built-in catalog
// template it names (vaultd/catalog): the template fills what the file
// leaves out, and the file's keys win.
package settings

import (
	"errors"
	"fmt"

	"github.com/vaultd/vaultd/harden"
	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// Check reads every value of cfg that another package owns and returns
// the first refusal (a *config.Error), or nil.
func Check(cfg *config.Config) error {
	if _, err := Harden(cfg); err != nil {
		return err
	}
	if _, err := Principals(cfg); err != nil {
		return err
	}
	if _, err := Providers(cfg); err != nil {
		return err
	}
	return nil
}

// Harden maps [harden] to the options of process hardening: the
// modes and the extra syscalls (checked against this machine's syscall
// table now, so a typo stops start-up with its line number).
func Harden(cfg *config.Config) (harden.Options, error) {
	h := cfg.Harden
	mlock, err := harden.ParseMlock(h.Mlock)
	if err != nil {
		return harden.Options{}, cfg.KeyError("harden.mlock", err)
	}
	seccomp, err := harden.ParseSeccomp(h.Seccomp)
	if err != nil {
		return harden.Options{}, cfg.KeyError("harden.seccomp", err)
	}
	if i, err := harden.CheckSyscalls(h.ExtraSyscalls); err != nil {
		return harden.Options{}, cfg.KeyError(fmt.Sprintf("harden.extra_syscalls[%d]", i), err)
	}
	return harden.Options{
		Mlock:         mlock,
		Seccomp:       seccomp,
		ExtraSyscalls: h.ExtraSyscalls,
		NoNewPrivs:    h.NoNewPrivs,
		Dumpable:      h.Dumpable,
	}, nil
}

// Principals maps [[principals]] to policy's principals: the roles are read
// by policy.ParseRoles. The two rules that tie roles to the file's other
// tables are checked here, so that a refusal names the tenant key: an
// operator has no tenant (policy.NewDirectory refuses that too), and an
// app principal without one needs [tenant_context].
func Principals(cfg *config.Config) ([]policy.Principal, error) {
	ps := make([]policy.Principal, 0, len(cfg.Principals))
	for i, p := range cfg.Principals {
		key := fmt.Sprintf("principals[%d]", i)
		roles, j, err := policy.ParseRoles(p.Roles)
		if err != nil {
			rkey := key + ".roles"
			if j >= 0 {
				rkey = fmt.Sprintf("%s[%d]", rkey, j)
			}
			return nil, cfg.KeyError(rkey, err)
		}
		pp := policy.Principal{URISAN: p.URISAN, SubjectCN: p.SubjectCN, Roles: roles, Tenant: p.Tenant}
		switch {
		case p.Tenant != "" && pp.HasRole(policy.RoleOperator):
			return nil, cfg.KeyError(key+".tenant", errors.New("operator principals are platform-wide and cannot have a tenant"))
		case p.Tenant == "" && pp.HasRole(policy.RoleApp) && cfg.TenantContext == nil:
			return nil, cfg.KeyError(key+".tenant", errors.New(`an app principal with tenant "" takes its tenant from a tenant-context JWT, which needs [tenant_context]`))
		}
		ps = append(ps, pp)
	}
	return ps, nil
}

// AuthStyle reads [providers.NAME] auth_style with oauth.ParseAuthStyle.
func AuthStyle(cfg *config.Config, name string) (string, error) {
	style, err := oauth.ParseAuthStyle(cfg.Providers[name].AuthStyle)
	if err != nil {
		return "", cfg.KeyError("providers."+name+".auth_style", err)
	}
	return style, nil
}
