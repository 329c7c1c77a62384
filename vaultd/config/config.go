package config

import (
	"bytes"
	"crypto/x509"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/vaultd/vaultd/internal/secret"
)

// DefaultPath is where vaultd and vaultctl look without -config.
const DefaultPath = "/etc/vaultd/vaultd.toml"

// Mode says how much of the machine Load and Parse look at besides the
// document itself.
type Mode int

const (
	// ModeDaemon checks everything vaultd needs before it starts: TLS files,
	// client CA, HSM module and PIN source, storage and audit directories,
	// the tenant-context JWKS, and it reads every provider's client secret
	// and CA file. It is the zero value, so forgetting to choose a mode
	// checks the most.
	ModeDaemon Mode = iota
	// ModeInit checks what `vaultctl init` needs: the HSM module, a PIN
	// source and the storage directory.
	ModeInit
	// ModeSyntax touches no file: schema, types and values only (fuzzing,
	// `vaultctl config check` on another machine).
	ModeSyntax
)

func (m Mode) String() string {
	switch m {
	case ModeDaemon:
		return "daemon"
	case ModeInit:
		return "init"
	case ModeSyntax:
		return "syntax"
	}
	return "unknown"
}

// Defaults of optional keys.
const (
	DefaultRequestTimeout    = 60 * time.Second
	DefaultMaxBodyBytes      = 10 << 20
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMaxSessions       = 8
	DefaultLockTimeout       = 2 * time.Second
	DefaultMaxConnections    = 16
	DefaultHSMHealthInterval = 10 * time.Second
	DefaultTenantClaim       = "tenant_id"
	DefaultMaxLifetime       = 5 * time.Minute
	DefaultClockSkew         = 30 * time.Second
	DefaultRefreshMargin     = 60 * time.Second
	DefaultTokenLifetime     = time.Hour
	DefaultProviderTimeout   = 30 * time.Second
	CurrentConfigVersion     = 1
	maxConfigBytes           = 1 << 20
	maxSecretBytes           = 64 << 10
	maxPINBytes              = 1 << 10
	credentialsDirectoryEnv  = "CREDENTIALS_DIRECTORY"
	credentialPIN            = "hsm-pin"
	credentialDSN            = "postgres-dsn"
	maxDSNBytes              = 8 << 10
	inputName                = "<input>"
)

// DefaultSessionTTL is [connect] session_ttl.
const DefaultSessionTTL = 10 * time.Minute

// CallbackPath is the path of the connect listener's OAuth redirect
// endpoint; RedirectURI is public_url + CallbackPath.
const CallbackPath = "/oauth/callback"

// DefaultCheckpointInterval is [audit] checkpoint_interval.
const DefaultCheckpointInterval = time.Minute

// Config is the whole vaultd configuration file. Every path in it is
// absolute: relative paths in the file are resolved against the directory
// of the file.
type Config struct {
	// File is the config file as given to Load ("<input>" for Parse); every
	// error message starts with it.
	File string `toml:"-"`
	// Dir is the absolute directory relative paths were resolved against.
	Dir string `toml:"-"`

	ConfigVersion int                  `toml:"config_version"`
	Server        ServerConfig         `toml:"server"`
	HSM           HSMConfig            `toml:"hsm"`
	Storage       StorageConfig        `toml:"storage"`
	Audit         AuditConfig          `toml:"audit"`
	Harden        HardenConfig         `toml:"harden"`
	TenantContext *TenantContextConfig `toml:"tenant_context"` // nil when the table is absent
	Principals    []Principal          `toml:"principals"`
	Providers     map[string]*Provider `toml:"providers"`
	Connect       *ConnectConfig       `toml:"connect"`   // nil when the table is absent: no connect flow
	Lifecycle     LifecycleConfig      `toml:"lifecycle"` // always present, defaults applied
	Webhooks      []*Webhook           `toml:"webhooks"`

	ix keyIndex // where each key was written, for KeyError
}

// KeyError reports a problem with the value at key (a dotted path as in
// this package's messages, "harden.extra_syscalls[1]") that code outside
// this package found: a value whose meaning belongs to another package is
// checked where the config is put to use. The result is an *Error like
// Load's own: one line naming the file, the key's line and the key, and
// matching ErrInvalid. err's text is the message (it must not quote a
// secret), and err stays in the chain for errors.Is.
func (c *Config) KeyError(key string, err error) error {
	return &Error{File: c.File, Line: c.ix.line(key), Key: key, Msg: err.Error(), cause: err}
}

// ServerConfig is [server].
type ServerConfig struct {
	Listen          string   `toml:"listen"`
	HTTP3           bool     `toml:"http3"`
	TLSCert         string   `toml:"tls_cert"`
	TLSKey          string   `toml:"tls_key"`
	ClientCA        string   `toml:"client_ca"`
	OpsListen       string   `toml:"ops_listen"` // "" = no ops listener
	RequestTimeout  Duration `toml:"request_timeout"`
	MaxBodyBytes    int64    `toml:"max_body_bytes"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// OpsAllowNonLoopback lets ops_listen name an address other than
	// loopback: the ops listener has no TLS and no authentication, so
	// exposing it must be a decision, not a typo.
	OpsAllowNonLoopback bool `toml:"ops_allow_non_loopback"`
}

// The [hsm] wrap_scheme values; the hsm package owns their meaning.
const (
	WrapSchemeGCM     = "aes-gcm"
	WrapSchemeKWP     = "aes-kwp"
	WrapSchemeCBCHMAC = "aes-cbc-hmac"
)

// HSMConfig is [hsm].
type HSMConfig struct {
	Module      string `toml:"module"`
	TokenLabel  string `toml:"token_label"`
	PINFile     string `toml:"pin_file"` // may be "" when the PIN comes from $CREDENTIALS_DIRECTORY/hsm-pin
	KEKLabel    string `toml:"kek_label"`
	MaxSessions int    `toml:"max_sessions"`
	// WrapScheme pins the wrapping scheme instead of negotiating the
	// strongest the token offers: "" (negotiate), "aes-gcm", "aes-kwp" or
	// "aes-cbc-hmac" (a token whose GCM is unusable for vaultd, such as
	// one that insists on choosing the IV itself). A token without the
	// pinned scheme's mechanisms is refused at start.
	WrapScheme string `toml:"wrap_scheme"`
	// HealthInterval is how often vaultd checks the HSM (and the store)
	// on its own; a failed check evicts every cached plaintext DEK.
	HealthInterval Duration `toml:"health_interval"`

	file string // config file, for LoadPIN's messages
}

// StorageConfig is [storage].
type StorageConfig struct {
	// Backend is BackendBBolt (the default: one node, the file at Path) or
	// BackendPostgres (any number of nodes sharing one database, reached
	// with the DSN read from DSNFile).
	Backend string `toml:"backend"`
	// Path is the bbolt database file (required with bbolt, unused with
	// postgres).
	Path string `toml:"path"`
	// DSNFile holds the PostgreSQL connection string (libpq URL or
	// key=value form), a secret like the HSM PIN: it may carry the
	// password. $CREDENTIALS_DIRECTORY/postgres-dsn takes precedence when
	// present; "" when only the credential is used. Postgres only.
	DSNFile string `toml:"dsn_file"`
	// LockTimeout bounds the wait for bbolt's file lock on open (unused
	// with postgres).
	LockTimeout Duration `toml:"lock_timeout"`
	// MaxConnections bounds each node's PostgreSQL connection pool
	// (MinMaxConnections to MaxMaxConnections, default
	// DefaultMaxConnections; unused with bbolt). At most half of it is lent
	// to refreshes waiting on their cross-node lock.
	MaxConnections int `toml:"max_connections"`

	file string // config file, for LoadDSN's messages
}

// Storage backends ([storage] backend).
const (
	// BackendBBolt is the embedded single-node database (storage/bolt).
	BackendBBolt = "bbolt"
	// BackendPostgres is a PostgreSQL database shared by every vaultd
	// node (storage/postgres).
	BackendPostgres = "postgres"
)

// Bounds of [storage] max_connections: a pool of one would leave no
// connection for writes while a refresh holds its lock; the upper bound
// catches typos (an extra zero), not policy.
const (
	MinMaxConnections = 2
	MaxMaxConnections = 1000
)

// AuditConfig is [audit].
type AuditConfig struct {
	File string `toml:"file"` // "" = no mirror file
	// VerifyOnStart: verify the chain in the database at start-up and
	// refuse to start on a break (audit.Options.VerifyOnStart).
	VerifyOnStart bool `toml:"verify_on_start"`
	// CheckpointInterval: how often vaultd appends a signed checkpoint
	// while events are added (and one at shutdown).
	CheckpointInterval Duration `toml:"checkpoint_interval"`
	// Retention: events older than this are pruned from the database
	// (zero: keep everything).
	Retention Retention `toml:"retention"`
	// ArchiveDir receives pruned events as NDJSON segments first ("": none).
	ArchiveDir string `toml:"archive_dir"`
	// Sync is the durability mode of audit events: SyncAlways or SyncBatch.
	Sync string `toml:"sync"`
	// SyncInterval bounds how long a token-use event may wait for its fsync
	// in SyncBatch mode.
	SyncInterval Duration `toml:"sync_interval"`
}

// Audit durability modes ([audit] sync).
const (
	// SyncAlways: every event is fsynced before its answer; concurrent
	// events share one fsync (group commit).
	SyncAlways = "always"
	// SyncBatch: token-use events reach the kernel before their answer and
	// are fsynced within sync_interval; state changes are fsynced with their
	// change (token-use events go through a WAL beside the database,
	// vaultd/audit/wal.go).
	SyncBatch = "batch"
)

// DefaultSyncInterval is [audit] sync_interval.
const DefaultSyncInterval = 10 * time.Millisecond

// HardenConfig is [harden]. The modes and syscall names are harden's
// vocabulary, kept here as written ("" = not set): vaultd reads them with
// harden.ParseMlock, harden.ParseSeccomp and harden.CheckSyscalls.
type HardenConfig struct {
	Mlock         string   `toml:"mlock"`
	Seccomp       string   `toml:"seccomp"`
	ExtraSyscalls []string `toml:"extra_syscalls"` // allowed on top of the built-in filter
	NoNewPrivs    bool     `toml:"no_new_privs"`
	Dumpable      bool     `toml:"dumpable"`
}

// TenantContextConfig is [tenant_context].
type TenantContextConfig struct {
	JWKSFile    string   `toml:"jwks_file"`
	Issuer      string   `toml:"issuer"`
	Audience    string   `toml:"audience"`
	TenantClaim string   `toml:"tenant_claim"`
	MaxLifetime Duration `toml:"max_lifetime"`
	ClockSkew   Duration `toml:"clock_skew"`
}

// ConnectConfig is [connect]: the HTTPS listener browsers reach during a
// connect flow (/connect/{secret} and /oauth/callback only; server
// certificate, no client certificate).
type ConnectConfig struct {
	Listen    string `toml:"listen"`
	PublicURL string `toml:"public_url"`
	// TLSCert and TLSKey default to [server]'s (both are set after Parse).
	TLSCert    string   `toml:"tls_cert"`
	TLSKey     string   `toml:"tls_key"`
	SessionTTL Duration `toml:"session_ttl"`
	// ReturnTo lists the allowed return_to prefixes: a return_to URL must
	// have a prefix's scheme, host and port, and a path starting with its
	// path.
	ReturnTo []string `toml:"return_to"`

	// PublicBase is public_url parsed (path ""), RedirectURI public_url
	// without a trailing "/" + CallbackPath, exactly as registered at the
	// providers; ReturnToPrefixes are return_to parsed (path "/" when
	// empty), in the file's order.
	PublicBase       *url.URL   `toml:"-"`
	RedirectURI      string     `toml:"-"`
	ReturnToPrefixes []*url.URL `toml:"-"`
}

// Principal is one [[principals]] entry: a client certificate identity
// (its first URI SAN, or else its subject CN) and what it may do. Roles
// are policy's vocabulary, kept as written: vaultd reads them with
// policy.ParseRoles and builds a policy.Principal from the entry.
type Principal struct {
	URISAN    string   `toml:"uri_san"`
	SubjectCN string   `toml:"subject_cn"`
	Roles     []string `toml:"roles"`
	Tenant    string   `toml:"tenant"` // "" for app principals: tenant from the tenant-context JWT
}

// Provider is one [providers.NAME] table.
type Provider struct {
	Name                 string   `toml:"-"` // the NAME of [providers.NAME]
	TokenURL             string   `toml:"token_url"`
	RevocationURL        string   `toml:"revocation_url"` // "" = provider has no RFC 7009 endpoint
	APIBaseURL           string   `toml:"api_base_url"`
	ClientID             string   `toml:"client_id"`
	ClientSecretFile     string   `toml:"client_secret_file"`
	AuthStyle            string   `toml:"auth_style"` // oauth's vocabulary, as written ("" = not set): oauth.ParseAuthStyle
	Scopes               []string `toml:"scopes"`
	RefreshMargin        Duration `toml:"refresh_margin"`
	DefaultTokenLifetime Duration `toml:"default_token_lifetime"`
	Timeout              Duration `toml:"timeout"`
	CAFile               string   `toml:"ca_file"`

	// The connect flow. AuthorizationURL "" (and no template supplying one)
	// leaves it off for this provider. Grant is kept as written ("" = not
	// set; internal/settings reads it); PKCE nil = not set (default true).
	AuthorizationURL string            `toml:"authorization_url"`
	Grant            string            `toml:"grant"`
	PKCE             *bool             `toml:"pkce"`
	AuthorizeParams  map[string]string `toml:"authorize_params"`
	ScopeSeparator   string            `toml:"scope_separator"` // " " or ","; "" = not set
	// Template names a built-in catalog template (vaultctl providers
	// catalog) that supplies what the table leaves out; keys written here
	// win. internal/settings merges the two.
	Template string `toml:"template"`
	// Issuer is the provider's RFC 9207 issuer identifier: when set, every
	// authorization response must carry it as "iss" (mix-up defence).
	Issuer string `toml:"issuer"`

	// RefreshAhead: refresh the tokens of recently used integrations
	// before they expire, in the background, so callers never wait on a
	// refresh.
	RefreshAhead bool `toml:"refresh_ahead"`
	// RefreshTokenMaxIdle: refresh at least this often, for providers whose
	// refresh tokens die when unused (0 = off).
	RefreshTokenMaxIdle Duration `toml:"refresh_token_max_idle" zero:"off"`

	// Parsed forms of the URLs as written (nil when not written: a
	// template may supply them, see internal/settings.Providers).
	TokenEndpoint         *url.URL `toml:"-"`
	RevocationEndpoint    *url.URL `toml:"-"`
	APIBase               *url.URL `toml:"-"`
	AuthorizationEndpoint *url.URL `toml:"-"`
	// ClientSecret is read from ClientSecretFile in ModeDaemon (zero
	// otherwise).
	ClientSecret secret.String `toml:"-"`
	// RootCAs holds CAFile's certificates (only those: the provider is
	// pinned to its CA), loaded in ModeDaemon; nil means "use the system
	// roots".
	RootCAs *x509.CertPool `toml:"-"`
}

// ProviderNames returns the provider names, sorted.
func (c *Config) ProviderNames() []string {
	names := make([]string, 0, len(c.Providers))
	for n := range c.Providers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Load reads and checks the config file at path. Relative paths inside it
// are resolved against the file's directory.
func Load(path string, mode Mode) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot read", Err: stripPath(err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot read", Err: stripPath(err)}
	}
	if len(data) > maxConfigBytes {
		return nil, &Error{File: path, Msg: "file is larger than 1 MiB"}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot resolve directory", Err: err}
	}
	return parse(path, data, filepath.Dir(abs), mode)
}

// Parse checks a config document. Relative paths are resolved against
// baseDir ("" = the working directory). Errors name the file "<input>".
func Parse(data []byte, baseDir string, mode Mode) (*Config, error) {
	if baseDir == "" {
		baseDir = "."
	}
	abs, err := filepath.Abs(baseDir)
	if err != nil {
		return nil, &Error{File: inputName, Msg: "cannot resolve base directory", Err: err}
	}
	return parse(inputName, data, abs, mode)
}

func parse(file string, data []byte, dir string, mode Mode) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, &Error{File: file, Msg: "file is larger than 1 MiB"}
	}
	ix, cfg, err := decode(file, data)
	if err != nil {
		return nil, err
	}
	cfg.File, cfg.Dir, cfg.ix = file, dir, ix
	cfg.HSM.file = file
	cfg.Storage.file = file
	v := &validator{cfg: cfg, ix: ix, mode: mode}
	if verr := v.run(); verr != nil {
		return nil, verr
	}
	return cfg, nil
}

// errDecoderPanic is the message FuzzParse looks for: production fails
// closed, the fuzzer still reports the panic.
const errDecoderPanic = "cannot decode TOML (decoder failure)"

// decode runs the pre-pass and the strict decoder. They are third-party
// code fed with untrusted bytes; should either ever panic, fail closed with
// a one-line error instead of a stack trace.
func decode(file string, data []byte) (ix keyIndex, cfg *Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			ix, cfg, err = nil, nil, &Error{File: file, Msg: errDecoderPanic}
		}
	}()
	ix, ierr := buildIndex(file, data)
	if ierr != nil {
		return nil, nil, ierr
	}
	cfg = defaults()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if derr := dec.Decode(cfg); derr != nil {
		return nil, nil, translate(file, derr)
	}
	return ix, cfg, nil
}

// defaults fills the keys whose zero value is not their default and that
// live in tables that always exist. Optional tables and per-provider values
// get theirs in the validator, which can see what was written.
func defaults() *Config {
	return &Config{
		Server: ServerConfig{
			HTTP3:           true,
			RequestTimeout:  NewDuration(DefaultRequestTimeout),
			MaxBodyBytes:    DefaultMaxBodyBytes,
			ShutdownTimeout: NewDuration(DefaultShutdownTimeout),
		},
		HSM:     HSMConfig{MaxSessions: DefaultMaxSessions, HealthInterval: NewDuration(DefaultHSMHealthInterval)},
		Storage: StorageConfig{Backend: BackendBBolt, LockTimeout: NewDuration(DefaultLockTimeout), MaxConnections: DefaultMaxConnections},
		Audit: AuditConfig{VerifyOnStart: true, CheckpointInterval: NewDuration(DefaultCheckpointInterval),
			Sync: SyncBatch, SyncInterval: NewDuration(DefaultSyncInterval)},
		Harden:    HardenConfig{NoNewPrivs: true},
		Lifecycle: defaultLifecycle(),
	}
}
