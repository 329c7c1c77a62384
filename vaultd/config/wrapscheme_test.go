package config

import (
	"strings"
	"testing"
)

func TestWrapScheme(t *testing.T) {
	for _, v := range []string{WrapSchemeGCM, WrapSchemeKWP, WrapSchemeCBCHMAC} {
		cfg, err := Parse([]byte(edit(t, "[hsm]\n", "[hsm]\nwrap_scheme = \""+v+"\"\n")), t.TempDir(), ModeSyntax)
		if err != nil || cfg.HSM.WrapScheme != v {
			t.Fatalf("wrap_scheme %q: %+v %v", v, cfg, err)
		}
	}
	for _, bad := range []string{"AES-GCM", "gcm", ""} {
		_, err := Parse([]byte(edit(t, "[hsm]\n", "[hsm]\nwrap_scheme = \""+bad+"\"\n")), t.TempDir(), ModeSyntax)
		if err == nil || !strings.Contains(err.Error(), "hsm.wrap_scheme") {
			t.Fatalf("wrap_scheme %q: %v", bad, err)
		}
	}
}
