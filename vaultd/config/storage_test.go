package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pgStorage is base's [storage] for the postgres backend.
const pgStorage = "[storage]\nbackend  = \"postgres\"\ndsn_file = \"postgres.dsn\"\n"

const testDSN = "postgres://vaultd:hunter2-very-secret@db.internal:5432/vaultd?sslmode=verify-full"

func TestStorageBackendDefault(t *testing.T) {
	cfg, err := Parse([]byte(base), t.TempDir(), ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Backend != BackendBBolt || cfg.Storage.DSNFile != "" {
		t.Errorf("storage = %+v, want the bbolt default", cfg.Storage)
	}
}

func TestStoragePostgres(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	dir := env(t)
	write(t, dir, "postgres.dsn", testDSN+"\n")
	path := writeConfig(t, dir, edit(t, "[storage]\npath = \"data/vault.db\"\n", pgStorage))
	for _, mode := range []Mode{ModeDaemon, ModeInit, ModeSyntax} {
		cfg, err := Load(path, mode)
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if cfg.Storage.Backend != BackendPostgres || cfg.Storage.DSNFile != filepath.Join(dir, "postgres.dsn") {
			t.Errorf("%v: storage = %+v", mode, cfg.Storage)
		}
		if cfg.Storage.Path != "" {
			t.Errorf("%v: path = %q, want none", mode, cfg.Storage.Path)
		}
		dsn, err := cfg.Storage.LoadDSN()
		if err != nil || dsn.Reveal() != testDSN {
			t.Errorf("%v: LoadDSN = %q, %v (one trailing newline stripped)", mode, dsn.Reveal(), err)
		}
		if strings.Contains(dsn.String(), "hunter2") {
			t.Errorf("DSN prints its password: %s", dsn)
		}
	}

	// path may stay from a bbolt set-up: unused, not checked.
	withPath := writeConfig(t, dir, edit(t, "[storage]\npath = \"data/vault.db\"\n",
		pgStorage+"path = \"nowhere/vault.db\"\n"))
	if _, err := Load(withPath, ModeDaemon); err != nil {
		t.Errorf("postgres with an unused path: %v", err)
	}
}

func TestStoragePostgresCredential(t *testing.T) {
	dir := env(t)
	creds := t.TempDir()
	t.Setenv(credentialsDirectoryEnv, creds)
	write(t, creds, credentialDSN, "host=db.internal user=vaultd password=from-credential\r\n")
	// dsn_file omitted: the credential is the only source.
	path := writeConfig(t, dir, edit(t, "[storage]\npath = \"data/vault.db\"\n", "[storage]\nbackend = \"postgres\"\n"))
	cfg, err := Load(path, ModeDaemon)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := cfg.Storage.LoadDSN()
	if err != nil || dsn.Reveal() != "host=db.internal user=vaultd password=from-credential" {
		t.Fatalf("credential: %q %v", dsn.Reveal(), err)
	}
	// The credential wins over dsn_file.
	write(t, dir, "postgres.dsn", testDSN)
	path = writeConfig(t, dir, edit(t, "[storage]\npath = \"data/vault.db\"\n", pgStorage))
	if cfg, err = Load(path, ModeDaemon); err != nil {
		t.Fatal(err)
	}
	if dsn, err = cfg.Storage.LoadDSN(); err != nil || !strings.Contains(dsn.Reveal(), "from-credential") {
		t.Errorf("credential over dsn_file: %q %v", dsn.Reveal(), err)
	}
	// A credential present but unusable is an error, not a fall-back.
	if err := os.Remove(filepath.Join(creds, credentialDSN)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(creds, credentialDSN), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path, ModeDaemon)
	checkErrShape(t, err, path)
}

func TestStorageValidation(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	dir := env(t)
	write(t, dir, "postgres.dsn", testDSN)
	old := "[storage]\npath = \"data/vault.db\"\n"
	for _, tc := range []struct {
		name, storage, want string
		mode                Mode
	}{
		{"unknown backend", "[storage]\nbackend = \"mysql\"\npath = \"data/vault.db\"\n", `storage.backend: must be "bbolt" or "postgres"`, ModeSyntax},
		{"empty backend", "[storage]\nbackend = \"\"\npath = \"data/vault.db\"\n", `storage.backend: must be`, ModeSyntax},
		{"dsn_file with bbolt", "[storage]\npath = \"data/vault.db\"\ndsn_file = \"postgres.dsn\"\n", `storage.dsn_file: only used with backend = "postgres"`, ModeSyntax},
		{"bbolt needs path", "[storage]\nbackend = \"bbolt\"\n", "storage.path: required", ModeSyntax},
		{"empty dsn_file", "[storage]\nbackend = \"postgres\"\ndsn_file = \"\"\n", "storage.dsn_file: must not be empty", ModeSyntax},
		{"no DSN source", "[storage]\nbackend = \"postgres\"\n", "no PostgreSQL DSN source", ModeDaemon},
		{"no DSN source (init)", "[storage]\nbackend = \"postgres\"\n", "no PostgreSQL DSN source", ModeInit},
		{"dsn_file absent", "[storage]\nbackend = \"postgres\"\ndsn_file = \"missing.dsn\"\n", "storage.dsn_file: unusable file", ModeDaemon},
		{"dsn_file a directory", "[storage]\nbackend = \"postgres\"\ndsn_file = \"data\"\n", "storage.dsn_file: unusable file", ModeInit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, edit(t, old, tc.storage))
			_, err := Load(path, tc.mode)
			checkErrShape(t, err, path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Syntax mode touches no file: a missing DSN file is fine there.
	path := writeConfig(t, dir, edit(t, old, "[storage]\nbackend = \"postgres\"\ndsn_file = \"missing.dsn\"\n"))
	if _, err := Load(path, ModeSyntax); err != nil {
		t.Errorf("syntax mode: %v", err)
	}
}

func TestLoadDSNErrors(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	dir := env(t)
	path := writeConfig(t, dir, edit(t, "[storage]\npath = \"data/vault.db\"\n", pgStorage))
	cfg, err := Load(path, ModeSyntax)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content *string
		want    string
		is      error
	}{
		{"absent", nil, "storage: cannot read the PostgreSQL DSN: open " + filepath.Join(dir, "postgres.dsn"), os.ErrNotExist},
		{"empty", ptr(""), "file is empty", ErrSecretEmpty},
		{"only newline", ptr("\n"), "file is empty", ErrSecretEmpty},
		{"too long", ptr(testDSN + strings.Repeat("x", maxDSNBytes)), "file is too large for a secret", ErrSecretTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(filepath.Join(dir, "postgres.dsn"))
			if tc.content != nil {
				write(t, dir, "postgres.dsn", *tc.content)
			}
			dsn, err := cfg.Storage.LoadDSN()
			checkErrShape(t, err, path)
			if !dsn.IsZero() {
				t.Error("DSN returned with an error")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Errorf("got %v, want %q and errors.Is %v", err, tc.want, tc.is)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error quotes the DSN: %v", err)
			}
		})
	}
	t.Run("no source", func(t *testing.T) {
		cfg, err := Parse([]byte(edit(t, "[storage]\npath = \"data/vault.db\"\n", "[storage]\nbackend = \"postgres\"\n")), t.TempDir(), ModeSyntax)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cfg.Storage.LoadDSN()
		checkErrShape(t, err, "<input>")
		if err == nil || !strings.Contains(err.Error(), "no PostgreSQL DSN source") {
			t.Errorf("got %v", err)
		}
	})
}

// max_connections sizes each node's PostgreSQL pool: 16 when absent, the
// written value when in range, refused at its key and line when out of it
// (with either backend, like lock_timeout: a typo is a typo), and unused
// but accepted with bbolt.
func TestStorageMaxConnections(t *testing.T) {
	t.Setenv(credentialsDirectoryEnv, "")
	dir := env(t)
	write(t, dir, "postgres.dsn", testDSN)
	old := "[storage]\npath = \"data/vault.db\"\n"
	for _, tc := range []struct {
		name, storage string
		want          int
	}{
		{"postgres default", pgStorage, DefaultMaxConnections},
		{"postgres set", pgStorage + "max_connections = 40\n", 40},
		{"postgres lowest", pgStorage + "max_connections = 2\n", 2},
		{"postgres highest", pgStorage + "max_connections = 1000\n", 1000},
		{"bbolt, unused", old + "max_connections = 64\n", 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, dir, edit(t, old, tc.storage)), ModeDaemon)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Storage.MaxConnections != tc.want {
				t.Errorf("max_connections = %d, want %d", cfg.Storage.MaxConnections, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, storage, want string }{
		{"one", pgStorage + "max_connections = 1\n", `line 16: storage.max_connections: must be between 2 and 1000`},
		{"zero", pgStorage + "max_connections = 0\n", `storage.max_connections: must be between 2 and 1000`},
		{"negative", pgStorage + "max_connections = -16\n", `storage.max_connections: must be between 2 and 1000`},
		{"too many", pgStorage + "max_connections = 1001\n", `storage.max_connections: must be between 2 and 1000`},
		{"bbolt too many", old + "max_connections = 16000\n", `storage.max_connections: must be between 2 and 1000`},
		{"a string", pgStorage + "max_connections = \"16\"\n", `key "storage.max_connections": expected an integer, not string`},
		{"a float", pgStorage + "max_connections = 16.5\n", `key "storage.max_connections": expected an integer`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, edit(t, old, tc.storage))
			_, err := Load(path, ModeSyntax)
			checkErrShape(t, err, path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
