package bolt

import (
	"context"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// Bucket and key names (see the package documentation for the layout).
var (
	bucketSys          = []byte("sys")
	bucketAudit        = []byte("audit")
	bucketIntegrations = []byte("integrations")
	// bucketConnect (inside a tenant's bucket) and bucketConnectIndex
	// (top level) are created by the first write that needs them, not by a
	// migration: a file without them simply has no sessions, so files from
	// builds before connect sessions open unchanged, read-only included.
	bucketConnect      = []byte("connect")
	bucketConnectIndex = []byte("connect_digests")
	keySchemaVersion   = []byte("schema_version")
	keyAuditHead       = []byte("audit_head")
	keyTenant          = []byte("tenant")
)

const tenantPrefix = "t/"

func tenantBucket(id string) []byte { return []byte(tenantPrefix + id) }

// migration upgrades a file from schema version i to i+1 (i being its
// index in the list). It runs inside the transaction that also stores the
// new version, so it is all-or-nothing.
type migration struct {
	name string
	fn   func(tx *bbolt.Tx) error
}

// migrations is the registered upgrade path; SchemaVersion == len(migrations).
// Append only: never edit a released migration.
var migrations = []migration{
	{name: "v1: sys and audit buckets, genesis audit head", fn: migrateV1},
}

// SchemaVersion is the layout version this binary writes.
const SchemaVersion = 1

// migrateV1 brings a version-0 file (a bare bbolt file, or one holding
// only tenant buckets from a pre-versioned build) to version 1. Existing
// tenant buckets are already in the v1 record format and stay untouched.
func migrateV1(tx *bbolt.Tx) error {
	sys, err := tx.CreateBucketIfNotExists(bucketSys)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketAudit); err != nil {
		return err
	}
	if sys.Get(keyAuditHead) == nil {
		return putAuditHead(sys, storage.AuditHead{Seq: 0, Hash: storage.GenesisHash})
	}
	return nil
}

// readSchemaVersion: a file without a sys bucket is version 0.
func readSchemaVersion(tx *bbolt.Tx) (uint64, error) {
	sys := tx.Bucket(bucketSys)
	if sys == nil {
		return 0, nil
	}
	v := sys.Get(keySchemaVersion)
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: schema_version is %d bytes, want 8", storage.ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func writeSchemaVersion(tx *bbolt.Tx, v uint64) error {
	sys := tx.Bucket(bucketSys)
	if sys == nil {
		return fmt.Errorf("%w: sys bucket missing after migration", storage.ErrCorrupt)
	}
	return sys.Put(keySchemaVersion, binary.BigEndian.AppendUint64(nil, v))
}

// migrate brings the file to len(ms). A new file is taken through every
// migration in one transaction, so it is born at the current version.
func migrate(ctx context.Context, db *bbolt.DB, ms []migration, readOnly bool) (from, to uint64, err error) {
	target := uint64(len(ms))
	if err := db.View(func(tx *bbolt.Tx) error {
		from, err = readSchemaVersion(tx)
		return err
	}); err != nil {
		return 0, 0, err
	}
	switch {
	case from > target:
		return from, from, fmt.Errorf("%w: file has schema version %d, this build understands up to %d (downgrade is not supported; use a newer vaultd)",
			storage.ErrSchema, from, target)
	case from == target:
		return from, from, nil
	case readOnly:
		return from, from, fmt.Errorf("%w: file has schema version %d and needs migrating to %d; open it read-write once",
			storage.ErrSchema, from, target)
	}
	if err := ctx.Err(); err != nil {
		return from, from, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		v, err := readSchemaVersion(tx)
		if err != nil {
			return err
		}
		for i := v; i < target; i++ {
			if err := ms[i].fn(tx); err != nil {
				return fmt.Errorf("schema migration %d->%d (%s): %w", i, i+1, ms[i].name, err)
			}
		}
		return writeSchemaVersion(tx, target)
	})
	if err != nil {
		return from, from, err
	}
	return from, target, nil
}
