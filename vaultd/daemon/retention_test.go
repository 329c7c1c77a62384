package daemon

import (
	"testing"
	"time"
)

// Retention runs every 5 minutes, or every retention/2 when shorter, but
// never more than once a second.
func TestRetentionInterval(t *testing.T) {
	for r, want := range map[time.Duration]time.Duration{
		400 * 24 * time.Hour: 5 * time.Minute,
		10 * time.Minute:     5 * time.Minute,
		4 * time.Minute:      2 * time.Minute,
		time.Second:          time.Second,
		time.Millisecond:     time.Second,
	} {
		if got := retentionInterval(r); got != want {
			t.Errorf("retentionInterval(%v) = %v, want %v", r, got, want)
		}
	}
}
