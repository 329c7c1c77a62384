// Package server is vaultd's HTTP edge: the mTLS API (docs/api.md) and the
// plain ops listener. It is the only place that maps errors to status codes.
//
// Every API request goes through the same gates, in order, each failing
// closed: a verified client certificate (the TLS layer) -> a known principal
// -> the tenant from the principal or a verified tenant-context JWT ->
// policy.Decide -> the handler. One table (routes.go) names each route's
// method, path, policy action and scope, and the dispatcher runs those
// gates for every route alike. Routing is done on the escaped path rather
// than with http.ServeMux, because ServeMux "cleans" `..` and `//` with a
// redirect, and the proxy route must see those to refuse them.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/vaultd/vaultd/policy"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/proxy"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// Identity is the reloadable part of authentication.
type Identity struct {
	Directory *policy.Directory
	Verifier  *policy.Verifier // nil when [tenant_context] is not configured
}

// Options configures a Server.
type Options struct {
	Logger *slog.Logger
	Vault  *vault.Service
	Audit  *audit.Log
	// Forwarders holds each provider's outbound client, keyed by provider
	// name: each trusts only its provider's CAs.
	Forwarders map[string]*proxy.Forwarder
	Metrics    *Metrics
	Identity   Identity
	// Ready reports whether the HSM session and the store work.
	Ready func(ctx context.Context) error
	// MaxBodyBytes bounds buffered bodies (store_token, execute).
	MaxBodyBytes int64
	// AltSvc, when set, is sent on TCP responses to advertise HTTP/3.
	AltSvc string
	// Backup serves GET /v1/admin/backup; nil answers 503.
	Backup BackupFunc
	// Webhooks serves the webhook delivery routes; nil answers 503.
	Webhooks Webhooks
}

// Server serves the API and ops handlers.
type Server struct {
	log      *slog.Logger
	vault    *vault.Service
	audit    *audit.Log
	fwds     atomic.Pointer[map[string]*proxy.Forwarder]
	bufs     *proxy.Budget // execute answers held in memory, all requests together
	metrics  *Metrics
	identity atomic.Pointer[Identity]
	ready    func(ctx context.Context) error
	maxBody  int64
	altSvc   string
	backupFn BackupFunc
	webhooks Webhooks
	inflight atomic.Int64
	draining atomic.Bool
}

// New builds a Server.
func New(o Options) *Server {
	s := &Server{
		log: o.Logger, vault: o.Vault, audit: o.Audit, metrics: o.Metrics,
		ready: o.Ready, maxBody: o.MaxBodyBytes, altSvc: o.AltSvc, backupFn: o.Backup,
	}
	s.webhooks = o.Webhooks
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.maxBody <= 0 {
		s.maxBody = 10 << 20
	}
	id := o.Identity
	s.identity.Store(&id)
	s.bufs = proxy.NewBudget(proxy.ExecuteBufferBudget(s.maxBody))
	s.SetForwarders(o.Forwarders)
	return s
}

// SetIdentity swaps principals and tenant-context keys (SIGHUP reload).
func (s *Server) SetIdentity(id Identity) { s.identity.Store(&id) }

// SetForwarders swaps the providers' outbound clients (SIGHUP reload of
// provider CAs). Set them before the vault's providers on reload, so that a
// new provider is never without one (which fails its calls closed).
func (s *Server) SetForwarders(f map[string]*proxy.Forwarder) {
	if f == nil {
		f = map[string]*proxy.Forwarder{}
	}
	s.fwds.Store(&f)
}

// forwarder returns provider's outbound client, nil if it has none.
func (s *Server) forwarder(provider string) *proxy.Forwarder { return (*s.fwds.Load())[provider] }

// SetDraining makes /readyz answer 503 while shutting down.
func (s *Server) SetDraining() { s.draining.Store(true) }

// InFlight is the number of API requests being served.
func (s *Server) InFlight() int64 { return s.inflight.Load() }

type ctxKey int

const requestIDKey ctxKey = 1

func requestID(ctx context.Context) string {
	v, _ := ctx.Value(requestIDKey).(string)
	return v
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status for logs and metrics and passes
// Flush through so proxied bodies stream.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// APIHandler is the mTLS API.
func (s *Server) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		rid := newRequestID()
		ctx := context.WithValue(r.Context(), requestIDKey, rid)
		r = r.WithContext(ctx)
		w.Header().Set(api.HeaderRequestID, rid)
		if s.altSvc != "" && r.ProtoMajor < 3 {
			w.Header().Set("Alt-Svc", s.altSvc)
		}
		rec := &statusRecorder{ResponseWriter: w}
		route := "unknown"
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				// The panic value and stack may hold request data; log
				// the stack only, which carries code locations, not values.
				s.log.ErrorContext(ctx, "panic serving request", "request_id", rid, "route", route, "stack", string(debug.Stack()))
				if !rec.wrote {
					writeError(rec, r, api.CodeInternal, msgInternal)
				}
			}
			s.metrics.observeRequest(route, rec.status, time.Since(start))
			s.log.InfoContext(ctx, "request", "request_id", rid, "method", r.Method, "route", route,
				"status", rec.status, "duration_ms", time.Since(start).Milliseconds(), "proto", r.Proto)
		}()
		route = s.dispatch(rec, r)
	})
}
