package config

import "time"

// Defaults of [lifecycle].
const (
	DefaultReauthPurgeAfter       = 30 * 24 * time.Hour
	DefaultRevocationRetryFor     = 7 * 24 * time.Hour
	DefaultRevocationRetryInitial = 30 * time.Second
	DefaultScoreThreshold         = 60
	DefaultSweepInterval          = time.Hour
	// MaxRevocationRetryDelay is where the doubling of a failed
	// revocation's retry delay stops.
	MaxRevocationRetryDelay = time.Hour
)

// LifecycleConfig is [lifecycle]: what vaultd does on its own with
// integrations nobody uses, integrations stuck waiting for a
// reauthorization, and revocations a provider did not confirm. The table is
// optional; every key has a default.
type LifecycleConfig struct {
	// IdleDisconnectAfter: disconnect (revoke and delete) integrations
	// unused this long; 0 = off (the default).
	IdleDisconnectAfter Duration `toml:"idle_disconnect_after" zero:"off"`
	// ReauthPurgeAfter: delete integrations that have been in
	// reauthorization_required this long; 0 = off.
	ReauthPurgeAfter Duration `toml:"reauth_purge_after" zero:"off"`
	// RevocationRetryFor: how long a failed revocation is retried before
	// its sealed token is dropped.
	RevocationRetryFor Duration `toml:"revocation_retry_for"`
	// RevocationRetryInitial: the first retry delay of a failed revocation,
	// doubling up to MaxRevocationRetryDelay.
	RevocationRetryInitial Duration `toml:"revocation_retry_initial"`
	// ScoreThreshold: an integration whose health score is below it is
	// flagged (0..100).
	ScoreThreshold int `toml:"score_threshold"`
	// SweepInterval: how often the lifecycle sweep runs.
	SweepInterval Duration `toml:"sweep_interval"`
}

func defaultLifecycle() LifecycleConfig {
	return LifecycleConfig{
		ReauthPurgeAfter:       NewDuration(DefaultReauthPurgeAfter),
		RevocationRetryFor:     NewDuration(DefaultRevocationRetryFor),
		RevocationRetryInitial: NewDuration(DefaultRevocationRetryInitial),
		ScoreThreshold:         DefaultScoreThreshold,
		SweepInterval:          NewDuration(DefaultSweepInterval),
	}
}

// The floors are one second so that tests of the real binary can run a
// sweep or a retry in seconds; the ceilings catch an extra zero.
const (
	maxLifecycleAge    = 10 * 365 * 24 * time.Hour
	maxRevocationRetry = 365 * 24 * time.Hour
	maxSweepInterval   = 24 * time.Hour
)

func (v *validator) lifecycle() error {
	l := &v.cfg.Lifecycle
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"lifecycle.idle_disconnect_after", l.IdleDisconnectAfter.Duration()},
		{"lifecycle.reauth_purge_after", l.ReauthPurgeAfter.Duration()},
	} {
		if f.d != 0 && (f.d < time.Second || f.d > maxLifecycleAge) {
			return v.fail(f.key, "must be \"0\" (off) or between 1s and 3650d")
		}
	}
	if d := l.RevocationRetryFor.Duration(); d < time.Second || d > maxRevocationRetry {
		return v.fail("lifecycle.revocation_retry_for", "must be between 1s and 365d")
	}
	if d := l.RevocationRetryInitial.Duration(); d < time.Second || d > MaxRevocationRetryDelay {
		return v.fail("lifecycle.revocation_retry_initial", "must be between 1s and 1h")
	}
	if l.RevocationRetryInitial.Duration() > l.RevocationRetryFor.Duration() {
		return v.fail("lifecycle.revocation_retry_initial", "must not exceed lifecycle.revocation_retry_for")
	}
	if l.ScoreThreshold < 0 || l.ScoreThreshold > 100 {
		return v.fail("lifecycle.score_threshold", "must be between 0 and 100")
	}
	if d := l.SweepInterval.Duration(); d < time.Second || d > maxSweepInterval {
		return v.fail("lifecycle.sweep_interval", "must be between 1s and 24h")
	}
	return nil
}
