package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vaultd/vaultd/internal/ids"
)

var providerNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Upper bounds that catch typos (an extra zero) rather than express policy.
const (
	maxMaxSessions  = 1024
	maxMaxBodyBytes = 1 << 30
	maxTokenLabel   = 32 // PKCS#11 CK_TOKEN_INFO.label is 32 bytes
	maxLabel        = 256
	maxSubjectCN    = 64 // RFC 5280 ub-common-name
)

type validator struct {
	cfg  *Config
	ix   keyIndex
	mode Mode
}

// fail builds an *Error for key (a dotted path as written in keyIndex).
func (v *validator) fail(key, format string, args ...any) *Error {
	return &Error{File: v.cfg.File, Line: v.ix.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) failErr(key, msg string, err error) *Error {
	e := v.fail(key, "%s", msg)
	e.Err = err
	return e
}

func (v *validator) run() error {
	c := v.cfg
	if v.ix.has("config_version") && c.ConfigVersion != CurrentConfigVersion {
		return v.fail("config_version", "unsupported version (this vaultd reads version %d)", CurrentConfigVersion)
	}
	c.ConfigVersion = CurrentConfigVersion
	if err := v.zeroDurations(); err != nil {
		return err
	}
	for _, step := range []func() error{
		v.server, v.hsm, v.storage, v.audit, v.harden, v.tenantContext, v.principals, v.providers, v.connect,
		v.lifecycle, v.webhooks,
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) server() error {
	s := &v.cfg.Server
	if err := v.hostPort("server.listen", s.Listen, true); err != nil {
		return err
	}
	if err := v.hostPort("server.ops_listen", s.OpsListen, false); err != nil {
		return err
	}
	if s.OpsListen != "" && s.OpsListen == s.Listen {
		return v.fail("server.ops_listen", "must differ from server.listen")
	}
	// The ops listener is plain HTTP without client certificates, and
	// /metrics describes the vault: exposing it takes an explicit opt-in.
	if s.OpsListen != "" && !s.OpsAllowNonLoopback && !isLoopbackListen(s.OpsListen) {
		return v.fail("server.ops_listen", "must be a loopback address (127.0.0.0/8, ::1 or localhost): the ops listener "+
			"has no TLS and no authentication (set server.ops_allow_non_loopback = true to expose it anyway)")
	}
	if s.MaxBodyBytes <= 0 || s.MaxBodyBytes > maxMaxBodyBytes {
		return v.fail("server.max_body_bytes", "must be between 1 and %d", maxMaxBodyBytes)
	}
	for _, f := range []struct {
		key string
		p   *string
	}{{"server.tls_cert", &s.TLSCert}, {"server.tls_key", &s.TLSKey}, {"server.client_ca", &s.ClientCA}} {
		if err := v.path(f.key, f.p, true); err != nil {
			return err
		}
		if v.mode == ModeDaemon {
			if err := v.readable(f.key, *f.p); err != nil {
				return err
			}
		}
	}
	return nil
}

// hostPort checks a listen address: host:port with a numeric port. The
// host may be empty (all addresses), an IP or a name.
func (v *validator) hostPort(key, addr string, required bool) error {
	if addr == "" {
		if required {
			return v.fail(key, "required (host:port)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return v.fail(key, "not a host:port address")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		return v.fail(key, "port must be a number from 0 to 65535")
	}
	if strings.ContainsAny(host, " /\\@") || strings.IndexFunc(host, isControl) >= 0 {
		return v.fail(key, "invalid host")
	}
	return nil
}

func (v *validator) hsm() error {
	h := &v.cfg.HSM
	if err := v.path("hsm.module", &h.Module, true); err != nil {
		return err
	}
	if err := v.label("hsm.token_label", h.TokenLabel, maxTokenLabel); err != nil {
		return err
	}
	if err := v.label("hsm.kek_label", h.KEKLabel, maxLabel); err != nil {
		return err
	}
	if v.ix.has("hsm.pin_file") && h.PINFile == "" {
		return v.fail("hsm.pin_file", "must not be empty (omit the key to use only $CREDENTIALS_DIRECTORY/hsm-pin)")
	}
	if err := v.path("hsm.pin_file", &h.PINFile, false); err != nil {
		return err
	}
	if h.MaxSessions < 1 || h.MaxSessions > maxMaxSessions {
		return v.fail("hsm.max_sessions", "must be between 1 and %d", maxMaxSessions)
	}
	if hi := h.HealthInterval.Duration(); hi < time.Second || hi > 5*time.Minute {
		return v.fail("hsm.health_interval", "must be between 1s and 5m")
	}
	switch h.WrapScheme {
	case "", WrapSchemeGCM, WrapSchemeKWP, WrapSchemeCBCHMAC:
		if h.WrapScheme == "" && v.ix.has("hsm.wrap_scheme") {
			return v.fail("hsm.wrap_scheme", "must not be empty (omit the key to negotiate)")
		}
	default:
		return v.fail("hsm.wrap_scheme", "must be %q, %q or %q (omit the key to negotiate)", WrapSchemeGCM, WrapSchemeKWP, WrapSchemeCBCHMAC)
	}
	if v.mode == ModeSyntax {
		return nil
	}
	if err := v.readable("hsm.module", h.Module); err != nil {
		return err
	}
	// The PIN itself is read only when the keyring is opened (LoadPIN), so
	// it does not sit in the Config; here we only make sure a source exists.
	src, err := h.pinSource()
	if err != nil {
		return v.failErr("hsm", "cannot use the systemd credential "+credentialPIN, err)
	}
	if src == "" {
		return v.fail("hsm", "no PIN source: set hsm.pin_file or provide the systemd credential hsm-pin")
	}
	key := "hsm.pin_file"
	if src != h.PINFile {
		key = "hsm"
	}
	return v.readable(key, src)
}

func (v *validator) label(key, s string, max int) error {
	if s == "" {
		return v.fail(key, "required")
	}
	if len(s) > max || strings.IndexFunc(s, isControl) >= 0 {
		return v.fail(key, "must be 1 to %d printable bytes", max)
	}
	return nil
}

func (v *validator) storage() error {
	st := &v.cfg.Storage
	// Checked with either backend, like lock_timeout: an out-of-range
	// value is a typo even where it is unused.
	if st.MaxConnections < MinMaxConnections || st.MaxConnections > MaxMaxConnections {
		return v.fail("storage.max_connections", "must be between %d and %d", MinMaxConnections, MaxMaxConnections)
	}
	switch st.Backend {
	case BackendBBolt:
	case BackendPostgres:
		return v.postgres()
	default:
		return v.fail("storage.backend", "must be %q or %q", BackendBBolt, BackendPostgres)
	}
	if v.ix.has("storage.dsn_file") {
		return v.fail("storage.dsn_file", "only used with backend = %q", BackendPostgres)
	}
	if err := v.path("storage.path", &st.Path, true); err != nil {
		return err
	}
	if v.mode == ModeSyntax {
		return nil
	}
	if fi, err := os.Stat(st.Path); err == nil && !fi.Mode().IsRegular() {
		return v.fail("storage.path", "%s is not a regular file", st.Path)
	}
	return v.parentDir("storage.path", st.Path)
}

// postgres checks [storage] for backend = "postgres": path is unused (and
// may stay from a bbolt set-up), the DSN is a secret file with the PIN's
// rules. The DSN itself is read only when the store is opened (LoadDSN),
// so it does not sit in the Config; its syntax is the driver's to check.
func (v *validator) postgres() error {
	st := &v.cfg.Storage
	if err := v.path("storage.path", &st.Path, false); err != nil {
		return err
	}
	if v.ix.has("storage.dsn_file") && st.DSNFile == "" {
		return v.fail("storage.dsn_file", "must not be empty (omit the key to use only $CREDENTIALS_DIRECTORY/%s)", credentialDSN)
	}
	if err := v.path("storage.dsn_file", &st.DSNFile, false); err != nil {
		return err
	}
	if v.mode == ModeSyntax {
		return nil
	}
	src, err := st.dsnSource()
	if err != nil {
		return v.failErr("storage", "cannot use the systemd credential "+credentialDSN, err)
	}
	if src == "" {
		return v.fail("storage", "no PostgreSQL DSN source: set storage.dsn_file or provide the systemd credential %s", credentialDSN)
	}
	key := "storage.dsn_file"
	if src != st.DSNFile {
		key = "storage"
	}
	return v.readable(key, src)
}

func (v *validator) audit() error {
	a := &v.cfg.Audit
	if ci := a.CheckpointInterval.Duration(); ci < time.Second || ci > 24*time.Hour {
		return v.fail("audit.checkpoint_interval", "must be between 1s and 24h")
	}
	if a.Sync != SyncAlways && a.Sync != SyncBatch {
		return v.fail("audit.sync", "must be %q or %q", SyncAlways, SyncBatch)
	}
	if si := a.SyncInterval.Duration(); si < time.Millisecond || si > time.Second {
		return v.fail("audit.sync_interval", "must be between 1ms and 1s")
	}
	if v.ix.has("audit.file") && a.File == "" {
		return v.fail("audit.file", "must not be empty (omit the key for no mirror file)")
	}
	if err := v.path("audit.file", &a.File, false); err != nil {
		return err
	}
	if v.ix.has("audit.archive_dir") && !filepath.IsAbs(a.ArchiveDir) {
		return v.fail("audit.archive_dir", "must be an absolute path (omit the key for no archive)")
	}
	if err := v.path("audit.archive_dir", &a.ArchiveDir, false); err != nil {
		return err
	}
	if a.ArchiveDir != "" && v.mode == ModeDaemon {
		// vaultd creates the directory itself (0700); its parent must exist.
		if err := v.parentDir("audit.archive_dir", a.ArchiveDir); err != nil {
			return err
		}
	}
	if a.File == "" || v.mode != ModeDaemon {
		return nil
	}
	return v.parentDir("audit.file", a.File)
}

func (v *validator) harden() error {
	// The modes and extra_syscalls are harden's vocabulary (and the
	// syscall names this machine's): the wiring reads them with harden's
	// parsers, which also know the defaults, and reports a refusal at its
	// key and line through KeyError. Only an explicit "" is refused here,
	// since "" is how an omitted key reaches the parser.
	h := &v.cfg.Harden
	for _, f := range []struct{ key, val string }{{"harden.mlock", h.Mlock}, {"harden.seccomp", h.Seccomp}} {
		if f.val == "" && v.ix.has(f.key) {
			return v.fail(f.key, "must not be empty (omit the key for the default)")
		}
	}
	return nil
}

func (v *validator) tenantContext() error {
	tc := v.cfg.TenantContext
	if tc == nil {
		return nil
	}
	if err := v.path("tenant_context.jwks_file", &tc.JWKSFile, true); err != nil {
		return err
	}
	for _, f := range []struct{ key, val string }{
		{"tenant_context.issuer", tc.Issuer},
		{"tenant_context.audience", tc.Audience},
	} {
		if f.val == "" {
			return v.fail(f.key, "required when [tenant_context] is present")
		}
		if strings.IndexFunc(f.val, isControl) >= 0 {
			return v.fail(f.key, "must not contain control characters")
		}
	}
	if tc.TenantClaim == "" {
		if v.ix.has("tenant_context.tenant_claim") {
			return v.fail("tenant_context.tenant_claim", "must not be empty (omit the key for %q)", DefaultTenantClaim)
		}
		tc.TenantClaim = DefaultTenantClaim
	}
	if tc.MaxLifetime.IsZero() {
		tc.MaxLifetime = NewDuration(DefaultMaxLifetime)
	}
	if tc.ClockSkew.IsZero() {
		tc.ClockSkew = NewDuration(DefaultClockSkew)
	}
	if v.mode == ModeDaemon {
		return v.readable("tenant_context.jwks_file", tc.JWKSFile)
	}
	return nil
}

func (v *validator) principals() error {
	seen := map[string]int{}
	for i := range v.cfg.Principals {
		p := &v.cfg.Principals[i]
		key := fmt.Sprintf("principals[%d]", i)
		var id string
		switch {
		case p.URISAN != "" && p.SubjectCN != "":
			return v.fail(key, "set exactly one of uri_san and subject_cn, not both")
		case p.URISAN != "":
			u, err := url.Parse(p.URISAN)
			if err != nil || u.Scheme == "" || strings.IndexFunc(p.URISAN, isSpaceOrControl) >= 0 {
				return v.fail(key+".uri_san", "must be an absolute URI (e.g. spiffe://domain/path)")
			}
			id = "uri_san " + p.URISAN
		case p.SubjectCN != "":
			if len(p.SubjectCN) > maxSubjectCN || strings.IndexFunc(p.SubjectCN, isControl) >= 0 {
				return v.fail(key+".subject_cn", "must be 1 to %d printable bytes", maxSubjectCN)
			}
			id = "subject_cn " + p.SubjectCN
		default:
			return v.fail(key, "set exactly one of uri_san and subject_cn")
		}
		if j, dup := seen[id]; dup {
			return v.fail(key, "duplicate principal: same %s as principals[%d]", strings.SplitN(id, " ", 2)[0], j)
		}
		seen[id] = i
		// Roles are policy's vocabulary: the wiring reads them (and the
		// rules that tie roles to a tenant) with policy's parser and
		// reports a refusal at its key and line through KeyError.
		if p.Tenant != "" && !ids.Valid(p.Tenant) {
			return v.fail(key+".tenant", "not a valid tenant id (1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric)")
		}
	}
	return nil
}

func (v *validator) providers() error {
	for _, name := range v.cfg.ProviderNames() {
		p := v.cfg.Providers[name]
		key := "providers." + name
		if !providerNameRE.MatchString(name) {
			return v.fail(key, "invalid provider name %s (want 1 to 64 of a-z 0-9 _ -)", quote(name))
		}
		if p == nil {
			return v.fail(key, "empty provider")
		}
		p.Name = name
		if err := v.providerEndpoints(key, p); err != nil {
			return err
		}
		if p.ClientID == "" {
			return v.fail(key+".client_id", "required")
		}
		if strings.IndexFunc(p.ClientID, isControl) >= 0 {
			return v.fail(key+".client_id", "must not contain control characters")
		}
		// auth_style is oauth's vocabulary: the wiring reads it with
		// oauth.ParseAuthStyle (which knows the default) and reports a
		// refusal through KeyError; "" is how an omitted key reaches it.
		if p.AuthStyle == "" && v.ix.has(key+".auth_style") {
			return v.fail(key+".auth_style", "must not be empty (omit the key for the default)")
		}
		seen := map[string]bool{}
		for i, s := range p.Scopes {
			if !validScope(s) {
				return v.fail(fmt.Sprintf("%s.scopes[%d]", key, i), "not an OAuth scope token (RFC 6749 §3.3: no spaces, quotes or backslashes)")
			}
			if seen[s] {
				return v.fail(fmt.Sprintf("%s.scopes[%d]", key, i), "listed twice")
			}
			seen[s] = true
		}
		if p.RefreshMargin.IsZero() {
			p.RefreshMargin = NewDuration(DefaultRefreshMargin)
		}
		if p.DefaultTokenLifetime.IsZero() {
			p.DefaultTokenLifetime = NewDuration(DefaultTokenLifetime)
		}
		if p.Timeout.IsZero() {
			p.Timeout = NewDuration(DefaultProviderTimeout)
		}
		if d := p.RefreshTokenMaxIdle.Duration(); d != 0 && (d < time.Second || d > maxLifecycleAge) {
			return v.fail(key+".refresh_token_max_idle", "must be \"0\" (off) or between 1s and 3650d")
		}
		if err := v.path(key+".client_secret_file", &p.ClientSecretFile, true); err != nil {
			return err
		}
		if v.ix.has(key+".ca_file") && p.CAFile == "" {
			return v.fail(key+".ca_file", "must not be empty (omit the key to use the system roots)")
		}
		if err := v.path(key+".ca_file", &p.CAFile, false); err != nil {
			return err
		}
		if v.mode != ModeDaemon {
			continue
		}
		var err error
		if p.ClientSecret, err = readSecretFile(p.ClientSecretFile, maxSecretBytes); err != nil {
			return v.failErr(key+".client_secret_file", "cannot use client secret file", err)
		}
		if p.CAFile != "" {
			if p.RootCAs, err = loadRoots(p.CAFile); err != nil {
				return v.failErr(key+".ca_file", "cannot use CA file", err)
			}
		}
	}
	return nil
}

// endpoint checks a provider URL: absolute https (http only for loopback,
// for tests and the dev stand-in), no credentials, no fragment. The URL is
// never echoed: a mistaken one may carry credentials.
func (v *validator) endpoint(key, raw string, required, allowQuery bool) (*url.URL, error) {
	if raw == "" {
		if required {
			return nil, v.fail(key, "required")
		}
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || strings.IndexFunc(raw, isSpaceOrControl) >= 0 {
		return nil, v.fail(key, "must be an absolute https URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return nil, v.fail(key, "must use https (http is allowed only for 127.0.0.1, ::1 and localhost)")
		}
	default:
		return nil, v.fail(key, "must be an absolute https URL")
	}
	if u.User != nil {
		return nil, v.fail(key, "must not contain user info (credentials belong in client_secret_file)")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, v.fail(key, "must not contain a fragment")
	}
	if !allowQuery && (u.RawQuery != "" || u.ForceQuery) {
		return nil, v.fail(key, "must not contain a query")
	}
	return u, nil
}

// isLoopbackListen reports whether a listen address (already checked by
// hostPort) binds loopback only. An empty host is every interface; a name
// other than localhost may resolve to anything.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopbackHost(h string) bool {
	return h == "127.0.0.1" || h == "::1" || h == "localhost"
}

// validScope: RFC 6749 scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// path resolves *p against the config directory and checks it is a
// plausible path (required: must be set).
func (v *validator) path(key string, p *string, required bool) error {
	if *p == "" {
		if required {
			return v.fail(key, "required")
		}
		return nil
	}
	if strings.IndexByte(*p, 0) >= 0 || strings.IndexFunc(*p, isControl) >= 0 {
		return v.fail(key, "path contains control characters")
	}
	if !filepath.IsAbs(*p) {
		*p = filepath.Join(v.cfg.Dir, *p)
	}
	*p = filepath.Clean(*p)
	return nil
}

// readable checks that path is a regular file this process can open.
func (v *validator) readable(key, path string) error {
	if err := checkReadable(path); err != nil {
		return v.failErr(key, "unusable file", err)
	}
	return nil
}

func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return nil
}

// parentDir checks that the directory a file will be created in exists.
func (v *validator) parentDir(key, path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return v.failErr(key, "directory unusable", err)
	}
	if !fi.IsDir() {
		return v.fail(key, "%s is not a directory", dir)
	}
	return nil
}

// loadRoots returns the system roots plus the certificates in file.
func loadRoots(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	// The file's certificates only, not the system roots as well: a
	// provider with its own CA is pinned to it, so a public CA cannot
	// vouch for its hosts either.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return r <= 0x20 || r == 0x7f }

// stripPath drops the path from an *fs.PathError whose path the message
// already names.
func stripPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
