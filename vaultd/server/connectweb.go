package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The connect listener: the only listener a browser reaches. It has no
// client certificate, so everything it reads is hostile. It serves two
// paths and nothing else; every answer is uncacheable, sends no referrer,
// cannot be framed and may load nothing (CSP default-src 'none', one
// hashed inline style). Its log lines carry the route label, never the
// path or the query: both hold secrets (the link, the code, the state).

// connectCookiePrefix names the binding cookie of one session: one per
// session, so two links opened in one browser do not displace each other.
// The __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
const connectCookiePrefix = "__Host-vaultd-connect-"

// pageCSS is the pages' only style; its hash is in the CSP.
const pageCSS = `body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222;line-height:1.5}h1{font-size:1.4rem}p.ref{color:#666;font-size:.85rem}`

var connectCSP = func() string {
	h := sha256.Sum256([]byte(pageCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(h[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{{.Title}}</title><style>` + pageCSS + `</style></head>
<body><h1>{{.Title}}</h1><p>{{.What}}</p><p>{{.Next}}</p>{{if .Ref}}<p class="ref">Reference for your administrator: {{.Ref}}</p>{{end}}</body></html>
`))

// page is one thing a person may read on the connect listener: what
// happened and what to do, never a detail an attacker could use.
type page struct {
	status            int
	Title, What, Next string
	Ref               string
}

var (
	pageLinkInvalid = page{http.StatusBadRequest, "This link does not work",
		"The link is not one we issued, or it was mistyped or cut short.",
		"Go back to the application and start connecting again to get a new link.", ""}
	pageLinkUsed = page{http.StatusGone, "This link was already used",
		"Each connect link works only once, and this one has been opened before.",
		"Go back to the application and start connecting again to get a new link.", ""}
	pageExpired = page{http.StatusGone, "This link has expired",
		"Connect links work for a limited time only, and this one's time is up.",
		"Go back to the application and start connecting again to get a new link.", ""}
	pageOtherBrowser = page{http.StatusBadRequest, "Please finish in the same browser",
		"This sign-in was started in a different browser (or its cookies were cleared), so it cannot be completed here.",
		"Open the connect link again in this browser, or start again from the application.", ""}
	pageFinished = page{http.StatusBadRequest, "This connection is already finished",
		"The sign-in this page belongs to has already been completed or cancelled.",
		"You can close this page. To connect again, start from the application.", ""}
	pageDisabled = page{http.StatusNotFound, "Connecting is not available",
		"This service does not offer connecting accounts at this address.",
		"Go back to the application; if you expected this to work, contact your administrator.", ""}
	pageUnavailable = page{http.StatusServiceUnavailable, "Something went wrong on our side",
		"We could not finish this step right now. Nothing was connected.",
		"Try again in a few minutes from the application. If it keeps happening, contact your administrator with the reference below.", ""}
	pagePrefetch = page{http.StatusServiceUnavailable, "Open this link to continue",
		"This link is opened only when you visit it yourself.",
		"Open the link in your browser to continue connecting.", ""}
	pageNotFound = page{http.StatusNotFound, "Page not found",
		"There is nothing at this address.",
		"Go back to the application you came from.", ""}
	pageMethod = page{http.StatusMethodNotAllowed, "Not allowed",
		"This page can only be opened as a normal link.",
		"Go back to the application you came from.", ""}
)

// pageFor maps the vault's connect errors to a page; the table is the
// browser side's error mapping, as errTable is the API's.
func pageFor(err error) page {
	switch {
	case errors.Is(err, vault.ErrConnectLinkInvalid):
		return pageLinkInvalid
	case errors.Is(err, vault.ErrConnectLinkUsed):
		return pageLinkUsed
	case errors.Is(err, vault.ErrConnectExpired):
		return pageExpired
	case errors.Is(err, vault.ErrConnectDenied):
		return pageOtherBrowser
	case errors.Is(err, vault.ErrConnectFinished):
		return pageFinished
	case errors.Is(err, vault.ErrConnectDisabled):
		return pageDisabled
	}
	return pageUnavailable
}

// Connect is the connect flow's service side, as the browser handler uses
// it (*vault.Service).
type Connect interface {
	OpenConnectLink(ctx context.Context, requestID, link string) (vault.LinkOpened, error)
	ConnectCallback(ctx context.Context, requestID, rawQuery string, cookie func(sessionID string) (string, bool)) (vault.CallbackResult, error)
}

// ConnectHandler is the connect listener's handler.
func (s *Server) ConnectHandler(c Connect) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := newRequestID()
		ctx := context.WithValue(r.Context(), requestIDKey, rid)
		r = r.WithContext(ctx)
		h := w.Header()
		h.Set(api.HeaderRequestID, rid)
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", connectCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		rec := &statusRecorder{ResponseWriter: w}
		step, result := "other", "refused"
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.ErrorContext(ctx, "panic serving connect request", "request_id", rid, "step", step, "stack", string(debug.Stack()))
				if !rec.wrote {
					writePage(rec, pageUnavailable, rid)
				}
				result = "panic"
			}
			s.metrics.connect.WithLabelValues(step, result).Inc()
			s.log.InfoContext(ctx, "connect request", "request_id", rid, "method", r.Method, "step", step,
				"result", result, "status", rec.status, "duration_ms", time.Since(start).Milliseconds())
		}()
		step, result = s.serveConnect(rec, r, c, rid)
	})
}

func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request, c Connect, rid string) (step, result string) {
	p := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/connect/"):
		step = "link"
	case p == "/oauth/callback":
		step = "callback"
	default:
		writePage(w, pageNotFound, "")
		return "other", "not_found"
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writePage(w, pageMethod, "")
		return step, "method_not_allowed"
	}
	if step == "link" {
		return step, s.openLink(w, r, c, strings.TrimPrefix(p, "/connect/"), rid)
	}
	return step, s.callback(w, r, c, rid)
}

func (s *Server) openLink(w http.ResponseWriter, r *http.Request, c Connect, link, rid string) string {
	if r.Method == http.MethodHead {
		// A link preview or scanner must not use up the link.
		writePage(w, pageLinkInvalid, "")
		return "head"
	}
	if isPrefetch(r) {
		// A browser's speculative prefetch or prerender must not spend the
		// one-time link; the real navigation comes later.
		writePage(w, pagePrefetch, "")
		return "prefetch"
	}
	lo, err := c.OpenConnectLink(r.Context(), rid, link)
	if err != nil {
		pg := pageFor(err)
		if pg.status == http.StatusServiceUnavailable {
			s.log.ErrorContext(r.Context(), "connect link failed", "request_id", rid, "err", errorType(err))
			pg.Ref = rid
		}
		writePage(w, pg, rid)
		return resultWord(err)
	}
	maxAge := int(time.Until(lo.ExpiresAt).Seconds())
	if maxAge < 1 {
		maxAge = 1
	}
	http.SetCookie(w, &http.Cookie{
		Name: connectCookiePrefix + lo.SessionID, Value: lo.Cookie.Reveal(), Path: "/",
		MaxAge: maxAge, Secure: true, HttpOnly: true,
		// Lax: the provider's redirect back is a top-level GET from
		// another site, which Strict would strip the cookie from.
		SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Location", lo.Location)
	w.WriteHeader(http.StatusFound)
	return "redirected"
}

func (s *Server) callback(w http.ResponseWriter, r *http.Request, c Connect, rid string) string {
	if r.Method == http.MethodHead {
		writePage(w, pageLinkInvalid, "")
		return "head"
	}
	cookie := func(sessionID string) (string, bool) {
		ck, err := r.Cookie(connectCookiePrefix + sessionID)
		if err != nil {
			return "", false
		}
		return ck.Value, true
	}
	res, err := c.ConnectCallback(r.Context(), rid, r.URL.RawQuery, cookie)
	if err != nil {
		pg := pageFor(err)
		if pg.status == http.StatusServiceUnavailable {
			s.log.ErrorContext(r.Context(), "connect callback failed", "request_id", rid, "err", errorType(err))
			pg.Ref = rid
		}
		if errors.Is(err, vault.ErrConnectExpired) || errors.Is(err, vault.ErrConnectLinkUsed) {
			// A callback is refused with 400; 410 is for links.
			pg.status = http.StatusBadRequest
		}
		writePage(w, pg, rid)
		return resultWord(err)
	}
	// The flow is over either way: the binding cookie has done its job.
	http.SetCookie(w, &http.Cookie{Name: connectCookiePrefix + res.SessionID, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Location", res.Location)
	w.WriteHeader(http.StatusSeeOther)
	return res.Status
}

// isPrefetch: the request announces itself as speculative (Chromium's
// Sec-Purpose, the older Purpose and X-Moz headers).
func isPrefetch(r *http.Request) bool {
	for _, h := range []string{"Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"} {
		v := strings.ToLower(r.Header.Get(h))
		if strings.Contains(v, "prefetch") || strings.Contains(v, "prerender") || strings.Contains(v, "preview") {
			return true
		}
	}
	return false
}

func resultWord(err error) string {
	switch {
	case errors.Is(err, vault.ErrConnectLinkInvalid):
		return "invalid"
	case errors.Is(err, vault.ErrConnectLinkUsed):
		return "used"
	case errors.Is(err, vault.ErrConnectExpired):
		return "expired"
	case errors.Is(err, vault.ErrConnectDenied):
		return "other_browser"
	case errors.Is(err, vault.ErrConnectFinished):
		return "finished"
	case errors.Is(err, vault.ErrConnectDisabled):
		return "disabled"
	}
	return "unavailable"
}

// errorType names an error by its kind for the log: vault errors may wrap
// text from a provider or a store.
func errorType(err error) string {
	row, _ := lookupErr(err)
	return row.kind
}

func writePage(w http.ResponseWriter, pg page, rid string) {
	if pg.status == http.StatusServiceUnavailable {
		pg.Ref = rid
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(pg.status)
	_ = pageTmpl.Execute(w, pg)
}
