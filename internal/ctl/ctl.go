// Package ctl is vaultctl: the admin CLI. `init` works on the HSM and the
// database directly; every other command is an mTLS client of the API
// (vaultd/client), except `audit verify`, which checks a file offline.
package ctl

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/devpki"
	"github.com/vaultd/vaultd/internal/secret"
	"github.com/vaultd/vaultd/internal/settings"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/config"
)

// Version is set at build time.
var Version = "dev"

const usage = `usage: vaultctl <command> [flags]

Set-up (local, needs the HSM PIN and the database path):
  init -config FILE                  create the KEK and the audit signing key in the HSM if absent,
                                     and the database (bbolt: the file; postgres: the schema, created
                                     or migrated); run it again after an upgrade: it adds only what
                                     is missing
  audit pubkey -config FILE          print the audit checkpoint public key (PEM); keep a copy off-host
  migrate -config FILE -from-bbolt PATH
                                     copy a stopped single node's bbolt database (state and the
                                     audit chain, byte for byte) into the EMPTY PostgreSQL store of
                                     [storage] backend = "postgres" (run init first); the copied
                                     chain is verified
  kek-info -config FILE              show KEK versions and their protection attributes
  kek-rotate -config FILE            create the next KEK version in the HSM (then: reload vaultd,
                                     vaultctl tenant rewrap ID for every tenant, retire the old KEK)

API commands (mTLS; flags or VAULTCTL_SERVER/_CERT/_KEY/_CA/_TENANT_CONTEXT):
  tenant create ID | get ID | list | rotate-dek ID | rewrap ID   (operator)
  providers                                                  (operator)
  integration list | get ID | delete ID                      (app)
  integration store ID -provider NAME -token-file FILE       (app; FILE holds the OAuth token response JSON)
  backup -out FILE                                           (operator; online snapshot, verified before it is kept)
  audit export [-tenant T] [-integration I] [-action A] [-since RFC3339] [-until RFC3339] [-limit N]   (auditor)

Offline:
  audit verify [-from-anchor SEQ:HASH] [-pubkey PEMFILE] FILE...
                                     check the hash chain across NDJSON files in order (export pages,
                                     rotated mirror segments, .gz too) from seq 1, or after SEQ:HASH;
                                     with -pubkey also every signed checkpoint
  providers catalog [-json]          list the built-in provider templates ([providers.NAME] template = ...);
                                     -json prints the whole catalog
  dev-pki DIR                        write a throwaway dev PKI (CA, server, clients); not for production
  version
`

// Run is vaultctl's main.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "init":
		return cmdInit(ctx, args[1:], stdout, stderr)
	case "migrate":
		return cmdMigrate(ctx, args[1:], stdout, stderr)
	case "kek-info":
		return cmdKEKInfo(ctx, args[1:], stdout, stderr)
	case "kek-rotate":
		return cmdKEKRotate(ctx, args[1:], stdout, stderr)
	case "tenant", "tenants":
		return cmdTenant(ctx, args[1:], stdout, stderr)
	case "integration", "integrations":
		return cmdIntegration(ctx, args[1:], stdout, stderr)
	case "providers":
		if len(args) > 1 && args[1] == "catalog" {
			return cmdProvidersCatalog(args[2:], stdout, stderr)
		}
		c, _, err := apiClient(args[1:], stderr)
		if err != nil {
			return err
		}
		raw, err := c.Providers(ctx)
		if err != nil {
			return err
		}
		return printJSON(stdout, raw)
	case "audit":
		return cmdAudit(ctx, args[1:], stdout, stderr)
	case "backup":
		return cmdBackup(ctx, args[1:], stdout, stderr)
	case verifyCommand:
		return cmdVerifyBackup(ctx, args[1:], stdout)
	case "dev-pki":
		if len(args) != 2 {
			return errors.New("usage: vaultctl dev-pki DIR")
		}
		return devpki.Generate(args[1], []devpki.Client{
			{Name: "app", CN: "app", URI: "spiffe://vaultd.dev/app/demo"},
			{Name: "operator", CN: "ops-admin"},
			{Name: "auditor", CN: "auditor"},
		})
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "vaultctl", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	pin, err := cfg.HSM.LoadPIN()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	version, created, err := initKEK(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return err
	}
	var keyEvents []audit.KeyCreated
	if created {
		keyEvents = append(keyEvents, audit.KeyCreated{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK,
			Label: cfg.HSM.KEKLabel, Version: version})
		fmt.Fprintf(stdout, "KEK %q version %d created in token %q (AES-256, sensitive, non-extractable)\n", cfg.HSM.KEKLabel, version, cfg.HSM.TokenLabel)
	} else {
		fmt.Fprintf(stdout, "KEK %q present (current version %d); unchanged\n", cfg.HSM.KEKLabel, version)
	}
	// Also on an installation from before signed checkpoints: vaultd
	// refuses to start without this key.
	auditLabel := cfg.HSM.KEKLabel + "-audit"
	created, err = initAuditKey(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return err
	}
	if created {
		keyEvents = append(keyEvents, audit.KeyCreated{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindAuditSigning,
			Label: auditLabel})
		// The token chose the kind: ECDSA P-256, or RSA-PSS 3072 without EC.
		kind := "ECDSA P-256 or RSA 3072"
		if pub := initAuditPub(ctx, cfg, pin, log); pub != nil {
			switch alg, _ := audit.AlgOf(pub); alg {
			case audit.AlgES256:
				kind = "ES256: ECDSA P-256"
			case audit.AlgPS256:
				kind = "PS256: RSA-PSS 3072"
			}
		}
		fmt.Fprintf(stdout, "audit signing key %q created in token %q (%s, sensitive, non-extractable); print it with `vaultctl audit pubkey`\n", auditLabel, cfg.HSM.TokenLabel, kind)
	} else {
		fmt.Fprintf(stdout, "audit signing key %q present; unchanged\n", auditLabel)
	}
	// The scheme vaultd will wrap with, checked by a round trip now rather
	// than at the first tenant.
	scheme, err := keyringScheme(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrapping scheme %s (negotiated with token %q; wrap/unwrap round trip passed)\n", scheme, cfg.HSM.TokenLabel)
	if scheme == hsm.SchemeAESCBCHMAC {
		fmt.Fprintf(stdout, "MAC key %q present (HMAC-SHA256, sensitive, non-extractable)\n", cfg.HSM.KEKLabel+"-mac")
	}
	if cfg.Storage.Backend == config.BackendPostgres {
		if err := initPostgres(ctx, cfg, stdout, log); err != nil {
			return err
		}
	} else if err := initBolt(ctx, cfg, stdout, log); err != nil {
		return err
	}
	msg, err := recordKeyEvents(ctx, cfg, keyEvents, initAuditPub(ctx, cfg, pin, log), log)
	if err != nil {
		return err
	}
	if msg != "" {
		fmt.Fprintln(stdout, msg)
	}
	return nil
}

// initBolt creates the bbolt database file if absent.
func initBolt(ctx context.Context, cfg *config.Config, stdout io.Writer, log *slog.Logger) error {
	_, statErr := os.Stat(cfg.Storage.Path)
	st, err := bolt.Open(ctx, cfg.Storage.Path, bolt.Options{LockTimeout: cfg.Storage.LockTimeout.Duration(), Logger: log})
	switch {
	case errors.Is(err, storage.ErrLocked):
		// A running vaultd has it: it exists. The key events wait beside it.
		fmt.Fprintf(stdout, "database %s in use by a running vaultd; unchanged\n", cfg.Storage.Path)
	case err != nil:
		return err
	default:
		if err := st.Close(); err != nil {
			return err
		}
		if statErr != nil {
			fmt.Fprintf(stdout, "database %s created\n", cfg.Storage.Path)
		} else {
			fmt.Fprintf(stdout, "database %s present; unchanged\n", cfg.Storage.Path)
		}
	}
	return nil
}

// initAuditPub is the audit checkpoint key for checking the trail before
// init appends to it; nil (chain only) when it cannot be read.
func initAuditPub(ctx context.Context, cfg *config.Config, pin secret.String, log *slog.Logger) crypto.PublicKey {
	kr, err := openKeyring(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return nil
	}
	defer kr.Close()
	pub, err := auditPublicKey(ctx, kr)
	if err != nil {
		return nil
	}
	return pub
}

// loadConfig loads the config file as the local commands need it, and
// refuses what vaultd would refuse in it: the values other packages own
// (roles, auth styles, hardening) are read by internal/settings.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, config.ModeInit)
	if err != nil {
		return nil, err
	}
	if err := settings.Check(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// localKeyring parses `-config FILE` (no other argument), loads the config
// and the PIN, and opens the keyring: the start of every local HSM command.
func localKeyring(ctx context.Context, name string, args []string, stderr io.Writer) (hsm.Keyring, *config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() != 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return nil, nil, err
	}
	pin, err := cfg.HSM.LoadPIN()
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kr, err := openKeyring(ctx, &cfg.HSM, pin, log)
	if err != nil {
		return nil, nil, err
	}
	return kr, cfg, nil
}

// cmdKEKRotate creates KEK version current+1 in the HSM, with the same
// attributes as init (sensitive, non-extractable). Old versions stay: the
// DEKs they wrap keep working until `tenant rewrap` moves them.
func cmdKEKRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	kr, cfg, err := localKeyring(ctx, "kek-rotate", args, stderr)
	if err != nil {
		return err
	}
	defer kr.Close()
	v, err := rotateKEK(ctx, kr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "KEK %q version %d created in token %q (AES-256, sensitive, non-extractable)\n", cfg.HSM.KEKLabel, v, cfg.HSM.TokenLabel)
	pub, _ := auditPublicKey(ctx, kr)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	msg, err := recordKeyEvents(ctx, cfg, []audit.KeyCreated{{Time: time.Now(), Actor: audit.ActorVaultctl, Kind: audit.KeyKindKEK,
		Label: cfg.HSM.KEKLabel, Version: v}}, pub, log)
	if err != nil {
		// The key exists: say so, and that its event is missing.
		return fmt.Errorf("KEK version %d created, but its key.create event was not recorded: %w", v, err)
	}
	fmt.Fprintln(stdout, msg)
	fmt.Fprintln(stdout, "next: reload vaultd (systemctl reload vaultd), then run `vaultctl tenant rewrap ID` for every tenant")
	return nil
}

func cmdKEKInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	kr, _, err := localKeyring(ctx, "kek-info", args, stderr)
	if err != nil {
		return err
	}
	defer kr.Close()
	info, err := kekInfo(ctx, kr)
	if err != nil {
		return err
	}
	return printJSON(stdout, info)
}

// apiFlags are the connection flags of API commands.
type apiFlags struct {
	server, cert, key, ca, tenantContext string
	timeout                              time.Duration
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.server, "server", envOr("VAULTCTL_SERVER", "https://127.0.0.1:8443"), "vaultd API URL")
	fs.StringVar(&a.cert, "cert", os.Getenv("VAULTCTL_CERT"), "client certificate (PEM)")
	fs.StringVar(&a.key, "key", os.Getenv("VAULTCTL_KEY"), "client key (PEM)")
	fs.StringVar(&a.ca, "ca", os.Getenv("VAULTCTL_CA"), "CA of vaultd's server certificate (PEM)")
	fs.StringVar(&a.tenantContext, "tenant-context", os.Getenv("VAULTCTL_TENANT_CONTEXT"), "tenant-context JWT (for principals without a fixed tenant)")
	fs.DurationVar(&a.timeout, "timeout", 60*time.Second, "request timeout")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// apiClient parses connection flags (anywhere in args) and returns the
// client and the remaining positional args.
func apiClient(args []string, stderr io.Writer) (*client.Client, []string, error) {
	return apiClientWith(args, stderr, nil)
}

func apiClientWith(args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (*client.Client, []string, error) {
	fs := flag.NewFlagSet("vaultctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a apiFlags
	a.register(fs)
	if extra != nil {
		extra(fs)
	}
	// Allow flags after positionals: parse repeatedly.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	c, err := client.New(a.server, client.Options{CertFile: a.cert, KeyFile: a.key, CAFile: a.ca, TenantContext: a.tenantContext, Timeout: a.timeout})
	if err != nil {
		return nil, nil, err
	}
	return c, pos, nil
}

func printJSON(w io.Writer, v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			return err
		}
		v = x
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdTenant(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, pos, err := apiClient(args, stderr)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return errors.New("usage: vaultctl tenant create ID | get ID | list | rotate-dek ID | rewrap ID")
	}
	switch {
	case pos[0] == "list" && len(pos) == 1:
		ts, err := c.ListTenants(ctx)
		if err != nil {
			return err
		}
		return printJSON(stdout, ts)
	case len(pos) == 2 && pos[0] == "create":
		t, err := c.CreateTenant(ctx, pos[1])
		if err != nil {
			return err
		}
		return printJSON(stdout, t)
	case len(pos) == 2 && pos[0] == "get":
		t, err := c.GetTenant(ctx, pos[1])
		if err != nil {
			return err
		}
		return printJSON(stdout, t)
	case len(pos) == 2 && pos[0] == "rotate-dek":
		t, err := c.RotateDEK(ctx, pos[1])
		if err != nil {
			return err
		}
		return printJSON(stdout, t)
	case len(pos) == 2 && pos[0] == "rewrap":
		t, err := c.RewrapTenant(ctx, pos[1])
		if err != nil {
			return err
		}
		// The count is printed even when it is 0: "nothing left under an
		// old KEK" is the answer an operator repeating rewrap looks for.
		return printJSON(stdout, t)
	}
	return errors.New("usage: vaultctl tenant create ID | get ID | list | rotate-dek ID | rewrap ID")
}

func cmdIntegration(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var provider, tokenFile string
	c, pos, err := apiClientWith(args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&provider, "provider", "", "provider name (store)")
		fs.StringVar(&tokenFile, "token-file", "", "file with the OAuth token response JSON (store); - for stdin")
	})
	if err != nil {
		return err
	}
	const u = "usage: vaultctl integration list | get ID | delete ID | store ID -provider NAME -token-file FILE"
	if len(pos) == 0 {
		return errors.New(u)
	}
	switch {
	case pos[0] == "list" && len(pos) == 1:
		ins, err := c.ListIntegrations(ctx)
		if err != nil {
			return err
		}
		return printJSON(stdout, ins)
	case pos[0] == "get" && len(pos) == 2:
		in, err := c.GetIntegration(ctx, pos[1])
		if err != nil {
			return err
		}
		return printJSON(stdout, in)
	case pos[0] == "delete" && len(pos) == 2:
		revoked, err := c.DeleteIntegration(ctx, pos[1])
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]bool{"revoked_at_provider": revoked})
	case pos[0] == "store" && len(pos) == 2:
		if provider == "" || tokenFile == "" {
			return errors.New(u)
		}
		var data []byte
		if tokenFile == "-" {
			data, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		} else {
			data, err = os.ReadFile(tokenFile)
		}
		if err != nil {
			return fmt.Errorf("read token file: %w", err)
		}
		in, err := c.StoreToken(ctx, pos[1], provider, json.RawMessage(data))
		if err != nil {
			return err
		}
		return printJSON(stdout, in)
	}
	return errors.New(u)
}

func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: vaultctl audit export [filters] | pubkey -config FILE | verify [-from-anchor SEQ:HASH] [-pubkey PEMFILE] FILE [FILE ...]")
	}
	switch args[0] {
	case "verify":
		return cmdAuditVerify(args[1:], stdout, stderr)
	case "pubkey":
		return cmdAuditPubkey(ctx, args[1:], stdout, stderr)
	case "export":
		var q client.AuditQuery
		var since, until string
		c, pos, err := apiClientWith(args[1:], stderr, func(fs *flag.FlagSet) {
			fs.StringVar(&q.TenantID, "tenant", "", "tenant id filter")
			fs.StringVar(&q.IntegrationID, "integration", "", "integration id filter")
			fs.StringVar(&q.Action, "action", "", "action filter")
			fs.StringVar(&since, "since", "", "RFC 3339 lower bound")
			fs.StringVar(&until, "until", "", "RFC 3339 upper bound")
			fs.IntVar(&q.Limit, "limit", 0, "maximum events")
		})
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return fmt.Errorf("unexpected argument %q", strings.Join(pos, " "))
		}
		if since != "" {
			if q.Since, err = time.Parse(time.RFC3339Nano, since); err != nil {
				return fmt.Errorf("-since: %w", err)
			}
		}
		if until != "" {
			if q.Until, err = time.Parse(time.RFC3339Nano, until); err != nil {
				return fmt.Errorf("-until: %w", err)
			}
		}
		return c.Audit(ctx, q, stdout)
	}
	return errors.New("usage: vaultctl audit export [filters] | pubkey -config FILE | verify [-from-anchor SEQ:HASH] [-pubkey PEMFILE] FILE [FILE ...]")
}
