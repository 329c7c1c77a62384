package notify

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/vaultd/vaultd/vaultd/audit"
)

// Notification types: the "type" of a body, and what [[webhooks]] events
// patterns match.
const (
	TypeIntegrationConnected               = "integration.connected"
	TypeIntegrationDegraded                = "integration.degraded"
	TypeIntegrationReauthorizationRequired = "integration.reauthorization_required"
	TypeIntegrationRecovered               = "integration.recovered"
	TypeIntegrationDisconnected            = "integration.disconnected"
	TypeIntegrationScopeDrift              = "integration.scope_drift"
	TypeIntegrationFlagged                 = "integration.flagged"
	TypeTenantDisabled                     = "tenant.disabled"
	TypeTenantOffboarded                   = "tenant.offboarded"
	TypeKeyRotated                         = "key.rotated"
)

// Types lists every notification type, in documentation order.
var Types = []string{
	TypeIntegrationConnected, TypeIntegrationDegraded, TypeIntegrationReauthorizationRequired,
	TypeIntegrationRecovered, TypeIntegrationDisconnected, TypeIntegrationScopeDrift,
	TypeIntegrationFlagged, TypeTenantDisabled, TypeTenantOffboarded, TypeKeyRotated,
}

// Body is a notification's JSON body. It is built field by field from
// what an audit event means, never by copying its detail: the detail is
// free text, and a receiver is outside the vault.
type Body struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"` // the audit event's time, RFC 3339 (UTC)
	Data      Data   `json:"data"`
}

// Data is the body's "data": every field always present ("" when it does
// not apply).
type Data struct {
	TenantID      string `json:"tenant_id"`
	IntegrationID string `json:"integration_id"`
	Provider      string `json:"provider"`
	// Status is the state the type implies: the integration's
	// (active, degraded, reauthorization_required, disconnected, flagged)
	// or the tenant's (disabled, offboarded); "" for key.rotated.
	Status string `json:"status"`
	// Reason is a short fixed phrase, or an error code of at most 48
	// characters of [a-z0-9_] (a refresh's cause).
	Reason string `json:"reason"`
}

// Marshal encodes b in field order, without HTML escaping.
func (b Body) Marshal() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(b) // only strings: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// What a provider name or an error code must look like to be carried
// into a body; anything else is dropped.
var (
	safeCode     = regexp.MustCompile(`^[a-z0-9_]{1,48}$`)
	safeProvider = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	scoreRE      = regexp.MustCompile(`(?:^|[ ;,])score=([0-9]{1,3})(?:$|[ ;,])`)
)

// Map turns an audit event into the notification it means, if any
// (docs: the type mapping). The body's provider comes from a
// "provider=NAME" word of the detail when there is one; the caller may
// fill it otherwise (Dispatcher looks the integration up).
func Map(ev audit.Event) (Body, bool) {
	d := Data{TenantID: safeID(ev.TenantID), IntegrationID: safeID(ev.IntegrationID), Provider: providerOf(ev.Detail)}
	success := ev.Outcome == audit.OutcomeSuccess
	var typ string
	switch ev.Action {
	case audit.ActionTokenStore:
		if !success {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeIntegrationConnected, "active", "token stored"
		if strings.Contains(ev.Detail, "connect_session=") {
			d.Reason = "connect flow completed"
		}
	case audit.ActionTokenRefresh:
		switch {
		case ev.Outcome == audit.OutcomeFailure && strings.HasPrefix(ev.Detail, "degraded"):
			typ, d.Status, d.Reason = TypeIntegrationDegraded, "degraded", codeAfter(ev.Detail, "degraded", "refresh failed")
		case ev.Outcome == audit.OutcomeFailure && strings.HasPrefix(ev.Detail, "reauthorization_required"):
			typ, d.Status, d.Reason = TypeIntegrationReauthorizationRequired, "reauthorization_required",
				codeAfter(ev.Detail, "reauthorization_required", "refresh refused")
		case success && hasWord(ev.Detail, "recovered"):
			typ, d.Status, d.Reason = TypeIntegrationRecovered, "active", "refresh succeeded"
		default:
			return Body{}, false
		}
	case audit.ActionIntegrationDelete:
		if !success {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeIntegrationDisconnected, "disconnected", disconnectReason(ev.Detail)
	case audit.ActionScopeDrift:
		if ev.Outcome == audit.OutcomeDenied {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeIntegrationScopeDrift, "active", "unexpected scopes granted"
	case audit.ActionIntegrationFlagged:
		if ev.Outcome == audit.OutcomeDenied {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeIntegrationFlagged, "flagged", "health score below threshold"
		if m := scoreRE.FindStringSubmatch(ev.Detail); m != nil {
			d.Reason += " (score " + m[1] + ")"
		}
	case audit.ActionTenantDisable:
		if !success {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeTenantDisabled, "disabled", "disabled by an operator"
	case audit.ActionTenantOffboard:
		if !success {
			return Body{}, false
		}
		typ, d.Status, d.Reason = TypeTenantOffboarded, "offboarded", "tenant offboarded"
	case audit.ActionKeyRotate:
		if !success {
			return Body{}, false
		}
		typ = TypeKeyRotated
		switch {
		case strings.HasPrefix(ev.Detail, "rewrap"):
			if strings.HasPrefix(ev.Detail, "rewrap deks=0 ") && !strings.Contains(ev.Detail, "tenant key deks=") {
				return Body{}, false // a check that changed nothing
			}
			d.Reason = "data keys rewrapped under the current key encryption key"
		case strings.HasPrefix(ev.Detail, "tenant key"):
			d.Reason = "data keys wrapped under the tenant key"
		default:
			d.Reason = "data key rotated"
		}
	default:
		return Body{}, false
	}
	return Body{Type: typ, Timestamp: ev.Time.UTC().Format(audit.TimeLayout), Data: d}, true
}

// safeID keeps an id only if it is one (audit clamps, it does not check).
func safeID(s string) string {
	if idRE.MatchString(s) {
		return s
	}
	return ""
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// providerOf finds "provider=NAME" among the detail's words.
func providerOf(detail string) string {
	for _, w := range strings.FieldsFunc(detail, func(r rune) bool { return r == ' ' || r == ';' || r == ',' }) {
		if v, ok := strings.CutPrefix(w, "provider="); ok && safeProvider.MatchString(v) {
			return v
		}
	}
	return ""
}

// codeAfter reads "prefix: code" and returns the code when it looks like
// one (an OAuth error code, "timeout", "http_503"), else fallback.
func codeAfter(detail, prefix, fallback string) string {
	rest := strings.TrimPrefix(detail, prefix)
	rest = strings.TrimSpace(strings.TrimPrefix(rest, ":"))
	if safeCode.MatchString(rest) {
		return rest
	}
	return fallback
}

// hasWord reports whether w is one of detail's "; "-separated notes.
func hasWord(detail, w string) bool {
	for _, n := range strings.Split(detail, ";") {
		if strings.TrimSpace(n) == w {
			return true
		}
	}
	return false
}

// Why the lifecycle sweep disconnected an integration: its
// integration.sweep event (detail starting with the reason word) comes
// right before the integration.delete (SweepReason).
const (
	ReasonIdle   = "idle too long"
	ReasonReauth = "reauthorization not completed in time"
)

// SweepReason reads an integration.sweep event: the reason phrase of the
// disconnect that follows it, "" if it is none of the sweep's.
func SweepReason(ev audit.Event) string {
	if ev.Action != audit.ActionIntegrationSweep || ev.Outcome != audit.OutcomeSuccess {
		return ""
	}
	switch {
	case strings.HasPrefix(ev.Detail, "idle_disconnect"):
		return ReasonIdle
	case strings.HasPrefix(ev.Detail, "reauth_purge"):
		return ReasonReauth
	}
	return ""
}

// disconnectReason says how an integration went, from the words of its
// integration.delete event.
func disconnectReason(detail string) string {
	switch {
	case strings.Contains(detail, "revoked_at_provider=true"):
		return "deleted; revoked at the provider"
	case strings.Contains(detail, "revoked_at_provider=false"):
		return "deleted; revocation pending"
	}
	return "deleted"
}

// Match reports whether typ is selected by patterns: "*" is every type,
// "prefix.*" every type starting with "prefix.", anything else is exact.
// No pattern selects every type.
func Match(patterns []string, typ string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, ".*"):
			if strings.HasPrefix(typ, p[:len(p)-1]) {
				return true
			}
		case p == typ:
			return true
		}
	}
	return false
}
