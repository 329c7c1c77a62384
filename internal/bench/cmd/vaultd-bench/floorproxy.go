package main

// The minimal Go mTLS reverse proxy, the floor vaultd is measured against:
// a TLS 1.3 listener that requires a client certificate from the bench CA,
// serving HTTP/2, and an httputil.ReverseProxy to the upstream that sets
// one static Authorization header. No lookup, no decryption, no audit.
// With -audit-file it also appends one ~300-byte line per request to that
// file with one write(2) (vaultd's audit WAL append in batch mode); with
// -fsync it then fdatasyncs the file before answering (sync = "always",
// minus the group commit). It prints "ready <addr>" on stdout once it
// listens and stops on SIGINT or SIGTERM.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// floorProxyMain is "vaultd-bench floorproxy [flags]": vaultd-bench runs
// itself in this mode, as a process of its own like vaultd and nginx.
func floorProxyMain(args []string) int {
	fs := flag.NewFlagSet("floorproxy", flag.ExitOnError)
	var (
		listen    = fs.String("listen", "127.0.0.1:0", "listen address")
		cert      = fs.String("cert", "", "server certificate (PEM)")
		key       = fs.String("key", "", "server key (PEM)")
		clientCA  = fs.String("client-ca", "", "CA that client certificates must chain to; also trusted for the upstream")
		upstream  = fs.String("upstream", "", "upstream base URL, e.g. https://localhost:1234/api")
		tokenFile = fs.String("token-file", "", "file holding the bearer token to inject")
		auditFile = fs.String("audit-file", "", "append one line per request to this file ('' for none)")
		fsync     = fs.Bool("fsync", false, "fdatasync -audit-file after each append, before answering")
	)
	_ = fs.Parse(args) // ExitOnError
	if err := serveFloor(*listen, *cert, *key, *clientCA, *upstream, *tokenFile, *auditFile, *fsync); err != nil {
		fmt.Fprintln(os.Stderr, "vaultd-bench floorproxy:", err)
		return 1
	}
	return 0
}

func serveFloor(listen, certFile, keyFile, caFile, upstream, tokenFile, auditFile string, fsync bool) error {
	if certFile == "" || keyFile == "" || caFile == "" || upstream == "" || tokenFile == "" {
		return errors.New("-cert, -key, -client-ca, -upstream and -token-file are required")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", caFile)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	auth := "Bearer " + strings.TrimSpace(string(tok))
	target, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	var log *os.File
	if auditFile != "" {
		if log, err = os.OpenFile(auditFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return err
		}
		defer log.Close()
	}
	// About the size of a sealed proxy.request event.
	line := []byte(`{"seq":0,"time":"2026-01-02T03:04:05.000000Z","tenant_id":"acme","integration_id":"hot","actor":"app-acme","action":"proxy.request","outcome":"success","request_id":"01J0000000000000000000000","target_host":"localhost","http_status":200,"prev_hash":"` + strings.Repeat("0", 64) + `","hash":"` + strings.Repeat("0", 64) + `"}` + "\n")
	var logMu sync.Mutex // one append (and fdatasync) at a time, as a chain would

	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Set("Authorization", auth)
		},
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	var h http.Handler = rp
	if log != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			logMu.Lock()
			_, err := log.Write(line)
			if err == nil && fsync {
				err = syscall.Fdatasync(int(log.Fd()))
			}
			logMu.Unlock()
			if err != nil {
				http.Error(w, "audit failed", http.StatusServiceUnavailable)
				return
			}
			rp.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
			NextProtos: []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	fmt.Println("ready", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
