// Package audit is vaultd's tamper-evident audit trail (docs/api.md,
// "Audit events").
//
// Every security-relevant operation is recorded as an Event, one JSON object
// per line, chained by hash:
//
//	hash = lowercase hex SHA-256( prev_hash || "\n" || JCS(event without "hash") )
//
// where JCS is RFC 8785 canonical JSON (github.com/gowebpki/jcs) and the
// first event's prev_hash is 64 zeros (storage.GenesisHash). Because the
// pre-image is the canonical form, a verifier needs nothing from vaultd: any
// RFC 8785 implementation and SHA-256 re-check a line, whatever the key order
// or whitespace of the copy it holds. Fields a later version adds are covered
// by the hash as well.
//
// # What the chain proves
//
//   - A line whose content (any field, including seq, time and prev_hash) was
//     edited no longer matches its hash.
//   - Deleting, inserting or reordering lines inside a chain breaks the seq
//     sequence and the prev_hash links; Verify names the first broken seq.
//
// # What it does not prove
//
//   - The chain carries no secret (no MAC, no signature): whoever can rewrite
//     the database or the mirror can recompute every hash after an edit. Its
//     value comes from copies held elsewhere.
//   - Truncation of the tail (dropping the newest events) leaves a valid,
//     shorter chain. It is only detectable against an external anchor: a
//     (seq, hash) pair recorded outside vaultd's reach. Ship the mirror file
//     (Options.MirrorPath) to a SIEM or write-once store continuously; the
//     SIEM's copy is that anchor, and VerifyResult.LastSeq/LastHash are what
//     to compare against it.
//   - A segment that does not start at seq 1 (a rotated mirror file, an
//     export with since= or after_seq=) is checked from its own first line:
//     its first prev_hash is taken on trust (VerifyResult.Anchored is false),
//     so a file with its first lines removed verifies too. Verifier.Anchor
//     checks it from a known point instead (the seq and hash of the event
//     before it, from a copy held elsewhere), and Verifier.AddReader checks
//     several files as one chain. vaultctl audit verify refuses an
//     unanchored file set.
//   - An export filtered by tenant_id, integration_id or action has gaps in
//     seq by construction and is NOT chain-verifiable; Verify reports the
//     first gap. Verify the unfiltered export or the mirror instead.
//
// # Start-up verification
//
// With Options.VerifyOnStart (vaultd's [audit] verify_on_start, on by
// default) New verifies the chain in the store before it touches the
// mirror: the newest DefaultVerifyTail events at once, so a break there
// fails New (vaultd refuses to start, naming the first broken seq), and
// the older ones in the background, where a break is logged, exported as
// vaultd_audit_chain_broken_seq and makes every later Record fail with
// ErrChainBroken. Verifying costs tens of microseconds per event (see
// DefaultVerifyTail), too much to hold the start for a long trail.
//
// # Writing
//
// Log.Record appends synchronously to the store (the record of truth) inside
// storage.Store.AppendAudit. An error from Record means the event was not
// recorded, and the caller's operation must fail (fail closed): vaultd never
// does an audited thing it could not record. After the commit the line is
// appended to the optional mirror file; the mirror is best effort (failures
// are logged and counted, never returned) and is repaired from the database
// on New, on Reopen and on the next Record after a failure.
//
// # Content rules
//
// Callers put only identifiers, error codes and fixed, safe text into events.
// No token, secret, PIN, key or request/response body may ever reach an
// event: the package cannot reliably recognise a bearer token in free text,
// so it does not try. It does bound every field's length (see the max*
// constants) and forces valid UTF-8, so an event is always recordable.
package audit
