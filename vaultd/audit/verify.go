package audit

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vaultd/vaultd/storage"
)

// MaxLineBytes bounds one NDJSON line in Verify and in the mirror check.
// Events are a few hundred bytes; the bound keeps a hostile file from
// making the verifier buffer without limit.
const MaxLineBytes = 1 << 20

// ChainError reports where a chain is broken. Seq is the first broken seq:
// the seq of the offending line, or, when that line's seq is missing or
// wrong (a deleted, inserted or reordered line), the seq that was expected
// there. Seq is 0 only when nothing was known (an unreadable first line).
type ChainError struct {
	Seq    uint64
	Line   int // 1-based line number in the input, 0 if not from a file
	Reason string
	// Err is the underlying error when the break was reported by the
	// store (a missing or mis-keyed record: storage.ErrCorrupt), else nil.
	Err error
}

func (e *ChainError) Error() string {
	where := fmt.Sprintf("seq %d", e.Seq)
	if e.Seq == 0 {
		where = "seq unknown"
	}
	if e.Line > 0 {
		where += fmt.Sprintf(" (line %d)", e.Line)
	}
	return "audit: chain broken at " + where + ": " + e.Reason
}

// Unwrap returns Err, so a store's corruption stays recognisable.
func (e *ChainError) Unwrap() error { return e.Err }

// VerifyResult summarises a verified chain. LastSeq and LastHash are what
// to compare against an external anchor (a SIEM's copy) to detect a
// truncated tail.
type VerifyResult struct {
	Events   int
	FirstSeq uint64
	LastSeq  uint64
	LastHash string
	// Anchored is true when the first event's prev_hash was checked: seq 1
	// from the genesis hash, or the hash given to Verifier.Anchor. False
	// for a segment whose first prev_hash is taken on trust.
	Anchored bool
	// Checkpoints counts the audit.checkpoint events whose signature was
	// verified (only with SetCheckpointKey); LastCheckpoint is the seq of
	// the newest, 0 if none.
	Checkpoints    int
	LastCheckpoint uint64
}

// Verifier checks a chain line by line; the zero value is ready and
// accepts a chain starting at any seq (see Anchor). Verify, Log.VerifyStore
// and vaultctl audit verify use it.
type Verifier struct {
	res VerifyResult
	err error

	anchored   bool // Anchor was called
	anchorSeq  uint64
	anchorHash string

	cpKey crypto.PublicKey // SetCheckpointKey; nil checks no checkpoint
}

// SetCheckpointKey makes the verifier check every audit.checkpoint event
// with pub: its detail must claim the previous event's seq and hash and
// carry a valid signature over them (see checkpoint.go). A nil key checks
// none. Call it before the first Add.
func (v *Verifier) SetCheckpointKey(pub crypto.PublicKey) { v.cpKey = pub }

// Anchor makes the chain start after a known point: the first event must
// be seq+1 with prev_hash equal to hash (the hash of event seq, taken from
// a copy held elsewhere). Anchor(0, storage.GenesisHash) requires a chain
// from seq 1. Call it before the first Add.
func (v *Verifier) Anchor(seq uint64, hash string) {
	v.anchored, v.anchorSeq, v.anchorHash = true, seq, hash
}

// Add checks the next line (without its newline). After the first error
// every later call returns the same error.
func (v *Verifier) Add(line []byte, lineNo int) error {
	if v.err != nil {
		return v.err
	}
	v.err = v.add(line, lineNo)
	return v.err
}

func (v *Verifier) add(line []byte, lineNo int) error {
	expected := uint64(0)
	if v.res.Events > 0 {
		expected = v.res.LastSeq + 1
	}
	p, err := parseLine(line)
	if err != nil {
		seq := p.seq
		if seq == 0 {
			seq = looseSeq(line)
		}
		return &ChainError{Seq: v.brokenAt(seq), Line: lineNo, Reason: reasonOf(err)}
	}
	if expected != 0 && p.seq != expected {
		reason := fmt.Sprintf("seq %d follows seq %d (line deleted, inserted or reordered; an export filtered by tenant, integration or action is not a contiguous chain)", p.seq, v.res.LastSeq)
		return &ChainError{Seq: v.brokenAt(p.seq), Line: lineNo, Reason: reason}
	}
	if v.res.Events == 0 && v.anchored && p.seq != v.anchorSeq+1 {
		reason := fmt.Sprintf("first event is seq %d, but the anchor is seq %d", p.seq, v.anchorSeq)
		return &ChainError{Seq: v.anchorSeq + 1, Line: lineNo, Reason: reason}
	}
	if p.computed != p.hash {
		return &ChainError{Seq: p.seq, Line: lineNo, Reason: "hash does not match the event's content"}
	}
	switch {
	case v.res.Events > 0:
		if p.prevHash != v.res.LastHash {
			return &ChainError{Seq: p.seq, Line: lineNo, Reason: fmt.Sprintf("prev_hash does not equal the hash of seq %d", v.res.LastSeq)}
		}
	case v.anchored:
		if p.prevHash != v.anchorHash {
			return &ChainError{Seq: p.seq, Line: lineNo, Reason: fmt.Sprintf("prev_hash does not equal the anchor's hash of seq %d", v.anchorSeq)}
		}
		if p.seq == 1 && p.prevHash != storage.GenesisHash {
			return &ChainError{Seq: 1, Line: lineNo, Reason: "seq 1 does not start from the genesis hash (64 zeros)"}
		}
		v.res.Anchored = true
	case p.seq == 1:
		if p.prevHash != storage.GenesisHash {
			return &ChainError{Seq: 1, Line: lineNo, Reason: "seq 1 does not start from the genesis hash (64 zeros)"}
		}
		v.res.Anchored = true
	}
	if v.cpKey != nil && p.action == ActionCheckpoint {
		// After the chain checks: prev_hash is now known to be the
		// previous event's hash (or the anchor's, or on trust for an
		// unanchored first line).
		if reason, ok := checkCheckpoint(v.cpKey, p.seq, p.prevHash, p.detail); !ok {
			return &ChainError{Seq: p.seq, Line: lineNo, Reason: reason}
		}
		v.res.Checkpoints++
		v.res.LastCheckpoint = p.seq
	}
	if v.res.Events == 0 {
		v.res.FirstSeq = p.seq
	}
	v.res.Events++
	v.res.LastSeq = p.seq
	v.res.LastHash = p.hash
	return nil
}

// brokenAt names the first broken seq for a line claiming seq (0 if
// unreadable): on the first line, the line's own seq; later, the seq
// expected there, unless the line's seq lies before the segment's first
// (a line moved down from earlier), which is then the earliest break.
func (v *Verifier) brokenAt(seq uint64) uint64 {
	if v.res.Events == 0 {
		if v.anchored {
			return v.anchorSeq + 1
		}
		return seq
	}
	if seq != 0 && seq < v.res.FirstSeq {
		return seq
	}
	return v.res.LastSeq + 1
}

// looseSeq reads a seq from a line that failed strict parsing, only to
// name it in the error; 0 if there is none.
func looseSeq(line []byte) uint64 {
	var h struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(line, &h) != nil {
		return 0
	}
	return h.Seq
}

// reasonOf strips the package prefix from a parse error for ChainError.
func reasonOf(err error) string {
	return strings.TrimPrefix(err.Error(), "audit: ")
}

// Result is the summary of the lines added so far without error.
func (v *Verifier) Result() VerifyResult { return v.res }

// Verify reads an NDJSON audit chain (a GET /v1/audit export or the mirror
// file) and checks every line: its hash recomputed from its content, seq
// consecutive, prev_hash equal to the previous line's hash, and, for a
// chain starting at seq 1, the genesis prev_hash. A chain starting later is
// checked from its own first line (Anchored false: the caller decides
// whether that is acceptable). Blank lines are allowed only at the end.
// Lines over MaxLineBytes are refused. The error is a *ChainError naming
// the first broken seq, or an I/O error from r. Empty input verifies with
// Events 0. See the package doc for what this proves.
func Verify(r io.Reader) (VerifyResult, error) {
	var v Verifier
	err := v.AddReader(r)
	return v.Result(), err
}

// AddReader checks the lines of r, as Verify does, as the continuation of
// the chain added so far: several files given in order (rotated mirror
// segments, export pages) are checked as one chain across their
// boundaries. Line numbers in errors count from 1 in each reader; blank
// lines may end a reader but not interrupt one. After the first error
// every later call returns the same error.
func (v *Verifier) AddReader(r io.Reader) error {
	if v.err != nil {
		return v.err
	}
	v.err = v.addReader(r)
	return v.err
}

func (v *Verifier) addReader(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	blankAt := 0 // first blank line seen, if any
	for {
		line, err := readLine(br, MaxLineBytes)
		if errors.Is(err, io.EOF) && line == nil {
			return nil
		}
		lineNo++
		if errors.Is(err, errLineTooLong) {
			return &ChainError{Seq: v.next(), Line: lineNo, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("audit: read line %d: %w", lineNo, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			if blankAt == 0 {
				blankAt = lineNo
			}
		} else {
			if blankAt != 0 {
				return &ChainError{Seq: v.next(), Line: blankAt, Reason: "blank line inside the chain"}
			}
			if aerr := v.Add(line, lineNo); aerr != nil {
				return aerr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// next is the seq expected on the next line, 0 if unknown.
func (v *Verifier) next() uint64 {
	switch {
	case v.res.Events > 0:
		return v.res.LastSeq + 1
	case v.anchored:
		return v.anchorSeq + 1
	}
	return 0
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its "\n". At the end of input it
// returns the final unterminated line (if any) with io.EOF, or nil, io.EOF.
// A line over max bytes yields errLineTooLong.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > max+1 { // +1: the newline itself
			return nil, errLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				return nil, io.EOF
			}
			return buf, io.EOF
		default:
			return nil, err
		}
	}
}
