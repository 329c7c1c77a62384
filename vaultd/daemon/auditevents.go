package daemon

// The daemon's own audit events: service.start once the trail is verified
// and before the first request, service.stop after the drain and before
// the shutdown checkpoint (which signs it), config.reload with what a
// SIGHUP changed, and the key.create events vaultctl left beside the
// database while vaultd held it (audit.RecordPending).

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
)

// actorVaultd is the actor of the daemon's own events.
const actorVaultd = "vaultd"

// daemonAuditTimeout bounds one of these writes: a store that cannot
// commit in this time is failing.
const daemonAuditTimeout = 30 * time.Second

// record writes one of the daemon's events, detached from ctx's
// cancellation (a stop must still be recorded after SIGTERM).
func (d *daemon) record(ctx context.Context, action, outcome, detail string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), daemonAuditTimeout)
	defer cancel()
	_, err := d.audit.Record(ctx, audit.Event{Actor: actorVaultd, Action: action, Outcome: outcome, Detail: detail})
	if err != nil {
		d.log.Error("audit write failed", "action", action, "err", err)
	}
	return err
}

// recordPending records the key.create events vaultctl left while vaultd
// held the database. A failure is logged, not fatal: the file stays and
// the next start or SIGHUP records it.
// With postgres there is no such file: vaultctl appends to the shared
// trail directly, whatever vaultd runs.
func (d *daemon) recordPending(ctx context.Context, cfg *config.Config) {
	if cfg.Storage.Backend == config.BackendPostgres {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), daemonAuditTimeout)
	defer cancel()
	n, err := d.audit.RecordPending(ctx, audit.PendingPath(cfg.Storage.Path))
	if err != nil {
		d.log.Error("pending key events not recorded yet; kept for the next start or reload", "recorded", n, "err", err)
		return
	}
	if n > 0 {
		d.log.Info("recorded key events left by vaultctl", "events", n)
	}
}

// startDetail is service.start's detail.
func (d *daemon) startDetail() string {
	return fmt.Sprintf("version=%s kek_version=%d providers=%d", Version, d.kr.CurrentVersion(), len(d.svc.ProviderNames()))
}

// reloadRefusedDetail says why a reload was refused without quoting
// anything but a config key and line: config errors never quote a value,
// but other errors are not promised to be as careful.
func reloadRefusedDetail(err error) string {
	var ce *config.Error
	if errors.As(err, &ce) {
		if ce.Line > 0 {
			return fmt.Sprintf("refused: invalid config at line %d %s", ce.Line, ce.Key)
		}
		return strings.TrimSpace("refused: invalid config " + ce.Key)
	}
	if errors.Is(err, errReloadUnaudited) {
		return "refused: not audited"
	}
	return "refused"
}

var errReloadUnaudited = errors.New("the reload cannot be audited")

// maxReloadDetail keeps the names list under the event's detail bound
// (audit cuts at 1024 bytes); past it the detail gives counts.
const maxReloadDetail = 900

// reloadDiff says what a reload changes in the parts an auditor asks
// about: principals added and removed (by identity), principals whose
// roles or tenant changed, providers and webhooks added, removed or
// changed. Names only: a provider's client secret or a webhook's key
// counts as a change but is never shown. "no changes" when none.
func reloadDiff(old, cur *config.Config) string {
	pAdd, pDel, pMod := principalDiff(old.Principals, cur.Principals)
	prAdd, prDel, prMod := mapDiff(old.Providers, cur.Providers, providerEqual)
	whAdd, whDel, whMod := mapDiff(webhookMap(old.Webhooks), webhookMap(cur.Webhooks), webhookEqual)
	var parts []string
	section := func(name string, add, del, mod []string) {
		var items []string
		for _, a := range add {
			items = append(items, "+"+a)
		}
		for _, r := range del {
			items = append(items, "-"+r)
		}
		for _, m := range mod {
			items = append(items, "~"+m)
		}
		if len(items) > 0 {
			parts = append(parts, name+" "+strings.Join(items, ", "))
		}
	}
	section("principals", pAdd, pDel, pMod)
	section("providers", prAdd, prDel, prMod)
	section("webhooks", whAdd, whDel, whMod)
	if len(parts) == 0 {
		return "no changes"
	}
	if d := strings.Join(parts, "; "); len(d) <= maxReloadDetail {
		return d
	}
	return fmt.Sprintf("principals added=%d removed=%d changed=%d; providers added=%d removed=%d changed=%d; webhooks added=%d removed=%d changed=%d",
		len(pAdd), len(pDel), len(pMod), len(prAdd), len(prDel), len(prMod), len(whAdd), len(whDel), len(whMod))
}

// principalID names a principal as the config does: by the certificate
// identity it matches.
func principalID(p config.Principal) string {
	if p.URISAN != "" {
		return "uri_san=" + p.URISAN
	}
	return "subject_cn=" + p.SubjectCN
}

// principalRoles is a principal's roles (sorted) and tenant, as shown.
func principalRoles(p config.Principal) string {
	roles := slices.Clone(p.Roles)
	slices.Sort(roles)
	s := strings.Join(roles, ",")
	if p.Tenant != "" {
		s += " tenant=" + p.Tenant
	}
	return s
}

func principalDiff(old, cur []config.Principal) (added, removed, changed []string) {
	before := map[string]string{}
	for _, p := range old {
		before[principalID(p)] = principalRoles(p)
	}
	after := map[string]string{}
	for _, p := range cur {
		after[principalID(p)] = principalRoles(p)
	}
	for _, id := range sortedKeys(after) {
		was, ok := before[id]
		switch {
		case !ok:
			added = append(added, id+" ("+after[id]+")")
		case was != after[id]:
			changed = append(changed, id+" ("+was+" -> "+after[id]+")")
		}
	}
	for _, id := range sortedKeys(before) {
		if _, ok := after[id]; !ok {
			removed = append(removed, id)
		}
	}
	return added, removed, changed
}

func mapDiff[V any](old, cur map[string]V, equal func(a, b V) bool) (added, removed, changed []string) {
	for _, k := range sortedKeys(cur) {
		o, ok := old[k]
		switch {
		case !ok:
			added = append(added, k)
		case !equal(o, cur[k]):
			changed = append(changed, k)
		}
	}
	for _, k := range sortedKeys(old) {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	return added, removed, changed
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// providerEqual compares two provider tables as loaded: the secret with
// secret.String.Equal (never printed), the CA pools by their certificates.
func providerEqual(a, b *config.Provider) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !a.ClientSecret.Equal(b.ClientSecret) || !a.RootCAs.Equal(b.RootCAs) {
		return false
	}
	ac, bc := *a, *b
	ac.ClientSecret, bc.ClientSecret = secret.String{}, secret.String{}
	ac.RootCAs, bc.RootCAs = nil, nil
	return reflect.DeepEqual(ac, bc)
}

func webhookMap(ws []*config.Webhook) map[string]*config.Webhook {
	m := make(map[string]*config.Webhook, len(ws))
	for _, w := range ws {
		m[w.Key] = w
	}
	return m
}

func webhookEqual(a, b *config.Webhook) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !secretBytesEqual(a.Secret, b.Secret) || !a.RootCAs.Equal(b.RootCAs) {
		return false
	}
	ac, bc := *a, *b
	ac.Secret, bc.Secret = secret.Bytes{}, secret.Bytes{}
	ac.RootCAs, bc.RootCAs = nil, nil
	return reflect.DeepEqual(ac, bc)
}

func secretBytesEqual(a, b secret.Bytes) bool {
	return subtle.ConstantTimeCompare(a.Reveal(), b.Reveal()) == 1
}
