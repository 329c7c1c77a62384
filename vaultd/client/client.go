// Package client is a small Go client of the vaultd API (docs/api.md),
// used by vaultctl and importable by applications. It speaks mTLS with the
// caller's certificate; tenant-bound calls may carry a tenant-context JWT.
// Requests and answers are the types of vaultd/api; errors vaultd answers
// come back as *APIError with a typed api.Code. Proxy returns the
// upstream's *http.Response, streamed.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
)

// APIError is an error answered by vaultd (api.ErrorBody).
type APIError struct {
	Status    int
	Code      api.Code
	Message   string
	RequestID string
}

// CodeUnknown is the Code of an APIError whose answer carried no vaultd
// error body (a proxy in front of vaultd answered, say).
const CodeUnknown api.Code = "unknown"

func (e *APIError) Error() string {
	return fmt.Sprintf("vaultd: %d %s: %s (request_id %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// Options configures a Client.
type Options struct {
	// CertFile/KeyFile: the client certificate; CAFile: the CA that signed
	// vaultd's server certificate. Ignored when TLSConfig is set.
	CertFile, KeyFile, CAFile string
	TLSConfig                 *tls.Config
	// TenantContext is a tenant-context JWT sent on every request
	// (X-Tenant-Context), for principals without a fixed tenant.
	TenantContext string
	// Timeout bounds each call (default 60s; 0 for proxy streams is set
	// per request by the caller's context).
	Timeout time.Duration
	// Transport overrides the HTTP transport (e.g. an http3.Transport).
	Transport http.RoundTripper
}

// Client talks to one vaultd.
type Client struct {
	base          *url.URL
	hc            *http.Client
	tenantContext string
}

// New returns a client for baseURL (e.g. https://127.0.0.1:8443).
func New(baseURL string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL must be https://host:port, got %q", baseURL)
	}
	rt := o.Transport
	if rt == nil {
		tc := o.TLSConfig
		if tc == nil {
			tc, err = LoadTLS(o.CertFile, o.KeyFile, o.CAFile)
			if err != nil {
				return nil, err
			}
		}
		rt = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	return &Client{
		base: u,
		hc: &http.Client{Transport: rt, Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		tenantContext: o.TenantContext,
	}, nil
}

// LoadTLS builds a TLS 1.3 client config from PEM files.
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("client: read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("client: no certificates in %s", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// WithTenantContext returns a copy that sends jwt as X-Tenant-Context.
func (c *Client) WithTenantContext(jwt string) *Client {
	cp := *c
	cp.tenantContext = jwt
	return &cp
}

// HTTPClient exposes the underlying client (for benchmarks and tools).
func (c *Client) HTTPClient() *http.Client { return c.hc }

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Path = strings.TrimSuffix(c.base.Path, "/") + path[:i]
		u.RawQuery = path[i+1:]
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.tenantContext != "" {
		req.Header.Set(api.HeaderTenantContext, c.tenantContext)
	}
	return req, nil
}

// do sends a JSON request and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

func decodeError(resp *http.Response) error {
	var eb api.ErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Code == "" {
		return &APIError{Status: resp.StatusCode, Code: CodeUnknown, Message: http.StatusText(resp.StatusCode)}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, RequestID: eb.Error.RequestID}
}

// IsCode reports whether err is an APIError with that code.
func IsCode(err error, code api.Code) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// CreateTenant provisions a tenant (operator).
func (c *Client) CreateTenant(ctx context.Context, id string) (api.Tenant, error) {
	var t api.Tenant
	err := c.do(ctx, http.MethodPost, "/v1/tenants", api.CreateTenantRequest{ID: id}, &t)
	return t, err
}

// GetTenant reads a tenant (operator).
func (c *Client) GetTenant(ctx context.Context, id string) (api.Tenant, error) {
	var t api.Tenant
	err := c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(id), nil, &t)
	return t, err
}

// ListTenants lists tenants with the KEK versions in use (operator).
func (c *Client) ListTenants(ctx context.Context) ([]api.TenantKeys, error) {
	var out api.TenantList
	err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, &out)
	return out.Tenants, err
}

// RewrapTenant wraps every DEK of a tenant under the current KEK, after a
// KEK rotation (operator).
func (c *Client) RewrapTenant(ctx context.Context, id string) (api.TenantRewrap, error) {
	var t api.TenantRewrap
	err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/rewrap", nil, &t)
	return t, err
}

// RotateDEK gives a tenant a new data key (operator).
func (c *Client) RotateDEK(ctx context.Context, id string) (api.TenantKeys, error) {
	var t api.TenantKeys
	err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/rotate-dek", nil, &t)
	return t, err
}

// StoreToken stores an OAuth token response (raw JSON as the provider
// returned it) for integration id (app).
func (c *Client) StoreToken(ctx context.Context, id, provider string, token json.RawMessage) (api.Integration, error) {
	var out api.Integration
	err := c.do(ctx, http.MethodPut, "/v1/integrations/"+url.PathEscape(id),
		api.StoreTokenRequest{Provider: provider, Token: token}, &out)
	return out, err
}

// GetIntegration reads metadata (app).
func (c *Client) GetIntegration(ctx context.Context, id string) (api.Integration, error) {
	var out api.Integration
	err := c.do(ctx, http.MethodGet, "/v1/integrations/"+url.PathEscape(id), nil, &out)
	return out, err
}

// ListIntegrations lists the caller's tenant's integrations (app).
func (c *Client) ListIntegrations(ctx context.Context) ([]api.Integration, error) {
	var out api.IntegrationList
	err := c.do(ctx, http.MethodGet, "/v1/integrations", nil, &out)
	return out.Integrations, err
}

// DeleteIntegration disconnects (revoke at the provider, delete) (app).
func (c *Client) DeleteIntegration(ctx context.Context, id string) (revokedAtProvider bool, err error) {
	var out api.DeleteResult
	err = c.do(ctx, http.MethodDelete, "/v1/integrations/"+url.PathEscape(id), nil, &out)
	return out.RevokedAtProvider, err
}

// Proxy sends method path (relative to the provider's API base, query
// allowed) through vaultd and returns the upstream answer. The caller
// closes the body. vaultd errors (not upstream ones) come back as *APIError.
func (c *Client) Proxy(ctx context.Context, id, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, "/v1/integrations/"+url.PathEscape(id)+"/proxy/"+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.Header.Get("Content-Type") == "application/json" && resp.Header.Get(api.HeaderRequestID) != "" && isVaultError(resp) {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// isVaultError tells a vaultd error from an upstream one: vaultd marks its
// own errors with X-Vaultd-Error.
func isVaultError(resp *http.Response) bool { return resp.Header.Get(api.HeaderError) != "" }

// Execute runs an execute call (app).
func (c *Client) Execute(ctx context.Context, id string, er api.ExecuteRequest) (api.ExecuteResponse, error) {
	var out api.ExecuteResponse
	err := c.do(ctx, http.MethodPost, "/v1/integrations/"+url.PathEscape(id)+"/execute", er, &out)
	return out, err
}

// ExecuteHTTP runs an execute call and returns the upstream answer as an
// *http.Response.
func (c *Client) ExecuteHTTP(ctx context.Context, id string, er api.ExecuteRequest) (*http.Response, error) {
	out, err := c.Execute(ctx, id, er)
	if err != nil {
		return nil, err
	}
	return out.HTTPResponse()
}

// AuditQuery filters an audit export.
type AuditQuery struct {
	TenantID, IntegrationID, Action string
	Since, Until                    time.Time
	Limit                           int
}

// streamClient is c's client without the overall timeout: a stream (an
// audit export, a backup) may legitimately outlast it; ctx bounds it.
func (c *Client) streamClient() *http.Client {
	hc := *c.hc
	hc.Timeout = 0
	return &hc
}

// Audit streams the audit NDJSON export to w (auditor). Options.Timeout
// does not apply; ctx bounds the export.
func (c *Client) Audit(ctx context.Context, q AuditQuery, w io.Writer) error {
	v := url.Values{}
	if q.TenantID != "" {
		v.Set("tenant_id", q.TenantID)
	}
	if q.IntegrationID != "" {
		v.Set("integration_id", q.IntegrationID)
	}
	if q.Action != "" {
		v.Set("action", q.Action)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	path := "/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.streamClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// ErrBackupIncomplete means the backup stream ended without the size and
// checksum trailers that vouch for it, or did not match them: what was
// written is not a backup.
var ErrBackupIncomplete = errors.New("client: backup stream incomplete or corrupted")

// BackupResult describes a received backup.
type BackupResult struct {
	Bytes  int64
	SHA256 string // lowercase hex
}

// Backup streams a consistent snapshot of vaultd's database (a bbolt file)
// to w (operator) and checks it against the size and SHA-256 trailers vaultd
// sends after the body. On ErrBackupIncomplete (or any error) the bytes in w
// must be discarded. Options.Timeout does not apply; ctx bounds the copy.
func (c *Client) Backup(ctx context.Context, w io.Writer) (BackupResult, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/admin/backup", nil)
	if err != nil {
		return BackupResult{}, err
	}
	resp, err := c.streamClient().Do(req)
	if err != nil {
		return BackupResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return BackupResult{}, decodeError(resp)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), resp.Body)
	if err != nil {
		return BackupResult{}, fmt.Errorf("client: backup after %d bytes: %w", n, err)
	}
	res := BackupResult{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	// Trailers are populated once the body has been read to EOF.
	wantSize, wantSum := resp.Trailer.Get(api.TrailerBackupSize), resp.Trailer.Get(api.TrailerBackupSHA256)
	if wantSize == "" || wantSum == "" {
		return res, fmt.Errorf("%w: no size/checksum trailer after %d bytes", ErrBackupIncomplete, n)
	}
	if wantSize != strconv.FormatInt(n, 10) || wantSum != res.SHA256 {
		return res, fmt.Errorf("%w: received %d bytes sha256 %s, server sent %s bytes sha256 %s",
			ErrBackupIncomplete, n, res.SHA256, wantSize, wantSum)
	}
	return res, nil
}

// Providers lists configured providers (operator): api.ProviderList as
// the server sent it.
func (c *Client) Providers(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodGet, "/v1/providers", nil, &out)
	return out, err
}
