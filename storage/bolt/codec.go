package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	bbolt "go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage"
)

// recordVersion is the "v" of every JSON record this build writes.
const recordVersion = 1

type tenantRecord struct {
	V int `json:"v"`
	storage.Tenant
}

type integrationRecord struct {
	V int `json:"v"`
	storage.Integration
}

// recordHeader is the part of a record needed to check a revision without
// decoding the whole thing.
type recordHeader struct {
	V        int    `json:"v"`
	Revision uint64 `json:"revision"`
}

type auditHeadRecord struct {
	V    int    `json:"v"`
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// auditProbe reads the two fields of an audit event the store relies on.
type auditProbe struct {
	Seq  *uint64 `json:"seq"`
	Hash *string `json:"hash"`
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{storage.ErrCorrupt}, args...)...)
}

// The decoders name the record (ids are not secret) and the JSON error,
// which never echoes a whole value; they never panic on any input.

func decodeTenant(id string, val []byte) (storage.Tenant, error) {
	if val == nil {
		return storage.Tenant{}, corrupt("tenant %q: record missing", id)
	}
	var r tenantRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Tenant{}, corrupt("tenant %q: %v", id, err)
	}
	if r.V != recordVersion {
		return storage.Tenant{}, corrupt("tenant %q: record version %d not supported", id, r.V)
	}
	if r.ID != id {
		return storage.Tenant{}, corrupt("tenant %q: record names tenant %q", id, r.ID)
	}
	return r.Tenant, nil
}

func encodeTenant(t storage.Tenant) ([]byte, error) {
	return json.Marshal(tenantRecord{V: recordVersion, Tenant: t})
}

func decodeIntegration(tenantID, id string, val []byte) (storage.Integration, error) {
	var r integrationRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Integration{}, corrupt("integration %q of tenant %q: %v", id, tenantID, err)
	}
	if r.V != recordVersion {
		return storage.Integration{}, corrupt("integration %q of tenant %q: record version %d not supported", id, tenantID, r.V)
	}
	// Defence in depth: a record must be filed under its own id and tenant.
	if r.ID != id || r.TenantID != tenantID {
		return storage.Integration{}, corrupt("integration %q of tenant %q: record names integration %q of tenant %q",
			id, tenantID, r.ID, r.TenantID)
	}
	return r.Integration, nil
}

func encodeIntegration(in storage.Integration) ([]byte, error) {
	return json.Marshal(integrationRecord{V: recordVersion, Integration: in})
}

func decodeHeader(what string, val []byte) (recordHeader, error) {
	var h recordHeader
	if err := json.Unmarshal(val, &h); err != nil {
		return h, corrupt("%s: %v", what, err)
	}
	if h.V != recordVersion {
		return h, corrupt("%s: record version %d not supported", what, h.V)
	}
	return h, nil
}

// cloneIntegration deep-copies the slices so a returned value shares no
// memory with the caller's input.
func cloneIntegration(in storage.Integration) storage.Integration {
	in.Scopes = slices.Clone(in.Scopes)
	in.AccessToken = bytes.Clone(in.AccessToken)
	in.RefreshToken = bytes.Clone(in.RefreshToken)
	in.Params = maps.Clone(in.Params)
	in.Client = bytes.Clone(in.Client)
	return in
}

type connectSessionRecord struct {
	V int `json:"v"`
	storage.ConnectSession
}

func decodeConnectSession(tenantID, id string, val []byte) (storage.ConnectSession, error) {
	var r connectSessionRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.ConnectSession{}, corrupt("connect session %q of tenant %q: %v", id, tenantID, err)
	}
	if r.V != recordVersion {
		return storage.ConnectSession{}, corrupt("connect session %q of tenant %q: record version %d not supported", id, tenantID, r.V)
	}
	// Defence in depth: a record must be filed under its own id and tenant.
	if r.ID != id || r.TenantID != tenantID {
		return storage.ConnectSession{}, corrupt("connect session %q of tenant %q: record names connect session %q of tenant %q",
			id, tenantID, r.ID, r.TenantID)
	}
	return r.ConnectSession, nil
}

func encodeConnectSession(cs storage.ConnectSession) ([]byte, error) {
	return json.Marshal(connectSessionRecord{V: recordVersion, ConnectSession: cs})
}

// cloneSession deep-copies the slices and the map so a returned value
// shares no memory with the caller's input.
func cloneSession(cs storage.ConnectSession) storage.ConnectSession {
	cs.Scopes = slices.Clone(cs.Scopes)
	cs.Params = maps.Clone(cs.Params)
	cs.LinkHash = bytes.Clone(cs.LinkHash)
	cs.StateHash = bytes.Clone(cs.StateHash)
	cs.BrowserHash = bytes.Clone(cs.BrowserHash)
	cs.Verifier = bytes.Clone(cs.Verifier)
	cs.Client = bytes.Clone(cs.Client)
	return cs
}

// sessionRef is the value of a digest index entry: the session's tenant
// id and id joined by "/", which no valid id contains.
type sessionRef struct{ tenantID, id string }

func (r sessionRef) encode() []byte { return []byte(r.tenantID + "/" + r.id) }

// decodeSessionRef parses an index value; anything but two valid ids is
// corrupt.
func decodeSessionRef(val []byte) (sessionRef, error) {
	tenantID, id, ok := strings.Cut(string(val), "/")
	if !ok || !storage.ValidID(tenantID) || !storage.ValidID(id) {
		return sessionRef{}, corrupt("connect session digest index entry of %d bytes is not <tenant>/<id>", len(val))
	}
	return sessionRef{tenantID, id}, nil
}

func cloneTenant(t storage.Tenant) storage.Tenant {
	t.DEKs = slices.Clone(t.DEKs)
	for i := range t.DEKs {
		t.DEKs[i].Nonce = bytes.Clone(t.DEKs[i].Nonce)
		t.DEKs[i].Ciphertext = bytes.Clone(t.DEKs[i].Ciphertext)
	}
	return t
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func readAuditHead(sys *bbolt.Bucket) (storage.AuditHead, error) {
	v := sys.Get(keyAuditHead)
	if v == nil {
		return storage.AuditHead{}, corrupt("audit head missing")
	}
	var r auditHeadRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return storage.AuditHead{}, corrupt("audit head: %v", err)
	}
	if r.V != recordVersion || r.Hash == "" {
		return storage.AuditHead{}, corrupt("audit head: version %d, hash %q", r.V, r.Hash)
	}
	return storage.AuditHead{Seq: r.Seq, Hash: r.Hash}, nil
}

func putAuditHead(sys *bbolt.Bucket, h storage.AuditHead) error {
	b, err := json.Marshal(auditHeadRecord{V: recordVersion, Seq: h.Seq, Hash: h.Hash})
	if err != nil {
		return err
	}
	return sys.Put(keyAuditHead, b)
}

// decodeAudit copies a stored audit event out of the transaction.
func decodeAudit(key, val []byte) (storage.AuditRecord, error) {
	if len(key) != 8 {
		return storage.AuditRecord{}, corrupt("audit key of %d bytes", len(key))
	}
	seq := binary.BigEndian.Uint64(key)
	var p auditProbe
	if err := json.Unmarshal(val, &p); err != nil {
		return storage.AuditRecord{}, corrupt("audit record %d: %v", seq, err)
	}
	if p.Seq == nil || *p.Seq != seq || p.Hash == nil || *p.Hash == "" {
		return storage.AuditRecord{}, corrupt("audit record %d: seq/hash fields missing or inconsistent", seq)
	}
	return storage.AuditRecord{Seq: seq, Hash: *p.Hash, Data: bytes.Clone(val)}, nil
}
