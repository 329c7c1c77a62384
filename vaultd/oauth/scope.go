package oauth

import "slices"

// ScopeDrift returns the granted scopes that exceed either the stored grant
// or the provider's scope inventory (its config "scopes"), sorted and deduplicated.
// An empty granted (the answer omitted scope) means the grant is unchanged
// (RFC 6749 §5.1), so there is no drift. An empty inventory declares no
// scopes at all, so every granted scope is drift.
func ScopeDrift(granted, stored, inventory []string) []string {
	if len(granted) == 0 {
		return nil
	}
	storedSet := setOf(stored)
	inventorySet := setOf(inventory)
	var drift []string
	for _, g := range granted {
		if !storedSet[g] || !inventorySet[g] {
			drift = append(drift, g)
		}
	}
	slices.Sort(drift)
	return slices.Compact(drift)
}

func setOf(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}
