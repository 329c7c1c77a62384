// Command vaultd-devprovider is a DEV-ONLY STAND-IN for an OAuth provider (the
// "example" provider of scripts/dev-up.sh). It is NOT a real authorization
// server: it issues random fake tokens to anyone on loopback who asks at
// /authorize-dev. Never deploy it.
//
// It serves the endpoints of internal/fakeprovider.Provider (GET /authorize
// with its consent page and POST /authorize/decision, POST /token, POST
// /revoke, /api/...) plus POST /authorize-dev, which answers an initial
// RFC 6749 §5.1 token response (form field "scope" optional) so a dev
// script can store it through vaultd's store_token. The consent page
// redirects only to the URIs given with -redirect-uri (exact match), and
// puts the stand-in's base URL in iss.
//
// Once listening it prints one JSON line with its URLs on stdout; logs go to
// stderr. SIGTERM or SIGINT: graceful shutdown, exit 0.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vaultd/vaultd/internal/fakeprovider"
	"github.com/vaultd/vaultd/vaultd/oauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devprovider (dev-only stand-in):", err)
		os.Exit(1)
	}
}

// Ready is the JSON line printed on stdout once listening.
type Ready struct {
	DevOnly       bool   `json:"dev_only"`
	BaseURL       string `json:"base_url"`
	TokenURL      string `json:"token_url"`
	RevocationURL string `json:"revocation_url"`
	APIBaseURL    string `json:"api_base_url"`
	AuthorizeURL  string `json:"authorize_dev_url"`
	ClientID      string `json:"client_id"`
	AuthStyle     string `json:"auth_style"`
	// AuthorizationEndpoint is the consent flow's authorization_url.
	AuthorizationEndpoint string `json:"authorization_url"`
	Issuer                string `json:"issuer"` // iss of its authorization responses
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on (dev-only stand-in)")
	clientID := fs.String("client-id", "vaultd-dev", "client id the stand-in accepts")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret the stand-in accepts (required)")
	authStyle := fs.String("auth-style", oauth.AuthStyleBasic, "client authentication demanded at /token and /revoke: basic | body")
	scopes := fs.String("scopes", "contacts.read contacts.write", "default scope of /authorize-dev grants (space-delimited)")
	expiresIn := fs.Int64("expires-in", fakeprovider.DefaultExpiresIn, "expires_in of issued access tokens, seconds")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM); plain HTTP when empty")
	tlsKey := fs.String("tls-key", "", "private key for -tls-cert (PEM)")
	var redirectURIs []string
	fs.Func("redirect-uri", "redirect URI the consent page may send the browser back to (exact match; repeatable)", func(v string) error {
		u, err := url.Parse(v)
		if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || strings.Contains(v, "#") {
			return errors.New("must be an absolute URL without a fragment")
		}
		redirectURIs = append(redirectURIs, v)
		return nil
	})
	requirePKCE := fs.Bool("require-pkce", false, "refuse authorization requests without a PKCE S256 code_challenge")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *authStyle != oauth.AuthStyleBasic && *authStyle != oauth.AuthStyleBody {
		return fmt.Errorf("-auth-style must be %q or %q", oauth.AuthStyleBasic, oauth.AuthStyleBody)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	if err := requireLoopback(*listen); err != nil {
		return err
	}
	clientSecret, err := readSecretFile(*secretFile)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "devprovider (dev-only stand-in)")

	// Listen first: the base URL is the issuer the provider puts in iss.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	scheme := "http"
	var tlsConfig *tls.Config
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("loading -tls-cert/-tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, tlsConfig)
		scheme = "https"
	}
	base := scheme + "://" + ln.Addr().String()

	p := fakeprovider.NewProvider(fakeprovider.Config{
		ClientID: *clientID, ClientSecret: clientSecret, AuthStyle: *authStyle,
		RedirectURIs: redirectURIs, RequirePKCE: *requirePKCE, Issuer: base,
	})
	p.SetExpiresIn(*expiresIn)
	mux := http.NewServeMux()
	mux.Handle("/", p.Handler())
	mux.HandleFunc("POST /authorize-dev", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		sc := r.PostForm.Get("scope")
		if sc == "" {
			sc = *scopes
		}
		body := fakeprovider.TokenResponseJSON(p.IssueInitialToken(strings.Fields(sc)))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})

	srv := &http.Server{
		Handler:           logRequests(log, mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsConfig,
	}

	ready := Ready{
		DevOnly: true, BaseURL: base, TokenURL: base + "/token", RevocationURL: base + "/revoke",
		APIBaseURL: base + "/api", AuthorizeURL: base + "/authorize-dev", ClientID: *clientID, AuthStyle: *authStyle,
		AuthorizationEndpoint: base + "/authorize", Issuer: p.Issuer(),
	}
	line, _ := json.Marshal(ready) // a struct of strings always marshals
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		ln.Close()
		return fmt.Errorf("writing ready line: %w", err)
	}
	log.Info("listening", "base_url", base)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// requireLoopback refuses anything but a loopback listener: the stand-in
// hands out tokens without authentication.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: the dev-only stand-in listens on loopback only", addr)
	}
	return nil
}

// readSecretFile reads the client secret; one trailing newline is not part
// of it.
func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("-client-secret-file is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading -client-secret-file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("-client-secret-file %s is empty", path)
	}
	return s, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// logRequests logs method, path and status only: never queries, headers or
// bodies, which carry tokens.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status)
	})
}
