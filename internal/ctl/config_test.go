package ctl

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalCommandsRefuseWhatVaultdRefuses: the local commands read the
// config file's role names, auth styles and hardening values like vaultd
// does, so a file vaultd would refuse is refused here too, with the same
// line, before the HSM is touched.
func TestLocalCommandsRefuseWhatVaultdRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hsm.pin"), []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"\nclient_ca = \"ca.crt\"\n" +
		"[hsm]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"t\"\npin_file = \"hsm.pin\"\nkek_label = \"k\"\n" +
		"[storage]\npath = \"vault.db\"\n"
	for _, tc := range []struct{ doc, want string }{
		{"[[principals]]\nsubject_cn = \"x\"\nroles = [\"admin\"]\n", "line 15: principals[0].roles[0]: not a role"},
		{"[harden]\nmlock = \"sometimes\"\n", "line 14: harden.mlock: not allowed"},
		{"[harden]\nextra_syscalls = [\"not_a_syscall_xyz\"]\n", "line 14: harden.extra_syscalls[0]: not a syscall on"},
	} {
		cfg := filepath.Join(dir, "vaultd.toml")
		if err := os.WriteFile(cfg, []byte(base+tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"init", "kek-info"} {
			err := Run(t.Context(), []string{cmd, "-config", cfg}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", cmd, err, tc.want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "vault.db")); err == nil {
			t.Fatal("init created the database from a refused config")
		}
	}
}
