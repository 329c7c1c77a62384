package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// maxAnswer is how much of a receiver's answer is read (and discarded):
// enough to let the connection be reused, never a memory sink.
const maxAnswer = 4 << 10

// ErrEgress: the webhook URL is neither https nor http to a loopback
// address.
var ErrEgress = errors.New("notify: webhook url must be https, or http to a loopback address")

// Sign is the Standard Webhooks signature of a message: "v1," and the
// base64 HMAC-SHA256 of "id.timestamp.body" under key (the decoded bytes
// of a whsec_ secret).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// CheckEgress is the rule for a webhook URL: https anywhere, or plain
// http only to a loopback host (a relay on the same machine).
func CheckEgress(u *url.URL) error {
	if u == nil || u.Host == "" || u.User != nil {
		return ErrEgress
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if loopbackHost(u.Hostname()) {
			return nil
		}
	}
	return ErrEgress
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// newClient is one webhook's HTTP client: its own trust roots (nil: the
// system's), no proxy, no redirects followed, and for plain http a dialer
// that refuses any address that is not loopback (so "localhost" cannot be
// resolved elsewhere).
func newClient(u *url.URL, roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if u.Scheme == "http" {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return ErrEgress
			}
			return nil
		}
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			TLSHandshakeTimeout:    5 * time.Second,
			ForceAttemptHTTP2:      true,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post sends one attempt and returns "" for a 2xx answer, else a short
// error code for last_error (never the answer's text, nor the URL).
func post(ctx context.Context, c *http.Client, u *url.URL, key []byte, id string, now time.Time, body []byte) string {
	if err := CheckEgress(u); err != nil {
		return "egress_refused"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return "request_failed"
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vaultd-webhooks")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(key, id, ts, body))
	resp, err := c.Do(req)
	if err != nil {
		return errCode(ctx, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return ""
	}
	return fmt.Sprintf("http_%d", resp.StatusCode)
}

// errCode classifies a failed request without its text, which may carry
// the URL.
func errCode(ctx context.Context, err error) string {
	var (
		cert  *tls.CertificateVerificationError
		unkCA x509.UnknownAuthorityError
		host  x509.HostnameError
		op    *net.OpError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return "timeout"
	case errors.Is(err, ErrEgress):
		return "egress_refused"
	case errors.As(err, &cert), errors.As(err, &unkCA), errors.As(err, &host):
		return "tls_failed"
	case errors.As(err, &op) && op.Op == "dial":
		return "connect_failed"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "request_failed"
}
