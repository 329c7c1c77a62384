package ctl

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
)

const backupUsage = "usage: vaultctl backup -out FILE   (operator; API connection flags as for other commands)"

// cmdBackup fetches an online snapshot from vaultd (GET /v1/admin/backup)
// and keeps it only once it is shown restorable: the stream matched the
// server's size and SHA-256 trailers, the file opens as a vaultd database
// at the current schema, bbolt's consistency check passes, and the audit
// hash chain inside it verifies. Until then it lives in a 0600 temporary
// file next to FILE, removed on any failure; an existing FILE is never
// overwritten.
func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var out string
	c, pos, err := apiClientWith(args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "file to write the backup to (must not exist)")
	})
	if err != nil {
		return err
	}
	if out == "" || len(pos) != 0 {
		return errors.New(backupUsage)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("backup: %s exists; choose a new file name", out)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	res, err := c.Backup(ctx, f)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	sum, err := verifyInChild(ctx, tmp)
	if err != nil {
		return fmt.Errorf("backup: received %d bytes but they are not a usable backup: %w", res.Bytes, err)
	}
	// Link, not rename: link fails if out appeared meanwhile, so an
	// existing file is never replaced.
	if err := os.Link(tmp, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	_ = os.Remove(tmp)
	if d, derr := os.Open(filepath.Dir(out)); derr == nil {
		_ = d.Sync() // make the new name durable
		_ = d.Close()
	}
	fmt.Fprintf(stdout, "backup %s: %d bytes, sha256 %s\n", out, res.Bytes, res.SHA256)
	fmt.Fprintf(stdout, "verified: bbolt check ok, %d tenant(s), audit chain ok (%d events, last seq %d)\n",
		sum.tenants, sum.events, sum.lastSeq)
	fmt.Fprintln(stdout, "it holds sealed tokens and wrapped DEKs only: restoring it needs the same HSM KEK")
	return nil
}

// verifyCommand is the hidden vaultctl command that verifyInChild runs.
const verifyCommand = "__verify-backup"

// verifyInChild runs verifyBackup in a child vaultctl. bbolt maps the file
// and trusts its page structure: damage that the checksummed meta pages
// and the size check cannot see can fault the reading process (SIGSEGV,
// not an error; etcd-io/bbolt#1225). In a child that is an ordinary
// failure, reported as such, and this process still removes the file.
func verifyInChild(ctx context.Context, path string) (backupSummary, error) {
	exe, err := os.Executable()
	if err != nil {
		return backupSummary{}, fmt.Errorf("find vaultctl to verify with: %w", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, verifyCommand, path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{} // it needs nothing from ours
	runErr := cmd.Run()
	if runErr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) && ee.ExitCode() == 1 {
			// verifyBackup's own error, one line.
			return backupSummary{}, errors.New(strings.TrimSpace(strings.TrimPrefix(stderr.String(), "vaultctl: ")))
		}
		return backupSummary{}, fmt.Errorf("the verifier died reading it (%v): the file is damaged", runErr)
	}
	var sum backupSummary
	if _, err := fmt.Sscanf(stdout.String(), "%d %d %d", &sum.tenants, &sum.events, &sum.lastSeq); err != nil {
		return backupSummary{}, fmt.Errorf("verifier output %q: %w", stdout.String(), err)
	}
	return sum, nil
}

// cmdVerifyBackup is the child side of verifyInChild.
func cmdVerifyBackup(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: vaultctl " + verifyCommand + " FILE")
	}
	sum, err := verifyBackup(ctx, args[0])
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d %d %d\n", sum.tenants, sum.events, sum.lastSeq)
	return err
}

type backupSummary struct {
	tenants         int
	events, lastSeq uint64
}

// verifyBackup opens path read-only and checks what a restore relies on.
func verifyBackup(ctx context.Context, path string) (backupSummary, error) {
	var sum backupSummary
	st, err := bolt.Open(ctx, path, bolt.Options{ReadOnly: true})
	if err != nil {
		return sum, err
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		return sum, err
	}
	ts, err := st.ListTenants(ctx)
	if err != nil {
		return sum, err
	}
	sum.tenants = len(ts)
	// Each audit record is one NDJSON line of an export; the Verifier
	// checks the chain exactly as `vaultctl audit verify` does, and a
	// backup's chain must start at the genesis or, when retention pruned
	// older events, at the anchor the database keeps for them.
	anchor, err := st.AuditAnchor(ctx)
	if err != nil {
		return sum, fmt.Errorf("audit chain: %w", err)
	}
	var v audit.Verifier
	v.Anchor(anchor.Seq, anchor.Hash)
	line := 0
	err = st.ScanAudit(ctx, anchor.Seq, func(rec storage.AuditRecord) (bool, error) {
		line++
		return true, v.Add(rec.Data, line)
	})
	res := v.Result()
	if err != nil {
		return sum, fmt.Errorf("audit chain: %w", err)
	}
	if res.Events > 0 && !res.Anchored {
		return sum, errors.New("audit chain: does not start at seq 1 or at the database's anchor")
	}
	sum.events, sum.lastSeq = uint64(res.Events), res.LastSeq
	return sum, nil
}
