// Package oauthtest is the fake OAuth 2.0 provider and resource API of
// internal/fakeprovider, tied to a test: New starts one on 127.0.0.1 and
// stops it when the test ends. Everything else (knobs, observers, token
// prefixes, Hold, the reflect and echo handlers) is fakeprovider's,
// re-exported here under the names tests have always used.
//
// Tokens and codes it issues are random and carry the prefixes
// "oauthtest-at-", "oauthtest-rt-" and "oauthtest-code-", so leaks are easy
// to search for.
package oauthtest

import (
	"net/http"
	"testing"

	"github.com/vaultd/vaultd/internal/fakeprovider"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

// The fake provider's types.
type (
	Config       = fakeprovider.Config
	Provider     = fakeprovider.Provider
	APIRequest   = fakeprovider.APIRequest
	EchoResponse = fakeprovider.EchoResponse
)

// Defaults for Config's zero values.
const (
	DefaultClientID     = fakeprovider.DefaultClientID
	DefaultClientSecret = fakeprovider.DefaultClientSecret
	DefaultExpiresIn    = fakeprovider.DefaultExpiresIn
)

// Token prefixes; tests grep outputs for them.
const (
	AccessTokenPrefix  = fakeprovider.AccessTokenPrefix
	RefreshTokenPrefix = fakeprovider.RefreshTokenPrefix
	CodePrefix         = fakeprovider.CodePrefix
)

// The authorization endpoint's lifetimes, its wrong issuer and its refusal.
const (
	CodeLifetime    = fakeprovider.CodeLifetime
	ConsentLifetime = fakeprovider.ConsentLifetime
	WrongIssuer     = fakeprovider.WrongIssuer
)

// ErrAuthorizeRefused is Provider.Authorize's error for a request that gets
// a 400 page instead of a redirect.
var ErrAuthorizeRefused = fakeprovider.ErrAuthorizeRefused

// Endpoints that Provider.Hold can hold.
const (
	HoldToken  = fakeprovider.HoldToken
	HoldRevoke = fakeprovider.HoldRevoke
	HoldAPI    = fakeprovider.HoldAPI
)

// New starts a Provider on 127.0.0.1 (HTTPS when cfg.TLS) and closes it when
// the test ends.
func New(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p := fakeprovider.Start(cfg)
	t.Cleanup(p.Close)
	return p
}

// NewProvider returns a Provider without a server; serve Handler() yourself.
// Rotation is on.
func NewProvider(cfg Config) *Provider { return fakeprovider.NewProvider(cfg) }

// TokenResponseJSON renders t as an RFC 6749 §5.1 JSON body with the real
// token values (for store_token bodies).
func TokenResponseJSON(t oauth.Token) []byte { return fakeprovider.TokenResponseJSON(t) }

// ReflectEncodings lists the ?enc= values /api/reflect-token accepts.
func ReflectEncodings() []string { return fakeprovider.ReflectEncodings() }

// ReflectHandler serves what /api/reflect-token does, at any path, for any
// bearer token, unchecked.
func ReflectHandler() http.Handler { return fakeprovider.ReflectHandler() }
