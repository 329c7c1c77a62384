package config

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Duration is a time span written as a Go duration string ("30s", "5m",
// "1h30m") or in whole days ("90d"). It is a struct rather than a named
// int64 so that the TOML decoder routes every value through UnmarshalText:
// a bare integer such as `timeout = 30` is an error instead of silently
// meaning 30ns.
//
// A written zero ("0", "0s", "0d") is decoded, but only the keys whose
// documentation says "0 = off" accept it: the validator refuses it
// everywhere else (zeroDurations), because most durations are timeouts,
// margins or lifetimes where zero is a typo.
type Duration struct {
	d time.Duration
}

// NewDuration returns d as a Duration (for defaults and tests).
func NewDuration(d time.Duration) Duration { return Duration{d: d} }

// Duration returns the span as a time.Duration.
func (d Duration) Duration() time.Duration { return d.d }

// IsZero reports whether the duration is zero (never set, or "0" where a
// key allows it).
func (d Duration) IsZero() bool { return d.d == 0 }

// String formats like time.Duration.
func (d Duration) String() string { return d.d.String() }

// errBadDuration deliberately does not quote the input: every config error
// is built so that no value from the file is echoed unless it is known to be
// harmless.
var errBadDuration = errors.New("invalid duration: want a positive Go duration such as 30s, 5m or 1h, or whole days such as 90d")

// maxDurationDays keeps days*24h inside a time.Duration (about 292 years).
const maxDurationDays = 100000

// UnmarshalText parses a Go duration or "<days>d". Negative spans are
// refused; zero is decoded and left to the validator (see Duration).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return err
	}
	d.d = v
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		// Digits only: no sign, no spaces, no "1.5d".
		if days == "" || strings.TrimLeft(days, "0123456789") != "" || len(days) > 6 {
			return 0, errBadDuration
		}
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > maxDurationDays {
			return 0, errBadDuration
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, errBadDuration
	}
	return v, nil
}

// MarshalText formats whole days as "<n>d" (so a written "90d" reads
// back as such), else like time.Duration.
func (d Duration) MarshalText() ([]byte, error) {
	if d.d > 0 && d.d%(24*time.Hour) == 0 {
		return []byte(strconv.FormatInt(int64(d.d/(24*time.Hour)), 10) + "d"), nil
	}
	return []byte(d.d.String()), nil
}
