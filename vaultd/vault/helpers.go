package vault

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/vaultd/vaultd/vaultd/oauth"
)

func expiry(now time.Time, expiresIn int64, def time.Duration) time.Time {
	if expiresIn > 0 {
		return now.Add(time.Duration(expiresIn) * time.Second)
	}
	if def > 0 {
		return now.Add(def)
	}
	return time.Time{}
}

func tokenType(tt string) string {
	if tt == "" {
		return "Bearer"
	}
	return tt
}

func normScopes(sc []string) []string {
	out := make([]string, 0, len(sc))
	for _, s := range sc {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func joinScopes(sc []string) string {
	out := ""
	for i, s := range sc {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// safeReason is a short, secret-free description of a provider failure for
// last_error, logs and audit: the OAuth error code or HTTP status, never the
// provider's free text (which may echo what we sent).
func safeReason(err error) string {
	var oe *oauth.Error
	switch {
	case errors.As(err, &oe) && oe.Code != "":
		return oe.Code
	case errors.As(err, &oe):
		return fmt.Sprintf("http_%d", oe.HTTPStatus)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, oauth.ErrRedirect):
		return "redirect_refused"
	case errors.Is(err, oauth.ErrResponseTooLarge):
		return "response_too_large"
	case errors.Is(err, errTokenTooLarge):
		return "token_too_large"
	case oauth.IsTransient(err):
		return "unreachable"
	default:
		return "refresh_failed"
	}
}
