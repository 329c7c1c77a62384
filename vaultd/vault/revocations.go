package vault

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// The revocation queue. A token the provider did not confirm revoked (at
// disconnect, offboarding or a sweep) is not forgotten: it is kept, sealed
// under the HSM's KEK directly (not the tenant's DEK, so it survives the
// tenant's crypto-shred), together with what revoking it needs (the
// revocation endpoint and the client that got the token), and retried
// with exponential backoff until the provider confirms or
// Lifecycle.RevocationRetryFor has passed since it was queued; then it is
// dropped, and that is audited too. Nothing else ever opens a queued token.

// Defaults of Lifecycle.
const (
	DefaultRevocationRetryFor     = 7 * 24 * time.Hour
	DefaultRevocationRetryInitial = 30 * time.Second
	// maxRevocationBackoff caps the doubling delay between two retries.
	maxRevocationBackoff = time.Hour
	// revocationsPerRound bounds one RetryRevocations call: a provider
	// that is down for everyone must not make a round last for hours.
	revocationsPerRound = 100
)

// ErrRevocationQueue: the revocation queue cannot be used (no
// RevocationStore or no Keyring configured).
var ErrRevocationQueue = errors.New("vault: revocation queue unavailable")

// revocationPayload is the plaintext inside Revocation.Sealed: the token
// and everything needed to revoke it without the integration (which is
// gone by then) or the tenant's keys (which may be shredded).
type revocationPayload struct {
	Tenant        string `json:"tenant"`
	Integration   string `json:"integration"`
	Hint          string `json:"hint"`
	Token         string `json:"token"`
	RevocationURL string `json:"revocation_url"`
	ClientID      string `json:"client_id"`
	ClientSecret  string `json:"client_secret,omitempty"`
	AuthStyle     string `json:"auth_style,omitempty"`
}

// sealedMagic starts Revocation.Sealed: "VRV", format 1, then
// u8 len(nonce) | nonce | KEK ciphertext (with its GCM tag).
var sealedMagic = []byte{'V', 'R', 'V', 1}

// encodeSealed is w as Revocation.Sealed (its KEK version goes in the
// record's KEKVersion).
func encodeSealed(w hsm.WrappedKey) ([]byte, error) {
	if len(w.Nonce) == 0 || len(w.Nonce) > 255 || len(w.Ciphertext) == 0 {
		return nil, fmt.Errorf("%w: wrapped revocation has an unusable shape", ErrUnavailable)
	}
	out := make([]byte, 0, len(sealedMagic)+1+len(w.Nonce)+len(w.Ciphertext))
	out = append(out, sealedMagic...)
	out = append(out, byte(len(w.Nonce)))
	out = append(out, w.Nonce...)
	return append(out, w.Ciphertext...), nil
}

// errSealedFormat: a Revocation.Sealed that is not encodeSealed's.
var errSealedFormat = errors.New("vault: malformed sealed revocation")

// decodeSealed parses encodeSealed's form back into a wrapped key of
// KEK version kek. The slices alias sealed.
func decodeSealed(sealed []byte, kek uint32) (hsm.WrappedKey, error) {
	if len(sealed) < len(sealedMagic)+1 || string(sealed[:len(sealedMagic)]) != string(sealedMagic) {
		return hsm.WrappedKey{}, errSealedFormat
	}
	rest := sealed[len(sealedMagic):]
	n := int(rest[0])
	rest = rest[1:]
	if n == 0 || len(rest) <= n {
		return hsm.WrappedKey{}, errSealedFormat
	}
	return hsm.WrappedKey{KEKVersion: kek, Nonce: rest[:n], Ciphertext: rest[n:]}, nil
}

// revocationAAD binds a sealed revocation to its record: id, tenant,
// integration and hint, each length-prefixed (so the encoding is
// injective). A blob moved to another record does not open.
func revocationAAD(id, tenant, integration, hint string) []byte {
	b := []byte("vaultd/revocation/v1\x00")
	for _, s := range []string{id, tenant, integration, hint} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// newRevocationID is a random record id ("rev_" + 16 base32 characters),
// a storage.ValidID.
func newRevocationID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "rev_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// revocationBackoff is the delay before the retry that follows attempts
// failed retries: initial doubled per retry, at most an hour.
func revocationBackoff(initial time.Duration, attempts uint32) time.Duration {
	d := initial
	for range attempts {
		if d >= maxRevocationBackoff/2 {
			return maxRevocationBackoff
		}
		d *= 2
	}
	return min(d, maxRevocationBackoff)
}

// revokeReason is safeReason for a revocation ("revoke_failed" rather than
// safeReason's catch-all "refresh_failed").
func revokeReason(err error) string {
	if r := safeReason(err); r != "refresh_failed" {
		return r
	}
	return "revoke_failed"
}

// QueueRevocation keeps a token the provider did not confirm revoked, for
// RetryRevocations: ep is the endpoint and client it must be revoked with
// (Provider.Endpoint as forIntegration made it), hint "refresh_token" or
// "access_token", reason the failure's code (safeReason). ev, when not
// nil, is the event of the failed attempt (token.revoke, failure): it
// commits together with the queue entry, so the failure is never on
// record without the retry that follows it, nor the reverse.
//
// Callers: Disconnect and OffboardTenant (this file's package), and the
// sweeps, which disconnect through Disconnect. It fails with
// ErrRevocationQueue when the service has no RevocationStore or Keyring,
// and with ErrUnavailable when the HSM or the store fails; the caller then
// records ev on its own and carries on (the token is not kept).
func (s *Service) QueueRevocation(ctx context.Context, tenantID, integrationID, provider, hint string, token secret.String, ep oauth.Endpoint, reason string, ev *audit.Event) error {
	revs, kr := s.life.revs, s.life.keyring
	if revs == nil || kr == nil {
		return ErrRevocationQueue
	}
	if token.IsZero() || ep.RevocationURL == "" {
		return fmt.Errorf("%w: nothing to revoke", ErrBadRequest)
	}
	pol := s.lifecyclePolicy()
	now := s.now().UTC()
	r := storage.Revocation{
		ID: newRevocationID(), TenantID: tenantID, IntegrationID: integrationID, Provider: provider, Hint: hint,
		CreatedAt: now, NextAttemptAt: now.Add(pol.RevocationRetryInitial), LastError: reason,
	}
	pt, err := json.Marshal(revocationPayload{
		Tenant: tenantID, Integration: integrationID, Hint: hint, Token: token.Reveal(),
		RevocationURL: ep.RevocationURL, ClientID: ep.ClientID, ClientSecret: ep.ClientSecret.Reveal(), AuthStyle: ep.AuthStyle,
	})
	if err != nil {
		return fmt.Errorf("%w: encode revocation: %w", ErrUnavailable, err)
	}
	w, err := kr.Wrap(ctx, pt, revocationAAD(r.ID, tenantID, integrationID, hint))
	secret.Zero(pt)
	if err != nil {
		return fmt.Errorf("%w: seal revocation: %w", ErrUnavailable, err)
	}
	if r.Sealed, err = encodeSealed(w); err != nil {
		return err
	}
	r.KEKVersion = w.KEKVersion
	put := func(build storage.AuditFunc) (storage.AuditRecord, error) {
		_, rec, err := revs.PutRevocation(ctx, r, build)
		return rec, err
	}
	if ev != nil {
		_, err = s.audit.RecordWith(ctx, *ev, put)
	} else {
		_, err = put(nil)
	}
	if err != nil {
		return fmt.Errorf("%w: queue revocation: %w", ErrUnavailable, err)
	}
	return nil
}

// PendingRevocation is a queued revocation as an operator sees it: never
// the token nor the client.
type PendingRevocation struct {
	ID            string
	TenantID      string
	IntegrationID string
	Provider      string
	Hint          string
	Attempts      uint32
	CreatedAt     time.Time
	NextAttemptAt time.Time
	LastError     string
}

// ListRevocations lists the pending revocations (GET /v1/admin/revocations),
// sorted by id. Without a queue the list is empty.
func (s *Service) ListRevocations(ctx context.Context) ([]PendingRevocation, error) {
	out := []PendingRevocation{}
	if s.life.revs == nil {
		return out, nil
	}
	rs, err := s.life.revs.ListRevocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, r := range rs {
		out = append(out, PendingRevocation{
			ID: r.ID, TenantID: r.TenantID, IntegrationID: r.IntegrationID, Provider: r.Provider, Hint: r.Hint,
			Attempts: r.Attempts, CreatedAt: r.CreatedAt.UTC(), NextAttemptAt: r.NextAttemptAt.UTC(), LastError: r.LastError,
		})
	}
	return out, nil
}

// RetryResult is what one RetryRevocations round did.
type RetryResult struct {
	Revoked int // confirmed by the provider and removed
	Failed  int // failed again, rescheduled
	Dropped int // given up (retry_for passed, or unsealable) and removed
	Pending int // still queued after the round
}

// RetryRevocations retries every queued revocation due at now (at most
// revocationsPerRound of them per call; the rest wait for the next round).
// Each outcome is audited as revocation.retry with actor "vaultd": success
// (the record is deleted), failure with the reason code as detail (attempts
// + 1, the next attempt after revocationBackoff), or failure "dropped after
// <retry_for>" once the record is older than Lifecycle.RevocationRetryFor
// (deleted unretried). A record whose seal does not open, or whose sealed
// tenant, integration or hint is not the record's, is dropped as
// "dropped: unsealable". Rounds do not overlap.
func (s *Service) RetryRevocations(ctx context.Context, now time.Time) (res RetryResult, err error) {
	revs := s.life.revs
	if revs == nil {
		return res, nil
	}
	s.life.retryMu.Lock()
	defer s.life.retryMu.Unlock()
	rs, err := revs.ListRevocations(ctx)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	pol := s.lifecyclePolicy()
	defer func() { res.Pending = len(rs) - res.Revoked - res.Dropped }()
	worked := 0
	for _, r := range rs {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		due := !now.Before(r.NextAttemptAt)
		expired := !now.Before(r.CreatedAt.Add(pol.RevocationRetryFor))
		if (!due && !expired) || worked >= revocationsPerRound {
			continue
		}
		worked++
		switch outcome, err := s.retryOne(ctx, r, now, pol, expired); {
		case err != nil:
			// The store failed (or vaultd is stopping): the record stays
			// as it was, for the next round.
			s.log.WarnContext(ctx, "revocation retry not recorded", "tenant_id", r.TenantID, "integration_id", r.IntegrationID, "err", err)
		case outcome == retryRevoked:
			res.Revoked++
		case outcome == retryDropped:
			res.Dropped++
		default:
			res.Failed++
		}
	}
	return res, nil
}

type retryOutcome int

const (
	retryFailed retryOutcome = iota
	retryRevoked
	retryDropped
)

// retryOne settles one due (or expired) revocation.
func (s *Service) retryOne(ctx context.Context, r storage.Revocation, now time.Time, pol Lifecycle, expired bool) (retryOutcome, error) {
	c := Caller{Principal: SystemPrincipal}
	if expired {
		ev := c.event(audit.ActionRevocationRetry, r.TenantID, r.IntegrationID, audit.OutcomeFailure, "dropped after "+fmtDuration(pol.RevocationRetryFor))
		return retryDropped, s.deleteRevocation(ctx, r.ID, ev)
	}
	p, err := s.openRevocation(ctx, r)
	if errors.Is(err, errUnsealable) {
		s.log.WarnContext(ctx, "revocation dropped: its seal does not open", "tenant_id", r.TenantID, "integration_id", r.IntegrationID, "err", err)
		ev := c.event(audit.ActionRevocationRetry, r.TenantID, r.IntegrationID, audit.OutcomeFailure, "dropped: unsealable")
		return retryDropped, s.deleteRevocation(ctx, r.ID, ev)
	}
	var rerr error
	host := ""
	if err != nil {
		rerr = err // the HSM is down: a failed attempt like any other
	} else {
		ep, ok := s.revocationEndpoint(r.Provider, p)
		host = hostOf(p.RevocationURL)
		if !ok {
			rerr = errProviderGone
		} else {
			tok := secret.NewString(p.Token)
			rerr = s.revoke(ctx, ep, tok, p.Hint)
		}
	}
	if rerr == nil {
		ev := c.event(audit.ActionRevocationRetry, r.TenantID, r.IntegrationID, audit.OutcomeSuccess, fmt.Sprintf("%s attempts=%d", r.Hint, r.Attempts+1))
		ev.TargetHost = host
		return retryRevoked, s.deleteRevocation(ctx, r.ID, ev)
	}
	if ctx.Err() != nil {
		// Stopping mid-call is no verdict on the provider.
		return retryFailed, ctx.Err()
	}
	reason := retryReason(rerr)
	s.log.InfoContext(ctx, "revocation retry failed", "tenant_id", r.TenantID, "integration_id", r.IntegrationID, "hint", r.Hint, "attempts", r.Attempts+1, "reason", reason)
	r.Attempts++
	r.NextAttemptAt = now.UTC().Add(revocationBackoff(pol.RevocationRetryInitial, r.Attempts))
	r.LastError = reason
	ev := c.event(audit.ActionRevocationRetry, r.TenantID, r.IntegrationID, audit.OutcomeFailure, reason)
	ev.TargetHost = host
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	_, err = s.audit.RecordWith(cctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		_, rec, err := s.life.revs.UpdateRevocation(cctx, r, build)
		return rec, err
	})
	return retryFailed, err
}

// SystemPrincipal is the actor of the events vaultd's own background work
// records (retried revocations, the start-up key migration).
const SystemPrincipal = "vaultd"

var (
	errUnsealable   = errors.New("vault: sealed revocation does not open")
	errProviderGone = errors.New("vault: provider not configured")
)

// retryReason is the reason code of a failed retry.
func retryReason(err error) string {
	switch {
	case errors.Is(err, errProviderGone):
		return "provider_not_configured"
	case errors.Is(err, hsm.ErrUnavailable), errors.Is(err, hsm.ErrClosed):
		return "hsm_unavailable"
	}
	return revokeReason(err)
}

// openRevocation unseals r's payload and checks it names r's tenant,
// integration and hint. errUnsealable: it never will open (malformed,
// authentication failed, mismatched); another error: try again later.
func (s *Service) openRevocation(ctx context.Context, r storage.Revocation) (revocationPayload, error) {
	if s.life.keyring == nil {
		return revocationPayload{}, fmt.Errorf("%w: %w", ErrUnavailable, ErrRevocationQueue)
	}
	w, err := decodeSealed(r.Sealed, r.KEKVersion)
	if err != nil {
		return revocationPayload{}, fmt.Errorf("%w: %w", errUnsealable, err)
	}
	pt, err := s.life.keyring.Unwrap(ctx, w, revocationAAD(r.ID, r.TenantID, r.IntegrationID, r.Hint))
	if errors.Is(err, hsm.ErrUnwrap) {
		return revocationPayload{}, fmt.Errorf("%w: %w", errUnsealable, err)
	}
	if err != nil {
		return revocationPayload{}, fmt.Errorf("%w: unseal revocation: %w", ErrUnavailable, err)
	}
	defer pt.Wipe()
	var p revocationPayload
	if err := json.Unmarshal(pt.Reveal(), &p); err != nil {
		return revocationPayload{}, fmt.Errorf("%w: decode: %w", errUnsealable, storage.ErrCorrupt)
	}
	if p.Tenant != r.TenantID || p.Integration != r.IntegrationID || p.Hint != r.Hint || p.Token == "" || p.RevocationURL == "" {
		return revocationPayload{}, fmt.Errorf("%w: payload does not match its record", errUnsealable)
	}
	return p, nil
}

// revocationEndpoint is the endpoint a queued revocation is retried at:
// the sealed URL and client, over the provider's own HTTP client (its
// trusted CAs, its timeout). A provider no longer configured has no
// client vaultd trusts: the retry fails until it is configured again or
// the revocation is dropped.
func (s *Service) revocationEndpoint(provider string, p revocationPayload) (oauth.Endpoint, bool) {
	pr, ok := s.Provider(provider)
	if !ok {
		return oauth.Endpoint{}, false
	}
	ep := pr.Endpoint
	ep.RevocationURL, ep.ClientID, ep.ClientSecret, ep.AuthStyle = p.RevocationURL, p.ClientID, secret.NewString(p.ClientSecret), p.AuthStyle
	return ep, true
}

// deleteRevocation removes a settled revocation with its event.
func (s *Service) deleteRevocation(ctx context.Context, id string, ev audit.Event) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	_, err := s.audit.RecordWith(cctx, ev, func(build storage.AuditFunc) (storage.AuditRecord, error) {
		return s.life.revs.DeleteRevocation(cctx, id, build)
	})
	return err
}

// fmtDuration writes d in the config's words: whole days as "7d", else
// Go's form ("36h0m0s").
func fmtDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
