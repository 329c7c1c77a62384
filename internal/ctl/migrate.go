package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/config"
)

// migrateBatch is how many audit events one transaction of the copy
// appends (a record and its More).
const migrateBatch = 256

// migrateSource is what migrate reads of the bbolt database.
type migrateSource interface {
	storage.Store
	storage.RevocationStore
	storage.DeliveryStore
}

// migrateTarget is what it writes into.
type migrateTarget interface {
	storage.Store
	storage.RevocationStore
	storage.DeliveryStore
}

// migrateCounts is what was copied, for the operator.
type migrateCounts struct {
	tenants, integrations, sessions, offboarded, revocations, deliveries int
	events                                                               uint64
}

// cmdMigrate copies a single node's bbolt database into the PostgreSQL
// store the config names. vaultd must be stopped on the bbolt side (the
// file is opened read-only, which its running lock refuses) and the
// target must be empty: the copy is not a merge. State goes through the
// stores' own writes with a nil AuditFunc (no event of its own); the audit
// chain is appended verbatim, every record byte-identical (seq, hash,
// prev_hash, data), then read back, compared with the source and verified.
func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file ([storage] backend = \"postgres\")")
	from := fs.String("from-bbolt", "", "the bbolt database file to copy (vaultd stopped)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *from == "" {
		return errors.New("usage: vaultctl migrate -config FILE -from-bbolt PATH")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Storage.Backend != config.BackendPostgres {
		return fmt.Errorf("migrate copies into PostgreSQL: %s has [storage] backend = %q, want %q", *cfgPath, cfg.Storage.Backend, config.BackendPostgres)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Events a stopped vaultd has not committed yet would be left behind.
	for _, p := range []string{*from + ".audit-wal", audit.PendingPath(*from)} {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
			return fmt.Errorf("%s holds audit events not yet in the database: start vaultd on the bbolt file once (it commits them), stop it, then migrate", p)
		}
	}
	if _, err := os.Stat(*from); err != nil {
		return fmt.Errorf("bbolt database: %w", err)
	}
	src, err := bolt.Open(ctx, *from, bolt.Options{ReadOnly: true, LockTimeout: cfg.Storage.LockTimeout.Duration(), Logger: log})
	if errors.Is(err, storage.ErrLocked) {
		return fmt.Errorf("%s is in use by a running vaultd: stop it first: %w", *from, err)
	}
	if err != nil {
		return fmt.Errorf("bbolt database: %w", err)
	}
	defer src.Close()
	dst, err := openPostgres(ctx, cfg, false, log)
	if err != nil {
		return err
	}
	defer dst.Close()
	n, err := migrate(ctx, src, dst, time.Now)
	if err != nil {
		return err
	}
	head, _ := dst.AuditHead(ctx)
	fmt.Fprintf(stdout, "copied %d tenant(s), %d integration(s), %d connect session(s), %d offboarded id(s), %d pending revocation(s), %d webhook deliveries\n",
		n.tenants, n.integrations, n.sessions, n.offboarded, n.revocations, n.deliveries)
	anchor, _ := dst.AuditAnchor(ctx)
	fmt.Fprintf(stdout, "audit chain: %d event(s) copied byte for byte and verified from anchor seq %d; head seq %d hash %s\n", n.events, anchor.Seq, head.Seq, head.Hash)
	return nil
}

// migrate copies src into the empty dst and verifies the copied chain.
// A source whose chain retention pruned is copied from its anchor: the
// target's chain is started there (storage.AuditAnchorImporter), the
// remaining events follow verbatim, and both are verified from it.
// now dates the placeholder tenants that carry offboarded ids.
func migrate(ctx context.Context, src migrateSource, dst migrateTarget, now func() time.Time) (migrateCounts, error) {
	var n migrateCounts
	if err := checkEmpty(ctx, dst); err != nil {
		return n, err
	}
	anchor, err := src.AuditAnchor(ctx)
	if err != nil {
		return n, fmt.Errorf("source audit anchor: %w", err)
	}
	// A pruned chain starts after genesis: its copy must start at the same
	// anchor, which only a target with the optional importer can set.
	var importer storage.AuditAnchorImporter
	if anchor.Seq != 0 {
		var ok bool
		if importer, ok = dst.(storage.AuditAnchorImporter); !ok {
			return n, fmt.Errorf("the source audit chain was pruned (anchor seq %d) and the target store cannot start a chain after genesis (no ImportAuditAnchor)", anchor.Seq)
		}
	}
	// The chain first: verified at the source (from its anchor) before
	// anything is written, so a broken trail is never carried into the
	// shared database.
	srcSum, srcHead, err := verifyChain(ctx, src, anchor)
	if err != nil {
		return n, fmt.Errorf("source audit chain: %w", err)
	}
	if importer != nil {
		if err := importer.ImportAuditAnchor(ctx, anchor); err != nil {
			return n, fmt.Errorf("target audit anchor seq %d: %w", anchor.Seq, err)
		}
	}
	if n.events, err = copyAudit(ctx, src, dst); err != nil {
		return n, err
	}
	if err := copyState(ctx, src, dst, now, &n); err != nil {
		return n, err
	}
	dstSum, dstHead, err := verifyChain(ctx, dst, anchor)
	if err != nil {
		return n, fmt.Errorf("copied audit chain: %w", err)
	}
	if dstHead != srcHead || !bytes.Equal(dstSum, srcSum) {
		return n, fmt.Errorf("copied audit chain differs from the source (head %d/%s, source %d/%s)", dstHead.Seq, dstHead.Hash, srcHead.Seq, srcHead.Hash)
	}
	return n, nil
}

// checkEmpty refuses a target holding anything: a copy into a used
// database would interleave two histories.
func checkEmpty(ctx context.Context, dst migrateTarget) error {
	head, err := dst.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	ts, err := dst.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	off, err := dst.ListOffboarded(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	revs, err := dst.ListRevocations(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	ds, err := dst.ListDeliveries(ctx, "", 1)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	cur, err := dst.WebhookCursor(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	anchor, err := dst.AuditAnchor(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if head.Seq != 0 || anchor.Seq != 0 || len(ts) != 0 || len(off) != 0 || len(revs) != 0 || len(ds) != 0 || cur != 0 {
		return fmt.Errorf("the PostgreSQL store is not empty (%d audit event(s), %d tenant(s), %d offboarded id(s)): migrate copies into a fresh database only",
			head.Seq, len(ts), len(off))
	}
	return nil
}

// copyAudit appends src's chain to dst verbatim, migrateBatch records per
// transaction: the AuditFunc returns the stored records as they are, and
// the store checks each against its head (seq, prev hash) as for any event.
func copyAudit(ctx context.Context, src storage.Store, dst storage.Store) (uint64, error) {
	var batch []storage.AuditRecord
	var copied uint64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		rec := batch[0]
		rec.More = batch[1:]
		_, err := dst.AppendAudit(ctx, func(head storage.AuditHead) (storage.AuditRecord, error) {
			if head.Seq+1 != rec.Seq {
				return storage.AuditRecord{}, fmt.Errorf("%w: target head is seq %d, the copy continues at %d", storage.ErrConflict, head.Seq, rec.Seq)
			}
			return rec, nil
		})
		if err != nil {
			return fmt.Errorf("copy audit events %d-%d: %w", batch[0].Seq, batch[len(batch)-1].Seq, err)
		}
		copied += uint64(len(batch))
		batch = nil
		return nil
	}
	err := src.ScanAudit(ctx, 0, func(r storage.AuditRecord) (bool, error) {
		batch = append(batch, storage.AuditRecord{Seq: r.Seq, Hash: r.Hash, Data: bytes.Clone(r.Data)})
		if len(batch) == migrateBatch {
			return true, flush()
		}
		return true, nil
	})
	if err != nil {
		return copied, err
	}
	return copied, flush()
}

// copyState copies every record through the target's writes, with no
// audit event (nil AuditFunc): the events that created them are in the
// copied chain already. Revisions restart at 1, which no client sees.
func copyState(ctx context.Context, src migrateSource, dst migrateTarget, now func() time.Time, n *migrateCounts) error {
	ts, err := src.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("source tenants: %w", err)
	}
	for _, t := range ts {
		if _, _, err := dst.CreateTenant(ctx, t, nil); err != nil {
			return fmt.Errorf("tenant %s: %w", t.ID, err)
		}
		n.tenants++
		ins, err := src.ListIntegrations(ctx, t.ID)
		if err != nil {
			return fmt.Errorf("source integrations of %s: %w", t.ID, err)
		}
		for _, in := range ins {
			if _, _, err := dst.PutIntegration(ctx, t.ID, in, nil); err != nil {
				return fmt.Errorf("integration %s/%s: %w", t.ID, in.ID, err)
			}
			n.integrations++
		}
		ss, err := src.ListConnectSessions(ctx, t.ID)
		if err != nil {
			return fmt.Errorf("source connect sessions of %s: %w", t.ID, err)
		}
		for _, s := range ss {
			if _, _, err := dst.CreateConnectSession(ctx, s, nil); err != nil {
				return fmt.Errorf("connect session %s/%s: %w", t.ID, s.ID, err)
			}
			n.sessions++
		}
	}
	// An offboarded id is a tombstone: the contract makes one by
	// offboarding a tenant, so a placeholder is created and offboarded.
	off, err := src.ListOffboarded(ctx)
	if err != nil {
		return fmt.Errorf("source offboarded ids: %w", err)
	}
	for _, id := range off {
		if _, _, err := dst.CreateTenant(ctx, storage.Tenant{ID: id, CreatedAt: now().UTC(), Status: "offboarded"}, nil); err != nil {
			return fmt.Errorf("offboarded id %s: %w", id, err)
		}
		if _, err := dst.OffboardTenant(ctx, id, nil); err != nil {
			return fmt.Errorf("offboarded id %s: %w", id, err)
		}
		n.offboarded++
	}
	revs, err := src.ListRevocations(ctx)
	if err != nil {
		return fmt.Errorf("source revocations: %w", err)
	}
	for _, r := range revs {
		if _, _, err := dst.PutRevocation(ctx, r, nil); err != nil {
			return fmt.Errorf("revocation %s: %w", r.ID, err)
		}
		n.revocations++
	}
	ds, err := src.ListDeliveries(ctx, "", 0)
	if err != nil {
		return fmt.Errorf("source webhook deliveries: %w", err)
	}
	cur, err := src.WebhookCursor(ctx)
	if err != nil {
		return fmt.Errorf("source webhook cursor: %w", err)
	}
	if err := dst.EnqueueDeliveries(ctx, cur, ds); err != nil {
		return fmt.Errorf("webhook deliveries: %w", err)
	}
	n.deliveries = len(ds)
	return nil
}

// verifyChain checks st's chain from anchor with the audit verifier and
// returns a digest of every record's bytes (for comparing two copies)
// and the last record verified.
func verifyChain(ctx context.Context, st storage.Store, anchor storage.AuditHead) ([]byte, storage.AuditHead, error) {
	var v audit.Verifier
	v.Anchor(anchor.Seq, anchor.Hash)
	var sum hash.Hash = sha256.New()
	last := anchor
	err := st.ScanAudit(ctx, anchor.Seq, func(r storage.AuditRecord) (bool, error) {
		line := bytes.TrimRight(r.Data, "\n")
		if err := v.Add(line, int(r.Seq)); err != nil {
			return false, err
		}
		fmt.Fprintf(sum, "%d %s %d\n", r.Seq, r.Hash, len(line))
		sum.Write(line)
		last = storage.AuditHead{Seq: r.Seq, Hash: r.Hash}
		return true, nil
	})
	if err != nil {
		return nil, last, err
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		return nil, last, err
	}
	if head != last {
		return nil, last, fmt.Errorf("chain ends at seq %d but the head is seq %d", last.Seq, head.Seq)
	}
	return sum.Sum(nil), last, nil
}
