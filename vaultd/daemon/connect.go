package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/vaultd/vaultd/vaultd/config"
	"github.com/vaultd/vaultd/vaultd/vault"
)

// The connect listener ([connect]): HTTPS for browsers, a server
// certificate only. It is a listener of its own, never the API's: the API
// requires a client certificate, the browser side cannot, and nothing but
// the two connect paths is served on it.

// connectSettings maps [connect] to the service's settings (nil = off).
func connectSettings(cfg *config.Config) *vault.ConnectSettings {
	c := cfg.Connect
	if c == nil {
		return nil
	}
	return &vault.ConnectSettings{
		RedirectURI: c.RedirectURI,
		LinkPrefix:  c.PublicBase.Scheme + "://" + c.PublicBase.Host + "/connect/",
		SessionTTL:  c.SessionTTL.Duration(),
		ReturnTo:    c.ReturnToPrefixes,
	}
}

// buildConnectTLS loads the connect listener's certificate: its own, or
// the API's. TLS 1.2 is the floor browsers and corporate proxies still
// need; no client certificate is asked for.
func buildConnectTLS(cfg *config.Config) (*tls.Config, error) {
	c := cfg.Connect
	if c == nil {
		return nil, nil
	}
	certFile, keyFile := c.TLSCert, c.TLSKey
	if certFile == "" {
		certFile, keyFile = cfg.Server.TLSCert, cfg.Server.TLSKey
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("connect certificate %s: %w", certFile, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// connectServer builds the connect listener's server; its TLS config is
// looked up per handshake so SIGHUP can swap the certificate.
func (d *daemon) connectServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return d.connectTLS.Load(), nil },
			// ServeTLS wants a certificate source of its own.
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return &d.connectTLS.Load().Certificates[0], nil
			},
		},
		// A browser's requests are small; slow or huge ones are refused
		// early (the listener is reachable by anyone).
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
}

// listenConnect binds [connect] listen.
func listenConnect(cfg *config.Config) (net.Listener, error) {
	if cfg.Connect == nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Connect.Listen)
	if err != nil {
		return nil, fmt.Errorf("connect listener %s: %w", cfg.Connect.Listen, err)
	}
	return ln, nil
}

// connectSweep deletes old finished connect sessions every interval, in
// bounded batches (vault.PruneConnectSessions).
func (d *daemon) connectSweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for range 100 { // at most 100 batches per round
				n, err := d.svc.PruneConnectSessions(ctx, 1000)
				if err != nil {
					d.log.Warn("connect session sweep failed", "err", err)
					break
				}
				if n > 0 {
					d.log.Info("connect sessions pruned", "count", n)
				}
				if n < 1000 {
					break
				}
			}
		}
	}
}
