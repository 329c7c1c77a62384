package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// rechain edits line i of an NDJSON trail and recomputes every hash from
// there on (sha256(prev_hash "\n" JCS(event without hash)), docs/api.md),
// as someone able to rewrite the database or the mirror would.
func rechain(t *testing.T, lines []string, i int, edit func(m map[string]json.RawMessage)) []string {
	t.Helper()
	out := append([]string(nil), lines...)
	prev := ""
	for j := i; j < len(out); j++ {
		var m map[string]json.RawMessage
		must(t, json.Unmarshal([]byte(out[j]), &m))
		if j == i {
			edit(m)
		} else {
			m["prev_hash"], _ = json.Marshal(prev)
		}
		delete(m, "hash")
		b, err := json.Marshal(m)
		must(t, err)
		canon, err := jcs.Transform(b)
		must(t, err)
		var ph string
		must(t, json.Unmarshal(m["prev_hash"], &ph))
		sum := sha256.Sum256(append([]byte(ph+"\n"), canon...))
		prev = hex.EncodeToString(sum[:])
		m["hash"], _ = json.Marshal(prev)
		b, err = json.Marshal(m)
		must(t, err)
		out[j] = string(b)
	}
	return out
}

// TestCheckpoint: with a short checkpoint_interval vaultd appends signed
// audit.checkpoint events while events are added, and one at shutdown;
// `vaultctl audit pubkey` prints the HSM key that signs them, and
// `vaultctl audit verify -pubkey` passes the trail but refuses it once it
// is rewritten with recomputed hashes, at its first checkpoint.
func TestCheckpoint(t *testing.T) {
	e := New(t, Options{CheckpointInterval: "1s"})
	e.CreateTenant("acme")
	e.StoreToken(AppAcme, "crm")

	// Wait (bounded, no timing asserted) for the loop's first checkpoint.
	var first auditLine
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := do(t, e.HTTP(Auditor), "GET", e.API+"/v1/audit?action=audit.checkpoint", nil)
		wantStatus(t, r, 200)
		if cps := parseNDJSON(t, r.Body); len(cps) > 0 {
			first = cps[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit.checkpoint event after 60s\n%s", e.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if first.s("actor") != "vaultd" || first.s("outcome") != "success" || first.s("tenant_id") != "" ||
		!strings.HasPrefix(first.s("detail"), fmt.Sprintf("alg=ES256 seq=%d hash=%s sig=", first.seq()-1, first.s("prev_hash"))) {
		t.Fatalf("checkpoint event: %s", first.raw)
	}
	e.CreateTenant("globex")
	e.StoreToken(AppGlobex, "g1")
	must(t, e.Stop())

	// The mirror holds the whole trail; the shutdown checkpoint ends it.
	data, err := os.ReadFile(e.AuditPath)
	must(t, err)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	last := parseNDJSON(t, []byte(lines[len(lines)-1]))[0]
	if last.s("action") != "audit.checkpoint" {
		t.Fatalf("the trail does not end with the shutdown checkpoint: %s", last.raw)
	}

	pem, err := e.Ctl("audit", "pubkey", "-config", e.ConfigPath)
	if err != nil || !strings.HasPrefix(pem, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("audit pubkey: %v\n%s", err, pem)
	}
	pubFile := filepath.Join(e.Dir, "audit.pub")
	must(t, os.WriteFile(pubFile, []byte(pem), 0o600))
	out := ctlOK(t, e, "audit", "verify", "-pubkey", pubFile, e.AuditPath)
	if !strings.Contains(out, "signed checkpoints verify") {
		t.Fatalf("verify -pubkey: %s", out)
	}

	// Seq 2 rewritten, every later hash recomputed: the chain alone is
	// fooled, the signatures are not.
	rewritten := rechain(t, lines, 1, func(m map[string]json.RawMessage) {
		m["actor"], _ = json.Marshal("someone-else")
	})
	f := writeAuditLines(t, e.Dir, "rewritten.jsonl", rewritten)
	ctlOK(t, e, "audit", "verify", f)
	ctlFails(t, e, []string{fmt.Sprintf("chain broken at seq %d", first.seq()), "checkpoint"},
		"audit", "verify", "-pubkey", pubFile, f)

	// vaultd itself, on the rewritten database, would be refused by the
	// same check at start-up; a second `vaultctl init` changes nothing.
	out, err = e.Ctl("init", "-config", e.ConfigPath)
	if err != nil || strings.Contains(out, "created") || !strings.Contains(out, "audit signing key") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
	pem2, err := e.Ctl("audit", "pubkey", "-config", e.ConfigPath)
	if err != nil || pem2 != pem {
		t.Fatalf("the audit key changed across init: %v", err)
	}
}

// TestCheckpointKeyUpgrade: a token set up before signed checkpoints has
// a KEK and no audit key. vaultd refuses to start with exit 78 and one
// line naming `vaultctl init`; running init again creates the key (and
// nothing else), and vaultd starts.
func TestCheckpointKeyUpgrade(t *testing.T) {
	e := New(t, Options{NoStart: true})
	kekBefore, err := e.Ctl("kek-info", "-config", e.ConfigPath)
	must(t, err)
	// What an older `vaultctl init` left: remove the audit key pair.
	for _, typ := range []string{"privkey", "pubkey"} {
		cmd := exec.Command("pkcs11-tool", "--module", e.Token.Module, "--token-label", e.Token.Label,
			"--login", "--pin", e.Token.PIN, "--delete-object", "--type", typ, "--label", "vaultd-kek-audit")
		cmd.Env = append(os.Environ(), e.Token.Env())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pkcs11-tool --delete-object --type %s: %v\n%s", typ, err, out)
		}
	}
	code, line := e.startExitLast(t)
	if code != exitConfig || !strings.Contains(line, "vaultctl init") || !strings.Contains(line, "audit") {
		t.Fatalf("start without the audit key: exit %d, %q; want %d naming vaultctl init", code, line, exitConfig)
	}
	out, err := e.Ctl("init", "-config", e.ConfigPath)
	if err != nil || !strings.Contains(out, `audit signing key "vaultd-kek-audit" created`) || !strings.Contains(out, "present (current version 1); unchanged") {
		t.Fatalf("init after the upgrade: %v\n%s", err, out)
	}
	if kekAfter, err := e.Ctl("kek-info", "-config", e.ConfigPath); err != nil || kekAfter != kekBefore {
		t.Fatalf("init changed the KEK: %v\n%s\n%s", err, kekBefore, kekAfter)
	}
	e.Start()
	must(t, e.Stop())
}
