package config

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Retention is how long audit events stay in the database ([audit]
// retention): a Go duration ("720h"), whole days ("400d"), or "0" for
// keep everything (the zero value).
type Retention struct {
	d time.Duration
}

// NewRetention returns d as a Retention (for tests).
func NewRetention(d time.Duration) Retention { return Retention{d: d} }

// Duration returns the span; 0 means keep everything.
func (r Retention) Duration() time.Duration { return r.d }

// maxRetentionDays keeps days*24h inside a time.Duration (about 292 years).
const maxRetentionDays = 100000

// errBadRetention, like errBadDuration, does not echo the value.
var errBadRetention = errors.New(`invalid retention: want "0" (keep all), whole days such as "400d", or a Go duration such as "720h"`)

// UnmarshalText parses "0", "<days>d" or a positive Go duration.
func (r *Retention) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "0" {
		r.d = 0
		return nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n == 0 || n > maxRetentionDays || strings.TrimLeft(days, "0123456789") != "" {
			return errBadRetention
		}
		r.d = time.Duration(n) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return errBadRetention
	}
	r.d = v
	return nil
}

// MarshalText formats whole days as "<n>d", else like time.Duration.
func (r Retention) MarshalText() ([]byte, error) {
	if r.d == 0 {
		return []byte("0"), nil
	}
	if r.d%(24*time.Hour) == 0 {
		return []byte(strconv.FormatInt(int64(r.d/(24*time.Hour)), 10) + "d"), nil
	}
	return []byte(r.d.String()), nil
}
