// Package config loads and checks the vaultd configuration file (TOML).
//
// The file is decoded strictly: a key that is not listed below, or not
// written exactly as listed (keys are lower case), is an error naming the
// key and its line; so is a TOML syntax error, a value of the wrong type, or
// a table written twice. Every error is one line that starts with
// "config <file>:" and matches ErrInvalid. Errors never contain a secret:
// the HSM PIN and client secrets live in their own files, whose contents are
// never formatted, and no value from the config file is echoed either (only
// key names, and those only once the document is recognisably a vaultd
// config, so a secret file passed as -config is not quoted back).
//
// Load and Parse take a Mode: ModeDaemon (vaultd: every file the daemon
// needs must be usable; client secrets and provider CA files are read),
// ModeInit (vaultctl init: HSM module, PIN source, storage directory) or
// ModeSyntax (no file access). Relative paths are resolved against the
// directory of the config file.
//
// Some values are words of another package's vocabulary: the [harden]
// modes and extra_syscalls (package harden), principal roles (policy, with
// the rules that tie roles to a tenant) and a provider's auth_style
// (oauth). This package keeps them as written and refuses only an
// explicitly empty one; internal/settings reads them with their owner's
// parser (vaultd when it starts or reloads, vaultctl when it loads the
// file) and reports a refusal the same way, at the key's line
// (Config.KeyError).
//
// Durations are Go duration strings ("30s", "5m", "1h") or whole days
// ("90d"), and must be positive, except where a key says "0" turns it off
// ("0", "0s" and "0d" all mean off there); a bare number is an error.
// testdata/full.toml is a commented example with every key.
//
// # Key reference
//
//	config_version   optional integer, default 1; no other value is accepted.
//
// [server]
//
//	listen           required. host:port (numeric port) of the API: TCP for HTTP/1.1
//	                 and HTTP/2 over TLS 1.3 with client certificates, UDP for HTTP/3.
//	http3            bool, default true: also serve HTTP/3 on the UDP port.
//	tls_cert         required. Server certificate chain (PEM).
//	tls_key          required. Server private key (PEM).
//	client_ca        required. CA bundle (PEM) every API client certificate must chain to.
//	ops_listen       optional, "" = off. host:port of the plain-HTTP ops listener
//	                 (/healthz, /readyz, /metrics). It has no TLS and no authentication,
//	                 so it must be a loopback address: 127.0.0.0/8, ::1 or localhost
//	                 (another name may resolve anywhere; an empty host, ":9090", is
//	                 every interface). Must differ from listen.
//	ops_allow_non_loopback
//	                 bool, default false: true lets ops_listen be any address (a
//	                 management network). Then filter who reaches the port: anyone
//	                 who does reads /metrics and probes readiness.
//	request_timeout  duration, default "60s": overall limit of one outbound proxy or
//	                 execute call.
//	max_body_bytes   integer, default 10485760 (10 MiB), at most 1 GiB: limit of
//	                 request bodies vaultd buffers (store_token, execute).
//	shutdown_timeout duration, default "30s": how long SIGTERM waits for requests to drain.
//
// [hsm]
//
//	module           required. Path of the PKCS#11 module (.so).
//	token_label      required. Label of the token (at most 32 bytes).
//	pin_file         file holding the user PIN. $CREDENTIALS_DIRECTORY/hsm-pin (systemd
//	                 LoadCredential=hsm-pin:...) takes precedence when that file exists;
//	                 pin_file may be omitted when the credential is always provided.
//	                 One trailing "\n" or "\r\n" is not part of the PIN; an empty PIN is
//	                 an error.
//	kek_label        required. CKA_LABEL of the key-encryption key objects.
//	max_sessions     integer 1-1024, default 8: size of the PKCS#11 session pool.
//	wrap_scheme      optional: "aes-gcm", "aes-kwp" or "aes-cbc-hmac" pins the wrapping
//	                 scheme instead of negotiating the strongest the token offers
//	                 (docs/hsm.md); a token without its mechanisms is refused at start.
//	health_interval  duration 1s-5m, default "10s": how often vaultd checks the HSM (a
//	                 round trip, the session's login, the current KEK object) and the
//	                 store. A failed HSM check evicts every cached plaintext DEK, so
//	                 calls that need one are refused (503) until the HSM answers again.
//
// [storage]
//
//	backend          "bbolt" (default) or "postgres". bbolt: the embedded database file at
//	                 path, one vaultd node. postgres: a PostgreSQL database that any number
//	                 of vaultd nodes share (every node serves every route; one refresh per
//	                 integration across all nodes, under a PostgreSQL advisory lock).
//	path             required with bbolt: the database file; its directory must exist.
//	                 Unused with postgres (it may stay, and is not checked).
//	dsn_file         postgres only (refused with bbolt): file holding the connection string,
//	                 a libpq URL ("postgres://vaultd@db.internal/vaultd?sslmode=verify-full")
//	                 or key=value string. It may carry the password, so it is a secret like
//	                 the PIN: $CREDENTIALS_DIRECTORY/postgres-dsn (systemd
//	                 LoadCredential=postgres-dsn:...) takes precedence when that file exists,
//	                 dsn_file may be omitted when the credential is always provided, one
//	                 trailing "\n" or "\r\n" is not part of it, and neither errors nor logs
//	                 ever quote it. The schema is created and migrated by `vaultctl init`.
//	lock_timeout     duration, default "2s": wait for the database file lock on open (bbolt;
//	                 unused with postgres, where a refresh waits for another node's refresh
//	                 of the same integration as long as for one on its own node).
//	max_connections  integer 2-1000, default 16: size of each node's PostgreSQL connection
//	                 pool (postgres; unused with bbolt). At most half of it is ever lent to
//	                 refreshes holding their cross-node lock, so writes always have
//	                 connections. PostgreSQL's own max_connections must cover
//	                 max_connections x nodes, plus five per node for the background leases.
//
// [audit]
//
//	file             optional. Append-only NDJSON mirror of the audit trail for SIEM
//	                 shipping (its directory must exist). The trail itself is in the database.
//	verify_on_start  bool, default true: verify the hash chain in the database at start-up,
//	                 before the mirror is touched. The newest 4096 events are checked before
//	                 vaultd is ready and a break there refuses the start, naming the first
//	                 broken seq; older events are checked in the background, and a break
//	                 there is logged, shown as vaultd_audit_chain_broken_seq and refuses
//	                 every audited operation. Set false only to run a vault whose broken
//	                 trail has been investigated and preserved.
//	checkpoint_interval duration 1s-24h, default "1m": while events are added, vaultd appends
//	                 a signed audit.checkpoint event at least this often, and one at shutdown:
//	                 an ECDSA P-256 signature, made in the HSM with the key 'vaultctl init'
//	                 creates (<kek_label>-audit), over the previous event's seq and hash. A
//	                 trail rewritten with recomputed hashes fails 'vaultctl audit verify
//	                 -pubkey' at its first checkpoint, and start-up verifies from the newest
//	                 checkpoint (docs/api.md, "Signed checkpoints").
//	sync             "batch" (default) or "always". always: every event is fsynced before
//	                 its answer, concurrent events sharing one fsync (group commit).
//	                 With storage backend "postgres" vaultd always behaves as "always"
//	                 (every event committed in PostgreSQL before its answer, concurrent
//	                 commits grouped by the database): a WAL beside one node could not
//	                 reach the chain the nodes share if that node never came back.
//	                 batch: events of token use (proxy.request) reach the kernel before
//	                 their answer and are fsynced within sync_interval; every state change
//	                 is fsynced with its change. Token-use events go through a WAL
//	                 beside the database ("<storage path>.audit-wal"), replayed at start.
//	sync_interval    duration 1ms-1s, default "10ms": the longest a token-use event waits
//	                 for its fsync in batch mode.
//	retention        duration, default "0" (keep all): events older than this are pruned
//	                 from the database, e.g. "400d" (whole days "Nd", or a Go duration such
//	                 as "720h"). A task runs a minute after start, then every 5 minutes
//	                 (every retention/2, at least 1s, when that is shorter), pruning in transactions of
//	                 1,000 events, up to 50,000 per run, never the newest event; each run
//	                 that pruned records one audit.prune event. Without archive_dir pruned
//	                 events are gone; the database keeps the seq and hash of the last one
//	                 (its anchor), so what remains still verifies.
//	archive_dir      optional absolute path (its parent must exist; created 0700): pruned
//	                 events are first written here as NDJSON segment files
//	                 audit-<first seq>-<last seq>.jsonl (0600, fsynced, never overwritten,
//	                 lexical order is chain order) that verify, with an export of what
//	                 remains, as one chain from seq 1: vaultctl audit verify SEGMENTS... EXPORT.
//
// [harden]
//
//	mlock            "required" (default) | "best-effort" | "off": lock process memory so
//	                 keys and tokens never reach swap; "required" refuses to start if
//	                 locking fails.
//	seccomp          "enforce" (default) | "log" | "off": syscall allow-list; "log" only
//	                 reports violations (for qualifying a new HSM vendor module).
//	extra_syscalls   array of syscall names (of this machine's architecture) to allow on
//	                 top of the built-in list, for vendor PKCS#11 modules. Default [].
//	no_new_privs     bool, default true: set PR_SET_NO_NEW_PRIVS.
//	dumpable         bool, default false: when false the process is not dumpable (no core
//	                 dumps, no ptrace by same-uid processes).
//
// [tenant_context] (optional; required when an app principal has tenant = "")
//
//	jwks_file        required. JWKS (JSON) with the keys tenant-context JWTs are verified with.
//	issuer           required. Expected "iss".
//	audience         required. Expected "aud".
//	tenant_claim     default "tenant_id": the claim that names the tenant.
//	max_lifetime     duration, default "5m": exp - iat must not exceed it.
//	clock_skew       duration, default "30s": tolerance when checking exp, iat and nbf.
//
// [[principals]] (zero or more; a request from any other certificate is refused)
//
//	uri_san          the client certificate's first URI SAN, e.g. a SPIFFE ID, or
//	subject_cn       its subject CN (used when it has no URI SAN). Exactly one of the two.
//	roles            one or more of "app", "operator", "auditor".
//	tenant           fixed tenant id, only for app and auditor principals (an operator
//	                 with a tenant is an error). For an app principal "" means the tenant
//	                 comes from a verified X-Tenant-Context JWT, which needs
//	                 [tenant_context]; for an auditor "" means every tenant.
//
// Two principals with the same uri_san, or the same subject_cn, are an error.
//
// [providers.NAME] (zero or more; NAME is 1-64 of a-z 0-9 _ -)
//
//	template               optional. A built-in provider template (list them with
//	                       `vaultctl providers catalog`): it supplies every URL,
//	                       auth_style, pkce, scope_separator, authorize_params and the
//	                       default scopes this table leaves out; keys written here win.
//	                       An unknown name is an error. Template URLs may hold {param}
//	                       placeholders (a Zendesk subdomain, an Entra tenant) filled per
//	                       connection from validated parameters; URLs written in this
//	                       file never hold placeholders.
//	token_url              required unless template is set. Token endpoint.
//	revocation_url         optional. RFC 7009 revocation endpoint.
//	api_base_url           required unless template is set. Base of proxied API calls and the egress boundary:
//	                       calls may reach only its scheme, host and port, under its path.
//	                       No query.
//	client_id              required.
//	client_secret_file     required. File holding the client secret; one trailing
//	                       newline is stripped.
//	auth_style             "basic" (default, HTTP Basic) | "body" (form parameters):
//	                       how the client authenticates at token_url.
//	scopes                 array of scope tokens: the provider's scope inventory; scopes
//	                       granted beyond it are reported as drift. Default [].
//	refresh_margin         duration, default "60s": refresh when the access token
//	                       expires within this margin.
//	default_token_lifetime duration, default "1h": lifetime assumed when a token
//	                       response has no expires_in.
//	timeout                duration, default "30s": limit of one call to the token or
//	                       revocation endpoint.
//	ca_file                optional. PEM certificates trusted for this provider's
//	                       token, revocation and API endpoints instead of the
//	                       system roots, and for no other provider.
//	authorization_url      optional. Authorization endpoint: with [connect], enables the
//	                       connect flow for this provider (a query is allowed).
//	grant                  "authorization_code" (default) | "client_credentials" (vaultd
//	                       fetches tokens with the client's own credentials; no
//	                       authorization_url).
//	pkce                   bool, default true (or the template's): send an S256 code
//	                       challenge.
//	issuer                 optional https URL: the provider's issuer identifier (RFC 9207).
//	                       When set, every authorization response must carry it as
//	                       "iss"; when not, an "iss" that is sent must have the
//	                       authorization endpoint's origin.
//	scope_separator        " " (default, or the template's) | ",": how scopes are joined
//	                       in the authorization request.
//	authorize_params       table of strings, default {}: extra static query parameters
//	                       of the authorization request (e.g. { access_type = "offline" }),
//	                       merged over the template's (a value "" removes the template's
//	                       parameter of that name). At most 32; names 1-64 and values
//	                       up to 256 printable ASCII characters; response_type, client_id,
//	                       redirect_uri, scope, state, code_challenge and
//	                       code_challenge_method are vaultd's own and refused.
//	refresh_ahead          bool, default false: refresh the tokens of recently used
//	                       integrations before they expire, in the background, so
//	                       callers never wait on a refresh.
//	refresh_token_max_idle duration, default "0" (off), else 1s-3650d: refresh at least
//	                       this often, for providers whose refresh tokens die when
//	                       unused (e.g. "60d").
//
// With a template, scopes (when written) replace the template's default scopes
// rather than add to them: keep a refresh token's scope (offline_access, ...)
// in the list.
//
// [connect] (optional; absent = no connect flow)
//
// The HTTPS listener browsers reach during a connect flow: TLS 1.2 or newer,
// server certificate only (no client certificate), serving only
// /connect/{secret} and /oauth/callback.
//
//	listen           required. host:port; must differ from server.listen and ops_listen.
//	public_url       required. The https origin browsers and providers see (https even
//	                 on loopback: the flow's cookie is Secure), lower-case host, no path
//	                 other than "/", no query, fragment or user info. The redirect URI to
//	                 register at every provider is public_url + "/oauth/callback".
//	tls_cert         optional, with tls_key (both or neither): certificate chain (PEM);
//	tls_key          default [server] tls_cert and tls_key.
//	session_ttl      duration 1s-24h, default "10m": how long a connect link and the flow
//	                 started from it stay valid.
//	return_to        required, non-empty array of URL prefixes a flow may send the browser
//	                 back to: absolute https URLs (http only for 127.0.0.1, ::1 and
//	                 localhost), lower-case host, no query, fragment or user info, each
//	                 listed once. A return_to URL is allowed when its scheme, host and
//	                 port equal a prefix's and its path starts with the prefix's path
//	                 ("/" when the prefix has none).
//
// [lifecycle] (optional; every key has a default)
//
//	idle_disconnect_after    duration, default "0" (off), else 1s-3650d: disconnect (revoke
//	                         at the provider and delete) integrations unused this long.
//	reauth_purge_after       duration, default "30d"; "0" = off, else 1s-3650d: delete
//	                         integrations that have been in reauthorization_required this long.
//	revocation_retry_for     duration 1s-365d, default "7d": a revocation the provider did not
//	                         confirm is retried (its token kept sealed for that only) this
//	                         long, then dropped and audited.
//	revocation_retry_initial duration 1s-1h, default "30s", at most revocation_retry_for: the
//	                         first retry delay of a failed revocation, doubling up to 1h.
//	score_threshold          integer 0-100, default 60: an integration whose health score is
//	                         below it is flagged.
//	sweep_interval           duration 1s-24h, default "1h": how often the lifecycle sweep runs.
//
// [[webhooks]] (zero to 16; notifications of state changes, Standard Webhooks)
//
// Endpoints come only from this file, never from the API.
//
//	url              required. https URL (http only for 127.0.0.1, ::1 and localhost: a
//	                 local relay), no user info or fragment; a query is allowed. Two
//	                 entries with the same url are an error. The entry's key (the
//	                 "webhook" of its deliveries) is the first 12 hex digits of
//	                 SHA-256(url), so it stays the same across reloads.
//	secret_file      required. File holding "whsec_" + standard base64 (padded or not) of
//	                 a 24-64 byte HMAC-SHA256 key; one trailing newline is stripped.
//	                 Read by vaultd (daemon mode) only; never printed.
//	tenants          array of tenant ids, default [] = every tenant. Events of no tenant
//	                 (key.rotated) go to every entry whose events match.
//	events           array of patterns, default ["*"]: a type, "<prefix>.*" (a prefix of
//	                 at least one type, e.g. "integration.*") or "*". The types:
//	                 integration.connected, integration.degraded,
//	                 integration.reauthorization_required, integration.recovered,
//	                 integration.disconnected, integration.scope_drift,
//	                 integration.flagged, tenant.disabled, tenant.offboarded,
//	                 key.rotated. An unknown one is an error listing them; [] is an error.
//	retry_schedule   array of 1-20 durations, each 1s-24h, default
//	                 ["5s", "5m", "30m", "2h", "5h", "10h"]: the delays before each retry;
//	                 after the last retry fails, the delivery is dead-lettered.
//	ca_file          optional. PEM certificates trusted for this endpoint instead of the
//	                 system roots, as for providers.
//
// Provider URLs must be absolute https URLs without user info or fragment;
// http is accepted only for the loopback hosts 127.0.0.1, ::1 and localhost
// (tests and the development stand-in).
package config
