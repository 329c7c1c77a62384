// Package bolt is the bbolt (go.etcd.io/bbolt) implementation of
// storage.Store: one file, one writer process, ACID transactions with
// copy-on-write pages, so a crash at any moment leaves the last committed
// state intact.
//
// # Layout
//
//	sys                      schema_version  uint64 big-endian
//	                         audit_head      {"v":1,"seq":N,"hash":"..."}
//	                         audit_anchor    {"v":1,"seq":N,"hash":"..."} last pruned event (absent: none)
//	audit                    seq (uint64 BE) -> event JSON line (includes seq, prev_hash, hash)
//	t/<tenant_id>            tenant          {"v":1, ...storage.Tenant}
//	t/<tenant_id>/integrations
//	                         <integration_id> -> {"v":1, ...storage.Integration}
//	t/<tenant_id>/connect    <session_id> -> {"v":1, ...storage.ConnectSession}
//	connect_digests          SHA-256 digest (32 bytes) -> <tenant_id>/<session_id>
//	offboarded               <tenant_id> -> {"v":1}   tombstone: the id is never reused
//	revocations              <revocation_id> -> {"v":1, ...storage.Revocation}
//	webhook_deliveries       <delivery_id> -> {"v":1, ...storage.Delivery}
//	webhook_due              status 0x00 next_attempt(12 bytes) <delivery_id> -> empty
//	sys                      webhook_cursor  uint64 big-endian (absent: 0)
//
// connect_digests indexes every session's LinkHash and StateHash
// platform-wide (the browser side of a connect flow knows no tenant) and
// changes in the transaction that changes the session. It and the connect
// buckets are created by the first write that needs them and read as empty
// when absent; being additive, they need no schema version of their own,
// so files written before them open unchanged (read-only too), and a
// build that predates them ignores them.
//
// The lifecycle's buckets follow the same rule, for the same reason: the
// offboarding tombstones, pending revocations, webhook deliveries with
// their due index, and sys/webhook_cursor are created by the first write
// that needs them and read as empty (cursor 0) when absent, so schema
// version 1 still describes the file and no migration runs; a read-only
// open of an older file works. The cost, accepted: a build that predates
// them ignores them (it would not enforce a tombstone nor retry a
// revocation), which is what running an older binary on a newer file
// means anyway. OffboardTenant deletes the tenant's bucket (its record,
// integrations and sessions) and the sessions' digest entries in the
// transaction that writes the tombstone and the audit event. bbolt then
// keeps the freed pages' old bytes until it reuses them, and backups hold
// the tenant as it was: the per-tenant HSM key, destroyed at offboarding,
// is what makes that ciphertext unreadable (crypto-shred).
//
// webhook_due orders deliveries by status, then next attempt time (Unix
// seconds with the sign bit flipped, then nanoseconds, both big-endian:
// byte order is time order, the zero time included), then id, so the
// dispatcher's "pending, due first, at most n" reads n records, not the
// queue. Each entry is written and removed with its record; one that
// disagrees with its record is ErrCorrupt.
//
// Why a top-level bucket per tenant: every integration operation first
// resolves the tenant's bucket and only then the id inside it, so a lookup
// can never reach another tenant's record, whatever the id says; there is
// no shared keyspace where a composite key could be mis-built. Deleting or
// exporting a tenant is a bucket operation. The "v" field in every record
// lets a later format coexist with this one; the schema version in sys
// names the layout as a whole and is advanced by registered migrations,
// each run inside the single transaction that also records the new
// version, so a file is always at exactly one version.
//
// Why db.Batch: each bbolt write transaction ends in fsync, which costs far
// more than the write itself. Concurrent writers (many integrations
// refreshing at once, audit appends) hand their functions to db.Batch,
// which runs them together in one transaction and one fsync. A call
// returns only after that commit, so an acknowledged write is durable.
// A write with no other write in flight skips the batch and commits at
// once with db.Update, since Batch would make it wait MaxBatchDelay for
// company; under concurrency the batching is what you get.
// Batch may run a function more than once (when another function in the
// same batch fails, the batch is rolled back and re-run without it), so
// every write function here recomputes its result from the transaction
// on each run and reports "expected" failures (not found, conflict)
// without touching the transaction, which keeps one caller's conflict
// from rolling back everyone else's batch.
//
// Values never alias memory owned by a transaction: records are decoded
// from JSON (which allocates) and audit data is cloned before the
// transaction ends. Long-running readers (ScanAudit) read in chunks and
// call back outside any transaction, so a slow consumer cannot hold a read
// transaction open and stall writers that need to grow the memory map.
package bolt
