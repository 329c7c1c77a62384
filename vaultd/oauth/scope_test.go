package oauth_test

import (
	"slices"
	"testing"

	"github.com/vaultd/vaultd/vaultd/oauth"
)

func TestScopeDrift(t *testing.T) {
	inv := []string{"contacts.read", "contacts.write", "calendar.read"}
	cases := []struct {
		name                       string
		granted, stored, inventory []string
		want                       []string
	}{
		{"omitted scope means unchanged", nil, []string{"contacts.read"}, inv, nil},
		{"empty scope means unchanged", []string{}, []string{"contacts.read"}, inv, nil},
		{"same", []string{"contacts.read"}, []string{"contacts.read"}, inv, nil},
		{"narrower", []string{"contacts.read"}, []string{"contacts.read", "contacts.write"}, inv, nil},
		{"beyond stored, in inventory", []string{"contacts.read", "calendar.read"}, []string{"contacts.read"}, inv, []string{"calendar.read"}},
		{"stored but not in inventory", []string{"admin"}, []string{"admin"}, inv, []string{"admin"}},
		{"beyond both, sorted, deduplicated", []string{"z", "contacts.read", "a", "z", "a"}, []string{"contacts.read"}, inv, []string{"a", "z"}},
		{"empty inventory: all drift", []string{"b", "a"}, []string{"a", "b"}, nil, []string{"a", "b"}},
		{"empty stored", []string{"contacts.read"}, nil, inv, []string{"contacts.read"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := oauth.ScopeDrift(c.granted, c.stored, c.inventory)
			if !slices.Equal(got, c.want) {
				t.Fatalf("ScopeDrift = %v, want %v", got, c.want)
			}
		})
	}
}
