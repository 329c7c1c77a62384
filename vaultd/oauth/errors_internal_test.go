package oauth

import (
	"strings"
	"testing"

	"github.com/vaultd/vaultd/internal/secret"
)

// A secret holding bytes the description filter drops ('"', '\', control
// bytes) is still caught after they are dropped: filtering must not turn an
// echoed token into a near-copy that passes the scrub.
func TestDescriptionScrubSurvivesFiltering(t *testing.T) {
	rt := `rt"abc\def-XYZ0123456789`
	cs := "cs\x01secret\"value"
	s := newScrubber(secret.NewString(rt), secret.NewString(cs))
	for _, d := range []string{
		"token " + rt + " is revoked",
		"bad client " + cs,
		`{"echo":"` + strings.ReplaceAll(rt, `"`, `\"`) + `"}`,
	} {
		got := s.sanitizeDescription(d)
		for _, leak := range []string{"abcdef-XYZ", "secretvalue", "abc", "def-XYZ0123"} {
			if strings.Contains(got, leak) {
				t.Fatalf("description %q kept %q: %q", d, leak, got)
			}
		}
		if !strings.Contains(got, secret.Redacted) {
			t.Fatalf("description %q: no redaction in %q", d, got)
		}
	}
}
