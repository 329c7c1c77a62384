//go:build cgo

package ctl

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/softhsmtest"
)

// vaultctl init names the wrapping scheme it negotiated (after a round
// trip), a second init changes nothing, and kek-info reports the scheme
// on every KEK version. SoftHSMv2 has AES-GCM, the strongest.
func TestInitAndKEKInfoNameTheScheme(t *testing.T) {
	conf := softhsmtest.NewConf(t)
	tok := conf.NewToken(t)
	t.Setenv("SOFTHSM2_CONF", conf.Path)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hsm.pin"), []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vaultd.toml")
	doc := "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"\nclient_ca = \"ca.crt\"\n" +
		"[hsm]\nmodule = \"" + tok.Module + "\"\ntoken_label = \"" + tok.Label + "\"\npin_file = \"hsm.pin\"\nkek_label = \"k\"\n" +
		"[storage]\npath = \"vault.db\"\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `wrapping scheme AES-GCM (negotiated with token "` + tok.Label + `"; wrap/unwrap round trip passed)`
	for i := range 2 {
		var out bytes.Buffer
		if err := Run(t.Context(), []string{"init", "-config", cfg}, &out, io.Discard); err != nil {
			t.Fatalf("init #%d: %v\n%s", i, err, out.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Fatalf("init #%d output lacks %q:\n%s", i, want, out.String())
		}
		if i == 1 && strings.Contains(out.String(), "created") {
			t.Fatalf("second init created something:\n%s", out.String())
		}
	}
	var out bytes.Buffer
	if err := Run(t.Context(), []string{"kek-info", "-config", cfg}, &out, io.Discard); err != nil {
		t.Fatalf("kek-info: %v", err)
	}
	var infos []hsm.KEKInfo
	if err := json.Unmarshal(out.Bytes(), &infos); err != nil || len(infos) != 1 || infos[0].Scheme != "AES-GCM" {
		t.Fatalf("kek-info = %s (%v)", out.String(), err)
	}
}
