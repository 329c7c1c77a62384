//go:build cgo

package pkcs11

import (
	"context"

	"github.com/miekg/pkcs11"

	"github.com/vaultd/vaultd/hsm"
)

// Ping implements hsm.Keyring: one C_GenerateRandom(1) (a round trip to the
// device, not just the client library), a check that the session is still
// logged in, and one attribute read of the current KEK, so a token whose key
// object is gone (wiped, or an HSM restarted or failed over) is not reported
// healthy while every unwrap would fail. When only the KEK handle has gone
// stale, Ping finds the KEKs by label again (as Open does, with the same
// policy checks) and pings once more: object handles are not stable across
// an HSM restart, and this is how vaultd recovers without a restart.
// Last, a wrap/unwrap round trip under the current KEK with the negotiated
// scheme: a token that answers but can no longer wrap is not healthy.
func (p *PKCS11) Ping(ctx context.Context) error {
	if err := p.enter(ctx, "ping"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	stale, err := p.ping(ctx)
	if !stale {
		if err != nil {
			return err
		}
		return p.roundTrip(ctx, "ping: round trip", p.currentKEKHandle())
	}
	p.rotMu.Lock()
	keks, serr := p.scan(ctx)
	if serr == nil && len(keks) > 0 {
		p.install(keks)
	}
	p.rotMu.Unlock()
	if serr != nil || len(keks) == 0 {
		return err
	}
	if serr = p.loadMACKey(ctx); serr != nil {
		return serr
	}
	p.logger.Warn("hsm: KEK handle was stale; found the KEKs by label again",
		"token", p.tokenLabel, "kek_label", p.kekLabel, "kek_version", p.CurrentVersion())
	if _, err = p.ping(ctx); err != nil {
		return err
	}
	return p.roundTrip(ctx, "ping: round trip", p.currentKEKHandle())
}

func (p *PKCS11) currentKEKHandle() pkcs11.ObjectHandle {
	_, h := p.currentKEK()
	return h
}

// ping is one health check; stale reports that only the KEK read failed.
func (p *PKCS11) ping(ctx context.Context) (stale bool, err error) {
	err = p.withSession(ctx, "ping", func(s pkcs11.SessionHandle) (bool, error) {
		if _, err := p.mod.GenerateRandom(s, 1); err != nil {
			return false, p.p11Error("ping: C_GenerateRandom", err)
		}
		if !p.sessionLoggedIn(s) {
			return false, p.errorf(hsm.ErrUnavailable, nil, "token %q: ping: session not logged in", p.tokenLabel)
		}
		v, h := p.currentKEK()
		if _, err := p.mod.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)}); err != nil {
			stale = true
			return true, p.errorf(hsm.ErrUnavailable, err, "token %q: ping: KEK %q version %d not readable", p.tokenLabel, p.kekLabel, v)
		}
		return true, nil
	})
	return stale, err
}
