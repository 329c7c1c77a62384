package audit

// Signed checkpoints. An audit.checkpoint event carries, in its detail, a
// signature made inside the HSM over the seq and hash of the event before
// it. Whoever can rewrite the database can recompute every hash, but not
// these signatures: a rewritten trail fails at its first checkpoint after
// the change. docs/api.md ("Signed checkpoints") is the reference for the
// detail format and the signed message.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/storage"
)

// ActionCheckpoint is the action of a signed checkpoint event (actor
// "vaultd", outcome success, no tenant).
const ActionCheckpoint = "audit.checkpoint"

// AlgES256 is ECDSA P-256 over SHA-256, the signature raw r||s (64 bytes).
const AlgES256 = "ES256"

// AlgPS256 is RSASSA-PSS over SHA-256 with MGF1-SHA256 and a 32-byte salt,
// the signature as long as the modulus (at least MinRSABits): the
// checkpoint key of a token without EC (openCryptoki's soft token).
const AlgPS256 = "PS256"

// MinRSABits is the smallest RSA checkpoint key accepted.
const MinRSABits = 3072

// pssOptions are PS256's PSS parameters (the salt is the digest's size).
var pssOptions = &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}

// checkpointDomain starts every signed message, so a checkpoint signature
// cannot be taken for a signature over anything else.
const checkpointDomain = "vaultd audit checkpoint v1\n"

// ErrCheckpoint: a checkpoint's detail is malformed, names an algorithm
// the key does not have, or its signature does not verify.
var ErrCheckpoint = errors.New("audit: bad checkpoint")

// Checkpoint is the decoded detail of an audit.checkpoint event: the seq
// and hash of the event before it, and the signature over them.
type Checkpoint struct {
	Alg  string
	Seq  uint64
	Hash string
	Sig  []byte
}

// String is the detail: "alg=ES256 seq=41 hash=<64 hex> sig=<base64url>"
// (keys in this order, one space apart, base64url without padding).
func (c Checkpoint) String() string {
	return "alg=" + c.Alg + " seq=" + strconv.FormatUint(c.Seq, 10) + " hash=" + c.Hash +
		" sig=" + base64.RawURLEncoding.EncodeToString(c.Sig)
}

// ParseCheckpoint decodes a checkpoint detail strictly: exactly the four
// fields of String in that order, seq a positive decimal without leading
// zeros, hash 64 lowercase hex digits, sig non-empty canonical base64url.
// It checks the syntax only; VerifyCheckpoint checks the signature.
func ParseCheckpoint(detail string) (Checkpoint, error) {
	var c Checkpoint
	parts := strings.Split(detail, " ")
	keys := []string{"alg", "seq", "hash", "sig"}
	if len(parts) != len(keys) {
		return c, fmt.Errorf("%w: detail is not \"alg=... seq=... hash=... sig=...\"", ErrCheckpoint)
	}
	vals := make([]string, len(keys))
	for i, k := range keys {
		v, ok := strings.CutPrefix(parts[i], k+"=")
		if !ok {
			return c, fmt.Errorf("%w: field %d is not %s=", ErrCheckpoint, i+1, k)
		}
		vals[i] = v
	}
	if !validAlg(vals[0]) {
		return c, fmt.Errorf("%w: alg is not 1-16 capital letters or digits", ErrCheckpoint)
	}
	c.Alg = vals[0]
	seq, err := strconv.ParseUint(vals[1], 10, 64)
	if err != nil || seq == 0 || seq > maxSafeSeq || vals[1] != strconv.FormatUint(seq, 10) {
		return Checkpoint{}, fmt.Errorf("%w: seq is not a positive integer", ErrCheckpoint)
	}
	c.Seq = seq
	if !isHash(vals[2]) {
		return Checkpoint{}, fmt.Errorf("%w: hash is not 64 lowercase hex digits", ErrCheckpoint)
	}
	c.Hash = vals[2]
	sig, err := base64.RawURLEncoding.Strict().DecodeString(vals[3])
	if err != nil || len(sig) == 0 || len(sig) > 1024 {
		return Checkpoint{}, fmt.Errorf("%w: sig is not base64url (no padding)", ErrCheckpoint)
	}
	c.Sig = sig
	return c, nil
}

func validAlg(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// CheckpointDigest is the SHA-256 of the signed message:
// "vaultd audit checkpoint v1\n" alg "\n" seq (decimal) "\n" hash.
// The algorithm is inside the message, so a signature cannot be replayed
// under another one.
func CheckpointDigest(alg string, seq uint64, hash string) []byte {
	d := sha256.Sum256([]byte(checkpointDomain + alg + "\n" + strconv.FormatUint(seq, 10) + "\n" + hash))
	return d[:]
}

// AlgOf is the checkpoint algorithm a public key signs with.
func AlgOf(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return AlgES256, nil
		}
	case *rsa.PublicKey:
		if k.N != nil && k.N.BitLen() >= MinRSABits {
			return AlgPS256, nil
		}
		return "", fmt.Errorf("%w: RSA checkpoint key smaller than %d bits", ErrCheckpoint, MinRSABits)
	}
	return "", fmt.Errorf("%w: unsupported checkpoint key %T (want ECDSA P-256 or RSA)", ErrCheckpoint, pub)
}

// VerifyCheckpoint checks c's signature under pub.
func VerifyCheckpoint(pub crypto.PublicKey, c Checkpoint) error {
	alg, err := AlgOf(pub)
	if err != nil {
		return err
	}
	if c.Alg != alg {
		return fmt.Errorf("%w: alg %s, but the key is %s", ErrCheckpoint, c.Alg, alg)
	}
	digest := CheckpointDigest(c.Alg, c.Seq, c.Hash)
	switch alg {
	case AlgES256:
		if len(c.Sig) == 64 {
			r, s := new(big.Int).SetBytes(c.Sig[:32]), new(big.Int).SetBytes(c.Sig[32:])
			if ecdsa.Verify(pub.(*ecdsa.PublicKey), digest, r, s) {
				return nil
			}
		}
	case AlgPS256:
		if rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest, c.Sig, pssOptions) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: signature does not verify", ErrCheckpoint)
}

// checkCheckpoint checks a checkpoint event at seq whose prev_hash is
// prevHash: the detail must claim exactly the previous event and carry a
// valid signature over it. The reason is for a ChainError.
func checkCheckpoint(pub crypto.PublicKey, seq uint64, prevHash, detail string) (string, bool) {
	c, err := ParseCheckpoint(detail)
	if err != nil {
		return "checkpoint: " + reasonOf(err), false
	}
	if c.Seq != seq-1 || c.Hash != prevHash {
		return fmt.Sprintf("checkpoint signed seq %d hash %s, but the event before it is seq %d with hash %s (trail rewritten)",
			c.Seq, c.Hash, seq-1, prevHash), false
	}
	if err := VerifyCheckpoint(pub, c); err != nil {
		return "checkpoint: " + reasonOf(err) + " (trail rewritten, or signed by another key)", false
	}
	return "", true
}

// errUnmoved: the head is the last checkpoint (or the trail is empty), so
// there is nothing new to sign.
var errUnmoved = errors.New("audit: no event since the last checkpoint")

// Checkpoint appends a signed audit.checkpoint event over the current
// head, unless the head is the last checkpoint this Log wrote or found at
// start-up (or the trail is empty): then it returns written=false. The
// signature is made inside the store's write transaction, so the head it
// covers is the one the event follows however busy the trail is.
func (l *Log) Checkpoint(ctx context.Context, signer hsm.AuditSigner) (ev Event, written bool, err error) {
	pub, err := signer.AuditPublicKey(ctx)
	if err != nil {
		return Event{}, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	alg, err := AlgOf(pub)
	if err != nil {
		return Event{}, false, err
	}
	// build must be pure (a retried batch calls it again), and ECDSA
	// signatures are randomised: the detail for a head is kept and reused.
	var signed storage.AuditHead
	var detail string
	fill := func(head storage.AuditHead) (string, error) {
		if head.Seq == 0 || head.Seq == l.lastCheckpoint.Load() {
			return "", errUnmoved
		}
		if detail != "" && head == signed {
			return detail, nil
		}
		sig, err := signer.SignAudit(ctx, CheckpointDigest(alg, head.Seq, head.Hash))
		if err != nil {
			return "", err
		}
		signed, detail = head, Checkpoint{Alg: alg, Seq: head.Seq, Hash: head.Hash, Sig: sig}.String()
		return detail, nil
	}
	out, err := l.recordAll(ctx, []Event{{Actor: "vaultd", Action: ActionCheckpoint, Outcome: OutcomeSuccess}}, fill,
		func(build storage.AuditFunc) (storage.AuditRecord, error) {
			return l.store.AppendAudit(ctx, build)
		})
	if errors.Is(err, errUnmoved) {
		return Event{}, false, nil
	}
	if err != nil {
		return Event{}, false, err
	}
	l.lastCheckpoint.Store(out[0].Seq)
	return out[0], true, nil
}

// Start-up search for the newest checkpoint: backwards from the head, a
// window at a time, over at most checkpointSearch events. vaultd writes
// one at least every checkpoint_interval while events are added, so the
// first window nearly always has one; a trail without any (written before
// checkpoints existed) falls back to the newest DefaultVerifyTail events.
const (
	checkpointWindow = 4096
	checkpointSearch = 16 * checkpointWindow
)

var checkpointMarker = []byte(`"action":"` + ActionCheckpoint + `"`)

// newestCheckpoint is the seq of the newest audit.checkpoint event within
// checkpointSearch events of head; found is false without a checkpoint
// key, without such an event, or when the store cannot be read (the
// verification that follows then reports what is wrong).
func (l *Log) newestCheckpoint(ctx context.Context, head uint64) (seq uint64, found bool) {
	if l.cpKey == nil {
		return 0, false
	}
	for hi := head; hi > 0 && head-hi < checkpointSearch; {
		lo := hi - min(hi, checkpointWindow)
		err := l.store.ScanAudit(ctx, lo, func(rec storage.AuditRecord) (bool, error) {
			if rec.Seq > hi {
				return false, nil
			}
			// Our own encoder writes the action exactly like this; the
			// parse confirms it (and the Verifier checks the event).
			if bytes.Contains(rec.Data, checkpointMarker) {
				if ev, err := ParseEvent(rec.Data); err == nil && ev.Action == ActionCheckpoint && rec.Seq > 1 {
					seq, found = rec.Seq, true
				}
			}
			return rec.Seq < hi, nil
		})
		if err != nil {
			l.logger.Warn("audit chain: cannot search for the newest checkpoint", "err", err)
			return 0, false
		}
		if found {
			return seq, true
		}
		hi = lo
	}
	return 0, false
}
