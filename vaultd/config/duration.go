package config

import (
	"errors"
	"time"
)

// Duration is a positive time span written as a Go duration string
// ("30s", "5m", "1h30m"). It is a struct rather than a named int64 so that
// the TOML decoder routes every value through UnmarshalText: a bare integer
// such as `timeout = 30` is an error instead of silently meaning 30ns.
type Duration struct {
	d time.Duration
}

// NewDuration returns d as a Duration (for defaults and tests).
func NewDuration(d time.Duration) Duration { return Duration{d: d} }

// Duration returns the span as a time.Duration.
func (d Duration) Duration() time.Duration { return d.d }

// IsZero reports whether the duration was never set.
func (d Duration) IsZero() bool { return d.d == 0 }

// String formats like time.Duration.
func (d Duration) String() string { return d.d.String() }

// errBadDuration deliberately does not quote the input: every config error
// is built so that no value from the file is echoed unless it is known to be
// harmless.
var errBadDuration = errors.New("invalid duration: want a positive Go duration such as 30s, 5m or 1h")

// UnmarshalText parses a Go duration; zero and negative spans are refused
// because every duration in the config is a timeout, margin or lifetime.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v <= 0 {
		return errBadDuration
	}
	d.d = v
	return nil
}

// MarshalText formats like time.Duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.d.String()), nil }
