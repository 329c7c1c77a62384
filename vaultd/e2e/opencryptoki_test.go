package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenCryptokiGoldenPath: the product's main job on openCryptoki's
// soft token (no AES-GCM, no AES key wrap, no EC) under seccomp "enforce":
// vaultctl init makes the KEK and an RSA audit key, vaultd starts, a
// tenant is created (its DEK wrapped by whichever scheme the backend
// negotiated), a token stored and used through the proxy, and the trail,
// checkpoints signed PS256, verifies with the key vaultctl prints.
func TestOpenCryptokiGoldenPath(t *testing.T) {
	e := New(t, Options{OpenCryptoki: true, CheckpointInterval: "1s"})
	if e.Opts.Seccomp != "enforce" {
		t.Fatalf("seccomp = %q, want enforce", e.Opts.Seccomp)
	}
	ctx := t.Context()
	e.CreateTenant("acme")
	tok := e.StoreToken(AppAcme, "crm")
	resp, err := e.Client(AppAcme).Proxy(ctx, "crm", http.MethodGet, "contacts/1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy status %d: %s\nlogs:\n%s", resp.StatusCode, body, e.Logs())
	}
	if strings.Contains(string(body), tok.AccessToken.Reveal()) {
		t.Fatal("access token reached the caller")
	}
	// A restart unwraps the tenant's DEK from the store again.
	must(t, e.Stop())
	e.Start()
	if _, err := e.Client(AppAcme).GetIntegration(ctx, "crm"); err != nil {
		t.Fatalf("metadata after a restart: %v\n%s", err, e.Logs())
	}
	must(t, e.Stop())

	data, err := os.ReadFile(e.AuditPath)
	must(t, err)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	last := parseNDJSON(t, []byte(lines[len(lines)-1]))[0]
	if last.s("action") != "audit.checkpoint" || !strings.HasPrefix(last.s("detail"), "alg=PS256 ") {
		t.Fatalf("the trail does not end with a PS256 checkpoint: %s", last.raw)
	}
	pem, err := e.Ctl("audit", "pubkey", "-config", e.ConfigPath)
	if err != nil || !strings.HasPrefix(pem, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("audit pubkey: %v\n%s", err, pem)
	}
	pubFile := filepath.Join(e.Dir, "audit.pub")
	must(t, os.WriteFile(pubFile, []byte(pem), 0o600))
	if out := ctlOK(t, e, "audit", "verify", "-pubkey", pubFile, e.AuditPath); !strings.Contains(out, "signed checkpoints verify") {
		t.Fatalf("verify -pubkey: %s", out)
	}
}

// TestOpenCryptokiInit: vaultctl init on a token without EC says it made
// an RSA-PSS audit key, and a second init changes nothing.
func TestOpenCryptokiInit(t *testing.T) {
	e := New(t, Options{OpenCryptoki: true, NoStart: true, NoInit: true})
	out, err := e.Ctl("init", "-config", e.ConfigPath)
	if err != nil || !strings.Contains(out, `audit signing key "`+e.KEKLabel+`-audit" created`) || !strings.Contains(out, "PS256: RSA-PSS 3072") {
		t.Fatalf("init on openCryptoki: %v\n%s", err, out)
	}
	out, err = e.Ctl("init", "-config", e.ConfigPath)
	if err != nil || strings.Contains(out, "created") {
		t.Fatalf("second init created something:\n%s", out)
	}
}

// TestOpenCryptokiPinnedSchemeRefused: a token without the mechanisms of
// the scheme [hsm] wrap_scheme pins (openCryptoki's soft token has no
// AES-GCM) is refused before READY: vaultd exits 78 with one line naming
// the token and what is missing, and never reports ready; vaultctl init
// refuses the same way.
func TestOpenCryptokiPinnedSchemeRefused(t *testing.T) {
	e := New(t, Options{OpenCryptoki: true, NoStart: true})
	text, err := os.ReadFile(e.ConfigPath)
	must(t, err)
	pinned := strings.Replace(string(text), "[hsm]\n", "[hsm]\nwrap_scheme = \"aes-gcm\"\n", 1)
	if pinned == string(text) {
		t.Fatal("no [hsm] table in the config")
	}
	must(t, os.WriteFile(e.ConfigPath, []byte(pinned), 0o600))
	code, line := e.startExitLast(t)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d: %s", code, exitConfig, line)
	}
	for _, w := range []string{e.Token.Label, "CKM_AES_GCM"} {
		if !strings.Contains(line, w) {
			t.Fatalf("refusal does not name %q: %s", w, line)
		}
	}
	if strings.Contains(e.Logs(), "vaultd ready") {
		t.Fatalf("vaultd reported ready on a token it cannot use:\n%s", e.Logs())
	}
	out, err := e.Ctl("init", "-config", e.ConfigPath)
	if err == nil || !strings.Contains(out, "CKM_AES_GCM") {
		t.Fatalf("vaultctl init with a pinned scheme the token lacks: %v\n%s", err, out)
	}
}
