package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vaultd/vaultd/storage"
)

// Query limits.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
)

// Filter selects events for Query. Empty fields match everything. A
// tenant-bound auditor's filter must have TenantID forced by the caller
// (the server), never taken from the request alone.
type Filter struct {
	TenantID      string
	IntegrationID string
	Action        string
	// Actor, Outcome and RequestID match those fields exactly: who did
	// it, how it ended, and every event of one request.
	Actor     string
	Outcome   string
	RequestID string
	// Since is inclusive, Until exclusive; zero means unbounded.
	Since, Until time.Time
	// AfterSeq skips events with seq <= AfterSeq: page through a large
	// trail with after_seq = the last seq received.
	AfterSeq uint64
	// Limit caps the events returned: 0 means DefaultLimit; at most MaxLimit.
	Limit int
}

// filterKeys are the query parameters ParseFilter understands.
var filterKeys = map[string]bool{
	"tenant_id": true, "integration_id": true, "action": true,
	"actor": true, "outcome": true, "request_id": true,
	"since": true, "until": true, "limit": true, "after_seq": true,
}

// ParseFilter parses GET /v1/audit query parameters: tenant_id,
// integration_id, action, actor, outcome, request_id, since and until
// (RFC 3339), limit (1..MaxLimit), after_seq. Unknown or repeated parameters are refused rather than ignored,
// so a typo cannot silently widen a query. Errors wrap ErrBadFilter.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	for k, vs := range q {
		if !filterKeys[k] {
			return Filter{}, fmt.Errorf("%w: unknown parameter %q", ErrBadFilter, clamp(k, 32))
		}
		if len(vs) != 1 {
			return Filter{}, fmt.Errorf("%w: parameter %q given %d times", ErrBadFilter, k, len(vs))
		}
	}
	f.TenantID = q.Get("tenant_id")
	f.IntegrationID = q.Get("integration_id")
	f.Action = q.Get("action")
	f.Actor = q.Get("actor")
	f.Outcome = q.Get("outcome")
	f.RequestID = q.Get("request_id")
	var err error
	if s := q.Get("since"); s != "" {
		if f.Since, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return Filter{}, fmt.Errorf("%w: since is not an RFC 3339 time", ErrBadFilter)
		}
	}
	if s := q.Get("until"); s != "" {
		if f.Until, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return Filter{}, fmt.Errorf("%w: until is not an RFC 3339 time", ErrBadFilter)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return Filter{}, fmt.Errorf("%w: limit must be an integer from 1 to %d", ErrBadFilter, MaxLimit)
		}
		f.Limit = n
	}
	if s := q.Get("after_seq"); s != "" {
		if f.AfterSeq, err = strconv.ParseUint(s, 10, 64); err != nil {
			return Filter{}, fmt.Errorf("%w: after_seq must be a non-negative integer", ErrBadFilter)
		}
	}
	if err := f.validate(); err != nil {
		return Filter{}, err
	}
	return f, nil
}

func (f Filter) validate() error {
	if f.TenantID != "" && !storage.ValidID(f.TenantID) {
		return fmt.Errorf("%w: invalid tenant_id", ErrBadFilter)
	}
	if f.IntegrationID != "" && !storage.ValidID(f.IntegrationID) {
		return fmt.Errorf("%w: invalid integration_id", ErrBadFilter)
	}
	if f.Action != "" && !ValidAction(f.Action) {
		return fmt.Errorf("%w: invalid action", ErrBadFilter)
	}
	if f.Actor != "" && !validActorFilter(f.Actor) {
		return fmt.Errorf("%w: invalid actor (1 to %d bytes of printable UTF-8)", ErrBadFilter, maxActor)
	}
	if f.Outcome != "" && !ValidOutcome(f.Outcome) {
		return fmt.Errorf("%w: outcome must be %s, %s or %s", ErrBadFilter, OutcomeSuccess, OutcomeFailure, OutcomeDenied)
	}
	if f.RequestID != "" && !validRequestIDFilter(f.RequestID) {
		return fmt.Errorf("%w: invalid request_id (1 to %d of A-Z a-z 0-9 . _ -)", ErrBadFilter, maxID)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fmt.Errorf("%w: since must be before until", ErrBadFilter)
	}
	if f.Limit < 0 || f.Limit > MaxLimit {
		return fmt.Errorf("%w: limit must be from 1 to %d", ErrBadFilter, MaxLimit)
	}
	return nil
}

// validActorFilter: an actor as Record stores it (a certificate URI SAN
// or CN, "vaultd"): printable UTF-8 within maxActor. A longer one could
// never match, since Record cuts actors at maxActor.
func validActorFilter(a string) bool {
	return len(a) <= maxActor && utf8.ValidString(a) &&
		strings.IndexFunc(a, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0
}

// validRequestIDFilter: vaultd's request ids are hex; the filter accepts
// the id alphabet so ids from other sources stay searchable.
func validRequestIDFilter(id string) bool {
	if len(id) > maxID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// queryChunk bounds the matched lines held between store reads, and
// queryVisit the records one read transaction visits, so a slow client
// never pins a read transaction and memory stays bounded.
const (
	queryChunk = 256
	queryVisit = 8192
)

// Query streams the events matching f to fn, oldest first (seq order),
// each as one NDJSON line ending in "\n". It stops at f.Limit events, at
// the first error from fn (returned as is), or when ctx ends. It scans the
// store from f.AfterSeq: the trail has no time index, so since= on a long
// trail costs a scan (use after_seq to page). fn is never called while a
// store transaction is open.
func (l *Log) Query(ctx context.Context, f Filter, fn func(line []byte) error) error {
	if err := f.validate(); err != nil {
		return err
	}
	// Batch mode: every event recorded before the query is in the answer.
	if err := l.Flush(ctx); err != nil {
		return err
	}
	limit := f.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	after := f.AfterSeq
	sent := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var batch [][]byte
		visited := 0
		end := true
		err := l.store.ScanAudit(ctx, after, func(rec storage.AuditRecord) (bool, error) {
			after = rec.Seq
			visited++
			ok, err := f.match(rec.Data)
			if err != nil {
				return false, fmt.Errorf("audit: stored seq %d: %w", rec.Seq, err)
			}
			if ok {
				line := make([]byte, 0, len(rec.Data)+1)
				batch = append(batch, append(append(line, rec.Data...), '\n'))
			}
			if sent+len(batch) >= limit || len(batch) >= queryChunk || visited >= queryVisit {
				end = sent+len(batch) >= limit
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, line := range batch {
			if err := fn(line); err != nil {
				return err
			}
			sent++
		}
		if end || visited == 0 {
			return nil
		}
	}
}

// match decodes only the filtered fields.
func (f Filter) match(data []byte) (bool, error) {
	if f.TenantID == "" && f.IntegrationID == "" && f.Action == "" && f.Actor == "" && f.Outcome == "" &&
		f.RequestID == "" && f.Since.IsZero() && f.Until.IsZero() {
		return true, nil
	}
	var h struct {
		TenantID      string    `json:"tenant_id"`
		IntegrationID string    `json:"integration_id"`
		Action        string    `json:"action"`
		Actor         string    `json:"actor"`
		Outcome       string    `json:"outcome"`
		RequestID     string    `json:"request_id"`
		Time          Timestamp `json:"time"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return false, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch {
	case f.TenantID != "" && h.TenantID != f.TenantID,
		f.IntegrationID != "" && h.IntegrationID != f.IntegrationID,
		f.Action != "" && h.Action != f.Action,
		f.Actor != "" && h.Actor != f.Actor,
		f.Outcome != "" && h.Outcome != f.Outcome,
		f.RequestID != "" && h.RequestID != f.RequestID,
		!f.Since.IsZero() && h.Time.Before(f.Since),
		!f.Until.IsZero() && !h.Time.Before(f.Until):
		return false, nil
	}
	return true, nil
}
