package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Sentinel errors.
var (
	// ErrInvalidEvent: the event cannot be recorded as given (bad action,
	// outcome or http_status). A programming error in the caller.
	ErrInvalidEvent = errors.New("audit: invalid event")
	// ErrMalformed: a line is not a well-formed audit event.
	ErrMalformed = errors.New("audit: malformed event")
	// ErrBadFilter: a query filter is invalid.
	ErrBadFilter = errors.New("audit: bad filter")
	// ErrClosed: the Log was closed.
	ErrClosed = errors.New("audit: log closed")
	// ErrChainFull: seq would exceed 2^53, beyond which JSON numbers (and
	// so the canonical form) lose precision.
	ErrChainFull = errors.New("audit: sequence space exhausted")
	// ErrChainBroken: the start-up verification found the chain in the
	// store broken; nothing more is appended to it.
	ErrChainBroken = errors.New("audit: the stored chain is broken; refusing to append")
)

// Actions. The first nine are the original interface's; the others are
// vaultd additions (docs/api.md lists what vaultd records). Record accepts
// any action matching actionRE so packages can add their own, but should
// use these constants.
const (
	ActionTenantCreate      = "tenant.create"
	ActionTokenStore        = "token.store"
	ActionProxyRequest      = "proxy.request" // also execute: detail "execute"
	ActionTokenRefresh      = "token.refresh" // failed refresh: outcome failure, detail = error code
	ActionTokenRevoke       = "token.revoke"
	ActionIntegrationDelete = "integration.delete"
	ActionScopeDrift        = "scope.drift"
	ActionAuthDenied        = "auth.denied"
	ActionKeyRotate         = "key.rotate"

	ActionTenantRead      = "tenant.read"
	ActionIntegrationRead = "integration.read"
	ActionIntegrationList = "integration.list"
	ActionAuditRead       = "audit.read"
	ActionServiceStart    = "service.start"
	ActionServiceStop     = "service.stop"
	ActionConfigReload    = "config.reload"
	ActionStoreBackup     = "store.backup"

	// The connect flow: a session created (connect.start), its link opened
	// in a browser (connect.open), the provider's callback accepted
	// (connect.callback) and a flow that ended without a token
	// (connect.fail: denied for a refused callback, failure for a provider
	// error or a failed exchange). A completed flow ends with token.store.
	ActionConnectStart    = "connect.start"
	ActionConnectOpen     = "connect.open"
	ActionConnectCallback = "connect.callback"
	ActionConnectFail     = "connect.fail"

	// Lifecycle: tenants disabled, enabled and offboarded, the sweeps,
	// retried revocations, dead-lettered notifications, health flags, and
	// key material created offline (vaultctl init, kek-rotate).
	ActionTenantDisable      = "tenant.disable"
	ActionTenantEnable       = "tenant.enable"
	ActionTenantOffboard     = "tenant.offboard"
	ActionIntegrationSweep   = "integration.sweep"
	ActionRevocationRetry    = "revocation.retry"
	ActionWebhookDeadLetter  = "webhook.dead_letter"
	ActionWebhookRedeliver   = "webhook.redeliver" // an operator sent a delivery again
	ActionIntegrationFlagged = "integration.flagged"
	ActionKeyCreate          = "key.create"
)

// DetailExecute is the detail of a proxy.request event made through
// POST /v1/integrations/{id}/execute.
const DetailExecute = "execute"

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Field length limits in bytes. Longer values are cut at a rune boundary
// and end in "…", so an oversized value never makes an event unrecordable.
const (
	maxID       = 128 // tenant_id, integration_id, request_id (storage.ValidID allows 128)
	maxActor    = 512 // a URI SAN can be long
	maxOnBehalf = 256
	maxHost     = 300 // host:port
	maxDetail   = 1024
)

// maxSafeSeq is 2^53: integers above it do not survive a JSON number
// round trip through IEEE doubles, which RFC 8785 uses.
const maxSafeSeq = 1 << 53

var actionRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){1,3}$`)

// Event is one audit event. The JSON form has exactly the contract fields,
// always all present: an absent value is "" (strings) or 0 (seq,
// http_status), never omitted and never null, so the canonical form, and
// with it the hash, has one shape.
type Event struct {
	Seq           uint64    `json:"seq"`
	Time          Timestamp `json:"time"`
	TenantID      string    `json:"tenant_id"`
	IntegrationID string    `json:"integration_id"`
	// Actor is the calling principal (certificate URI SAN or CN), or
	// "vaultd" for the daemon's own actions.
	Actor string `json:"actor"`
	// OnBehalfOf is the tenant-context JWT's sub, if any.
	OnBehalfOf string `json:"on_behalf_of"`
	Action     string `json:"action"`
	Outcome    string `json:"outcome"`
	RequestID  string `json:"request_id"`
	// TargetHost is the upstream host[:port] of an outbound call.
	TargetHost string `json:"target_host"`
	// HTTPStatus is the status answered (or received upstream), 0 if none.
	HTTPStatus int `json:"http_status"`
	// Detail is a short, safe explanation: an error code, a scope list, a
	// key version. Never a token, secret, body or header value.
	Detail   string `json:"detail"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// contractFields are the keys every event line has (docs/api.md, "Audit
// events").
var contractFields = []string{
	"seq", "time", "tenant_id", "integration_id", "actor", "on_behalf_of", "action",
	"outcome", "request_id", "target_host", "http_status", "detail", "prev_hash", "hash",
}

// TimeLayout is the layout of Event.Time: RFC 3339, UTC, always exactly six
// fractional digits (microseconds), so the text is fixed-width, sortable and
// round-trips exactly.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Timestamp is an event time, serialised with TimeLayout in UTC.
type Timestamp struct{ time.Time }

// NewTimestamp truncates t to microseconds in UTC, the precision the JSON
// form keeps.
func NewTimestamp(t time.Time) Timestamp {
	return Timestamp{t.UTC().Truncate(time.Microsecond)}
}

// String formats with TimeLayout.
func (t Timestamp) String() string { return t.UTC().Format(TimeLayout) }

// MarshalJSON formats with TimeLayout.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON accepts any RFC 3339 time.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	p, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	t.Time = p.UTC()
	return nil
}

// ValidAction reports whether a is syntactically an action ("noun.verb").
func ValidAction(a string) bool { return actionRE.MatchString(a) }

// ValidOutcome reports whether o is one of the three outcomes.
func ValidOutcome(o string) bool {
	return o == OutcomeSuccess || o == OutcomeFailure || o == OutcomeDenied
}

// sanitize validates the caller's part of ev and bounds its strings. It
// clears the fields Record fills.
func sanitize(ev Event) (Event, error) {
	if !ValidAction(ev.Action) {
		return Event{}, fmt.Errorf("%w: action %q", ErrInvalidEvent, clamp(ev.Action, 64))
	}
	if !ValidOutcome(ev.Outcome) {
		return Event{}, fmt.Errorf("%w: outcome %q", ErrInvalidEvent, clamp(ev.Outcome, 32))
	}
	if ev.HTTPStatus != 0 && (ev.HTTPStatus < 100 || ev.HTTPStatus > 599) {
		return Event{}, fmt.Errorf("%w: http_status %d", ErrInvalidEvent, ev.HTTPStatus)
	}
	ev.Seq, ev.Time, ev.PrevHash, ev.Hash = 0, Timestamp{}, "", ""
	ev.TenantID = clamp(ev.TenantID, maxID)
	ev.IntegrationID = clamp(ev.IntegrationID, maxID)
	ev.Actor = clamp(ev.Actor, maxActor)
	ev.OnBehalfOf = clamp(ev.OnBehalfOf, maxOnBehalf)
	ev.RequestID = clamp(ev.RequestID, maxID)
	ev.TargetHost = clamp(ev.TargetHost, maxHost)
	ev.Detail = clamp(ev.Detail, maxDetail)
	return ev, nil
}

// clamp makes s valid UTF-8 (json.Marshal would otherwise substitute
// U+FFFD behind our back, so the returned Event would differ from the
// stored one) and at most max bytes, marking a cut with "…".
func clamp(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	const ell = "…"
	cut := max - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

// marshalLine is the stored and mirrored form of ev: one line of JSON in
// contract field order, no trailing newline. HTML escaping is off so detail
// stays readable; the hash does not depend on it (JCS re-escapes).
func marshalLine(ev Event) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, fmt.Errorf("audit: encode event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ComputeHash returns the hash ev must carry: SHA-256 over ev.PrevHash, "\n"
// and the RFC 8785 canonical JSON of ev without its hash field. ev.Hash is
// ignored.
func ComputeHash(ev Event) (string, error) {
	line, err := marshalLine(ev)
	if err != nil {
		return "", err
	}
	pre, err := Canonical(line)
	if err != nil {
		return "", err
	}
	return hashOf(ev.PrevHash, pre), nil
}

func hashOf(prevHash string, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(prevHash))
	h.Write([]byte{'\n'})
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// Canonical returns the RFC 8785 canonical JSON of the event line without
// its "hash" member: the hash pre-image after prev_hash and "\n". The line
// may have any key order and whitespace; duplicate keys and invalid UTF-8
// are refused (jcs), so no two readers can see different content.
func Canonical(line []byte) ([]byte, error) {
	m, err := canonicalMap(line)
	if err != nil {
		return nil, err
	}
	delete(m, "hash")
	return canonicalOfMap(m)
}

// canonicalMap parses line (a JSON object) after canonicalisation, so
// escapes in keys are resolved and duplicates rejected before Go's decoder,
// which would silently keep the last duplicate.
func canonicalMap(line []byte) (map[string]json.RawMessage, error) {
	if line == nil {
		line = []byte{}
	}
	c, err := jcs.Transform(line)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(c) == 0 || c[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

func canonicalOfMap(m map[string]json.RawMessage) ([]byte, error) {
	// json.Marshal sorts keys by UTF-8 bytes; RFC 8785 sorts by UTF-16
	// code units, so a second Transform puts them in canonical order.
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c, err := jcs.Transform(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return c, nil
}

// parsedLine is what verification needs from one line.
type parsedLine struct {
	seq      uint64
	prevHash string
	hash     string
	computed string // hash recomputed from the content
	action   string
	detail   string
}

// parseLine checks line is a well-formed event (every contract field
// present with its JSON type, no key differing from a contract key only by
// case) and recomputes its hash. The seq is returned even when a later
// check fails, if it could be read, so errors can name it.
func parseLine(line []byte) (parsedLine, error) {
	var p parsedLine
	m, err := canonicalMap(line)
	if err != nil {
		return p, err
	}
	if raw, ok := m["seq"]; ok {
		// Canonical numbers are ES6-formatted: a safe integer is plain
		// digits, anything else (1.5, 1e+21, -1) is refused.
		s, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil || s == 0 || s > maxSafeSeq {
			return p, fmt.Errorf("%w: seq %s is not a positive integer", ErrMalformed, clamp(string(raw), 32))
		}
		p.seq = s
	}
	for k := range m {
		for _, f := range contractFields {
			if k != f && strings.EqualFold(k, f) {
				return p, fmt.Errorf("%w: key %q differs from %q only by case", ErrMalformed, clamp(k, 32), f)
			}
		}
	}
	for _, f := range contractFields {
		raw, ok := m[f]
		if !ok {
			return p, fmt.Errorf("%w: missing field %q", ErrMalformed, f)
		}
		switch f {
		case "seq":
		case "http_status":
			if v, err := strconv.Atoi(string(raw)); err != nil || v < 0 || v > 999 {
				return p, fmt.Errorf("%w: http_status is not an integer status", ErrMalformed)
			}
		default:
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return p, fmt.Errorf("%w: field %q is not a string", ErrMalformed, f)
			}
			switch f {
			case "time":
				if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
					return p, fmt.Errorf("%w: time is not RFC 3339", ErrMalformed)
				}
			case "prev_hash":
				p.prevHash = s
			case "hash":
				p.hash = s
			case "action":
				p.action = s
			case "detail":
				p.detail = s
			}
		}
	}
	if !isHash(p.prevHash) {
		return p, fmt.Errorf("%w: prev_hash is not 64 lowercase hex digits", ErrMalformed)
	}
	if !isHash(p.hash) {
		return p, fmt.Errorf("%w: hash is not 64 lowercase hex digits", ErrMalformed)
	}
	delete(m, "hash")
	pre, err := canonicalOfMap(m)
	if err != nil {
		return p, err
	}
	p.computed = hashOf(p.prevHash, pre)
	return p, nil
}

func isHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParseEvent decodes one event line (for display; it does not verify).
func ParseEvent(line []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(line, &ev); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return ev, nil
}
