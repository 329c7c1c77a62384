package storage

import "context"

// AuditAnchorImporter is the optional capability to start an empty audit
// chain after genesis: the copy of a chain that retention already pruned
// (vaultctl migrate) begins at its anchor, not at seq 1. storage/inmem and
// storage/postgres have it; a consumer asserts it.
type AuditAnchorImporter interface {
	// ImportAuditAnchor sets both the anchor and the head to anchor in
	// one transaction, so the next appended event must have seq
	// anchor.Seq+1 and chain on anchor.Hash. It is allowed only on an
	// empty chain (head seq 0, no event, anchor never set) and only for
	// anchor.Seq > 0 with a non-empty Hash; anything else wraps
	// ErrInvalidRecord and changes nothing.
	ImportAuditAnchor(ctx context.Context, anchor AuditHead) error
}
