package config

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/ids"
	"github.com/vaultd/vaultd/internal/secret"
)

// Webhook is one [[webhooks]] entry: where vaultd sends notifications of
// integration and tenant state changes (Standard Webhooks: signed with the
// HMAC key in secret_file). Endpoints come only from this file, never from
// the API.
type Webhook struct {
	URL        string `toml:"url"`
	SecretFile string `toml:"secret_file"`
	// Tenants limits the entry to these tenants; empty = every tenant.
	Tenants []string `toml:"tenants"`
	// Events are patterns over EventTypes: a type, "<prefix>.*" or "*".
	// Default ["*"].
	Events []string `toml:"events"`
	// RetrySchedule: the delays before each retry; after the last one
	// fails, the delivery is dead-lettered.
	RetrySchedule []Duration `toml:"retry_schedule"`
	CAFile        string     `toml:"ca_file"`

	// Key is a stable short id of this entry: the first 12 hex digits of
	// SHA-256(url). Deliveries name their webhook by it.
	Key string `toml:"-"`
	// Endpoint is URL parsed.
	Endpoint *url.URL `toml:"-"`
	// Secret is the decoded HMAC key, read from SecretFile in ModeDaemon
	// (zero otherwise).
	Secret secret.Bytes `toml:"-"`
	// RootCAs holds CAFile's certificates (only those), loaded in
	// ModeDaemon; nil means "use the system roots".
	RootCAs *x509.CertPool `toml:"-"`
}

// Notification types, the words of Webhook.Events.
const (
	EventIntegrationConnected               = "integration.connected"
	EventIntegrationDegraded                = "integration.degraded"
	EventIntegrationReauthorizationRequired = "integration.reauthorization_required"
	EventIntegrationRecovered               = "integration.recovered"
	EventIntegrationDisconnected            = "integration.disconnected"
	EventIntegrationScopeDrift              = "integration.scope_drift"
	EventIntegrationFlagged                 = "integration.flagged"
	EventTenantDisabled                     = "tenant.disabled"
	EventTenantOffboarded                   = "tenant.offboarded"
	EventKeyRotated                         = "key.rotated"
)

// EventTypes returns every notification type, sorted.
func EventTypes() []string {
	return []string{
		EventIntegrationConnected, EventIntegrationDegraded, EventIntegrationDisconnected,
		EventIntegrationFlagged, EventIntegrationReauthorizationRequired, EventIntegrationRecovered,
		EventIntegrationScopeDrift, EventKeyRotated, EventTenantDisabled, EventTenantOffboarded,
	}
}

// Defaults and bounds of [[webhooks]].
const (
	MaxWebhooks         = 16
	maxWebhookEvents    = 32
	maxWebhookTenants   = 1024
	maxRetrySchedule    = 20
	minRetryDelay       = time.Second
	maxRetryDelay       = 24 * time.Hour
	webhookSecretPrefix = "whsec_"
	minWebhookKeyBytes  = 24
	maxWebhookKeyBytes  = 64
	webhookKeyHexLen    = 12
)

// DefaultRetrySchedule returns the default [[webhooks]] retry_schedule.
func DefaultRetrySchedule() []Duration {
	return []Duration{
		NewDuration(5 * time.Second), NewDuration(5 * time.Minute), NewDuration(30 * time.Minute),
		NewDuration(2 * time.Hour), NewDuration(5 * time.Hour), NewDuration(10 * time.Hour),
	}
}

// WebhookKey is the Key of a webhook with this url.
func WebhookKey(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(sum[:])[:webhookKeyHexLen]
}

// MatchEvent reports whether pattern (as validated in Webhook.Events)
// matches the notification type typ.
func MatchEvent(pattern, typ string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(typ, prefix)
	}
	return pattern == typ
}

// Wants reports whether the entry takes a notification of type typ about
// tenant ("" for events of no tenant, such as key.rotated: those go to
// every entry whose events match).
func (w *Webhook) Wants(typ, tenant string) bool {
	if tenant != "" && len(w.Tenants) > 0 && !slices.Contains(w.Tenants, tenant) {
		return false
	}
	for _, p := range w.Events {
		if MatchEvent(p, typ) {
			return true
		}
	}
	return false
}

// Webhook secret-file errors: what is wrong, never what is in the file.
var (
	ErrWebhookSecretPrefix = errors.New(`webhook secret must start with "whsec_"`)
	ErrWebhookSecretBase64 = errors.New(`webhook secret after "whsec_" is not standard base64`)
	ErrWebhookSecretLength = fmt.Errorf("webhook secret must decode to %d to %d bytes", minWebhookKeyBytes, maxWebhookKeyBytes)
)

// ParseWebhookSecret decodes "whsec_" + base64 (standard alphabet, padded
// or not) into the HMAC key. Errors never quote the input.
func ParseWebhookSecret(s string) (secret.Bytes, error) {
	rest, ok := strings.CutPrefix(s, webhookSecretPrefix)
	if !ok {
		return secret.Bytes{}, ErrWebhookSecretPrefix
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(rest, "=") {
		enc = base64.RawStdEncoding
	}
	if len(rest) > base64.StdEncoding.EncodedLen(maxWebhookKeyBytes) {
		return secret.Bytes{}, ErrWebhookSecretLength
	}
	key, err := enc.DecodeString(rest)
	if err != nil {
		secret.Zero(key)
		return secret.Bytes{}, ErrWebhookSecretBase64
	}
	if len(key) < minWebhookKeyBytes || len(key) > maxWebhookKeyBytes {
		secret.Zero(key)
		return secret.Bytes{}, ErrWebhookSecretLength
	}
	return secret.NewBytes(key), nil
}

func (v *validator) webhooks() error {
	if len(v.cfg.Webhooks) > MaxWebhooks {
		return v.fail(fmt.Sprintf("webhooks[%d]", MaxWebhooks), "at most %d webhooks", MaxWebhooks)
	}
	keys := map[string]int{}
	for i, w := range v.cfg.Webhooks {
		key := fmt.Sprintf("webhooks[%d]", i)
		if w == nil {
			return v.fail(key, "empty webhook")
		}
		if err := v.webhook(key, w); err != nil {
			return err
		}
		if j, dup := keys[w.Key]; dup {
			return v.fail(key+".url", "same url as webhooks[%d]", j)
		}
		keys[w.Key] = i
	}
	return nil
}

func (v *validator) webhook(key string, w *Webhook) error {
	if w.URL != "" {
		// Checked before endpoint, whose message points at client_secret_file.
		if u, err := url.Parse(w.URL); err == nil && u.User != nil {
			return v.fail(key+".url", "must not contain user info (the key belongs in secret_file)")
		}
	}
	u, err := v.endpoint(key+".url", w.URL, true, true)
	if err != nil {
		return err
	}
	w.Endpoint, w.Key = u, WebhookKey(w.URL)
	if err := v.path(key+".secret_file", &w.SecretFile, true); err != nil {
		return err
	}
	if len(w.Tenants) > maxWebhookTenants {
		return v.fail(key+".tenants", "at most %d tenants (omit the key for every tenant)", maxWebhookTenants)
	}
	seen := map[string]bool{}
	for j, t := range w.Tenants {
		k := fmt.Sprintf("%s.tenants[%d]", key, j)
		if !ids.Valid(t) {
			return v.fail(k, "not a valid tenant id (1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric)")
		}
		if seen[t] {
			return v.fail(k, "listed twice")
		}
		seen[t] = true
	}
	if err := v.webhookEvents(key, w); err != nil {
		return err
	}
	if err := v.retrySchedule(key, w); err != nil {
		return err
	}
	if v.ix.has(key+".ca_file") && w.CAFile == "" {
		return v.fail(key+".ca_file", "must not be empty (omit the key to use the system roots)")
	}
	if err := v.path(key+".ca_file", &w.CAFile, false); err != nil {
		return err
	}
	if v.mode != ModeDaemon {
		return nil
	}
	raw, err := readSecretFile(w.SecretFile, maxSecretBytes)
	if err != nil {
		return v.failErr(key+".secret_file", "cannot use webhook secret file", err)
	}
	if w.Secret, err = ParseWebhookSecret(raw.Reveal()); err != nil {
		return v.failErr(key+".secret_file", "cannot use webhook secret file", fmt.Errorf("%s: %w", w.SecretFile, err))
	}
	if w.CAFile != "" {
		if w.RootCAs, err = loadRoots(w.CAFile); err != nil {
			return v.failErr(key+".ca_file", "cannot use CA file", err)
		}
	}
	return nil
}

func (v *validator) webhookEvents(key string, w *Webhook) error {
	if w.Events == nil && !v.ix.has(key+".events") {
		w.Events = []string{"*"}
		return nil
	}
	if len(w.Events) == 0 {
		return v.fail(key+".events", `must not be empty (omit the key, or write ["*"], for every event)`)
	}
	if len(w.Events) > maxWebhookEvents {
		return v.fail(key+".events", "at most %d patterns", maxWebhookEvents)
	}
	types := EventTypes()
	seen := map[string]bool{}
	for j, p := range w.Events {
		k := fmt.Sprintf("%s.events[%d]", key, j)
		if !validEventPattern(p, types) {
			return v.fail(k, "unknown event type %s: want one of %s, a prefix such as integration.*, or *",
				quote(p), strings.Join(types, ", "))
		}
		if seen[p] {
			return v.fail(k, "listed twice")
		}
		seen[p] = true
	}
	return nil
}

// validEventPattern: "*", a known type, or "<prefix>.*" where some known
// type starts with "<prefix>.".
func validEventPattern(p string, types []string) bool {
	if p == "*" || slices.Contains(types, p) {
		return true
	}
	prefix, ok := strings.CutSuffix(p, ".*")
	if !ok || prefix == "" || strings.ContainsAny(prefix, "*") {
		return false
	}
	return slices.ContainsFunc(types, func(t string) bool { return strings.HasPrefix(t, prefix+".") })
}

func (v *validator) retrySchedule(key string, w *Webhook) error {
	k := key + ".retry_schedule"
	if w.RetrySchedule == nil && !v.ix.has(k) {
		w.RetrySchedule = DefaultRetrySchedule()
		return nil
	}
	if len(w.RetrySchedule) == 0 || len(w.RetrySchedule) > maxRetrySchedule {
		return v.fail(k, "must list 1 to %d delays", maxRetrySchedule)
	}
	for j, d := range w.RetrySchedule {
		if d.Duration() < minRetryDelay || d.Duration() > maxRetryDelay {
			return v.fail(fmt.Sprintf("%s[%d]", k, j), "must be between 1s and 24h")
		}
	}
	return nil
}
