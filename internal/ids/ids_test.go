package ids

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{
		"acme":                   true,
		"a":                      true,
		"A.b_c-9":                true,
		"0tenant":                true,
		strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false,
		"":                       false,
		".acme":                  false,
		"-acme":                  false,
		"_acme":                  false,
		"../acme":                false,
		"ac me":                  false,
		"acme/x":                 false,
		"acme\n":                 false,
		"ácme":                   false,
		"acme\x00":               false,
	} {
		if got := Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
}
