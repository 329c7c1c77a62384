package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/vaultd/vaultd/storage"
)

// Mirror durability: lines are written with one write(2) each (or a batch
// of whole lines) to an O_APPEND file and NOT fsynced per event. The
// database, which fsyncs every commit, is the record of truth; a mirror
// that lost its tail in a crash is repaired from it by New. The file is
// fsynced on Reopen and Close.

const (
	// scanChunk bounds the records read per store read transaction, so a
	// long catch-up never pins one bbolt read tx (which would block the
	// writers' file growth).
	scanChunk = 1024
	// writeChunk bounds one mirror write during catch-up.
	writeChunk = 256 << 10
)

// mirror brings the mirror file up to rec, which was just committed. Every
// seq below a committed seq is committed too, so when rec is not the next
// line (another Record committed in the same batch has not got here yet)
// the gap is read from the store: lines go out in seq order without
// waiting for the slower goroutine, which then finds its line written.
func (l *Log) mirror(ctx context.Context, rec storage.AuditRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if l.closed.Load() || l.now().Before(l.retryAt) {
			return
		}
		l.logger.Warn("audit mirror: reopening after an earlier failure", "path", l.path)
		if err := l.syncMirrorLocked(ctx); err != nil {
			return // counted and logged by syncMirrorLocked
		}
	}
	if rec.Seq <= l.written {
		return
	}
	if rec.Seq == l.written+1 {
		line := make([]byte, 0, len(rec.Data)+1)
		l.writeLocked(append(append(line, rec.Data...), '\n'), rec.Seq)
		return
	}
	_ = l.catchUpLocked(ctx, rec.Seq)
}

// writeLocked appends buf (whole lines ending at seq last) in one write.
// On failure it cuts the file back to its previous size, so the mirror
// never keeps a torn line; if even that fails, the file is dropped and
// repaired later by syncMirrorLocked.
func (l *Log) writeLocked(buf []byte, last uint64) bool {
	var size int64 = -1
	if st, err := l.f.Stat(); err == nil {
		size = st.Size()
	}
	_, err := l.f.Write(buf)
	if err == nil {
		l.written = last
		return true
	}
	l.mirrorFailures.Add(1)
	l.logger.Error("audit mirror: write failed; the database still holds the event",
		"path", l.path, "seq", last, "err", err)
	if size >= 0 {
		if terr := l.f.Truncate(size); terr == nil {
			return false // l.written unchanged: the next Record retries these lines
		}
	}
	l.dropLocked()
	return false
}

// dropLocked closes the mirror after a failure and schedules a repair.
func (l *Log) dropLocked() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
	l.retryAt = l.now().Add(mirrorRetry)
}

func (l *Log) closeMirrorLocked() error {
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("audit mirror: close %s: %w", l.path, err)
	}
	return nil
}

// catchUpLocked appends every committed record after l.written up to and
// including seq upTo (0: up to the head) from the store.
func (l *Log) catchUpLocked(ctx context.Context, upTo uint64) error {
	for range maxCatchUpRounds {
		var buf []byte
		var last uint64
		n := 0
		flush := func() bool {
			if len(buf) == 0 {
				return true
			}
			ok := l.writeLocked(buf, last)
			buf = buf[:0]
			return ok
		}
		done := false
		err := l.store.ScanAudit(ctx, l.written, func(rec storage.AuditRecord) (bool, error) {
			if upTo != 0 && rec.Seq > upTo {
				done = true
				return false, nil
			}
			if rec.Seq != l.written+uint64(n)+1 {
				return false, fmt.Errorf("audit mirror: store returned seq %d after %d", rec.Seq, l.written+uint64(n))
			}
			buf = append(buf, rec.Data...)
			buf = append(buf, '\n')
			last = rec.Seq
			n++
			return n < scanChunk && len(buf) < writeChunk, nil
		})
		if err != nil {
			l.mirrorFailures.Add(1)
			l.logger.Error("audit mirror: reading the store to catch up failed", "path", l.path, "err", err)
			return err
		}
		if !flush() {
			return errors.New("audit mirror: write failed")
		}
		if done || n == 0 || (upTo != 0 && l.written >= upTo) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return errors.New("audit mirror: catch-up did not finish")
}

// errCatchUp marks a mirror that opened and checked fine but could not be
// brought up to date (a full disk): not fatal to New.
var errCatchUp = errors.New("audit mirror: catch-up incomplete")

// maxCatchUpRounds bounds catch-up (scanChunk records per round): 2^53
// seqs would need 2^43 rounds, so this only stops a runaway store.
const maxCatchUpRounds = 1 << 43

// syncMirrorLocked opens the mirror, checks it against the store and
// catches it up. Called with the mirror closed.
func (l *Log) syncMirrorLocked(ctx context.Context) error {
	st, err := l.checkMirror(ctx)
	if err != nil {
		l.mirrorFailures.Add(1)
		l.dropLocked()
		l.logger.Error("audit mirror: cannot check the mirror file", "path", l.path, "err", err)
		return fmt.Errorf("audit mirror %s: %w", l.path, err)
	}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		l.mirrorFailures.Add(1)
		l.dropLocked()
		return fmt.Errorf("audit mirror: read head: %w", err)
	}
	from := st.last
	if st.corrupt != "" {
		aside := l.path + ".corrupt-" + l.now().UTC().Format("20060102T150405.000000000Z")
		l.mirrorFailures.Add(1)
		l.logger.Error("audit mirror: the mirror file disagrees with the database; moving it aside and rewriting it from the database",
			"path", l.path, "moved_to", aside, "reason", st.corrupt)
		if err := os.Rename(l.path, aside); err != nil {
			l.dropLocked()
			return fmt.Errorf("audit mirror: move corrupt %s aside: %w", l.path, err)
		}
		from = 0
		if st.first > 0 {
			from = st.first - 1
		}
	} else if st.empty {
		from = 0
		if l.synced {
			from = l.written // a fresh file after rotation continues the chain
		}
	}
	if from > head.Seq {
		from = 0 // never skip events: the store is the truth
	}
	// A pruned store has nothing before its anchor: a new or rewritten
	// mirror starts after it (chaining on to the archive segments).
	anchor, err := l.store.AuditAnchor(ctx)
	if err != nil {
		l.mirrorFailures.Add(1)
		l.dropLocked()
		return fmt.Errorf("audit mirror: read anchor: %w", err)
	}
	from = max(from, anchor.Seq)
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		l.mirrorFailures.Add(1)
		l.dropLocked()
		l.logger.Error("audit mirror: cannot open", "path", l.path, "err", err)
		return fmt.Errorf("audit mirror: open %s: %w", l.path, err)
	}
	if st.torn >= 0 {
		l.logger.Warn("audit mirror: cutting a torn last line", "path", l.path, "size", st.torn)
		if err := f.Truncate(st.torn); err != nil {
			_ = f.Close()
			l.mirrorFailures.Add(1)
			l.dropLocked()
			return fmt.Errorf("audit mirror: truncate %s: %w", l.path, err)
		}
	}
	l.f = f
	l.written = from
	l.synced = true
	if err := l.catchUpLocked(ctx, 0); err != nil {
		// Logged and counted there; the file stays open at l.written
		// unless the write path dropped it, and later Records retry.
		return fmt.Errorf("%w: %s: %w", errCatchUp, l.path, err)
	}
	return nil
}

// mirrorState is what checkMirror found.
type mirrorState struct {
	empty   bool   // no file, or a zero-length one
	first   uint64 // seq of the first line, 0 if unreadable
	last    uint64 // seq of the last line matching the store
	torn    int64  // >= 0: cut the file to this size (torn last line)
	corrupt string // non-empty: why the file cannot be kept
}

// checkMirror compares the mirror file with the store line by line.
// Mirror lines are the store's records byte for byte plus "\n", so any
// difference is a fault. An error means the file could not be read at all.
func (l *Log) checkMirror(ctx context.Context) (mirrorState, error) {
	st := mirrorState{torn: -1}
	f, err := os.OpenFile(l.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		st.empty = true
		return st, nil
	}
	if err != nil {
		return st, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return st, err
	} else if !fi.Mode().IsRegular() {
		return st, fmt.Errorf("not a regular file")
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var offset int64

	// nextLine returns the next complete line; torn reports an
	// unterminated last line; eof the clean end.
	nextLine := func() (line []byte, torn, eof bool, err error) {
		line, err = readLine(br, MaxLineBytes)
		switch {
		case errors.Is(err, io.EOF) && line == nil:
			return nil, false, true, nil
		case errors.Is(err, io.EOF):
			return nil, true, false, nil
		case errors.Is(err, errLineTooLong):
			return nil, false, false, errLineTooLong
		case err != nil:
			return nil, false, false, err
		}
		return line, false, false, nil
	}

	first, torn, eof, err := nextLine()
	switch {
	case errors.Is(err, errLineTooLong):
		st.corrupt = "line 1 is too long"
		return st, nil
	case err != nil:
		return st, err
	case eof:
		st.empty = true
		return st, nil
	case torn:
		st.corrupt = "the only line is torn"
		return st, nil
	}
	var hdr struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(first, &hdr); err != nil || hdr.Seq == 0 {
		st.corrupt = "line 1 has no valid seq"
		return st, nil
	}
	st.first = hdr.Seq
	lineNo := 1

	// The mirror may hold older lines than a pruned store: skip them up to
	// the anchor, whose hash the mirror's line must carry.
	anchor, err := l.store.AuditAnchor(ctx)
	if err != nil {
		return st, err
	}
	for hdr.Seq <= anchor.Seq {
		var h struct {
			Seq  uint64 `json:"seq"`
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal(first, &h); err != nil || h.Seq != hdr.Seq {
			st.corrupt = fmt.Sprintf("line %d has no valid seq", lineNo)
			return st, nil
		}
		if h.Seq == anchor.Seq && h.Hash != anchor.Hash {
			st.corrupt = fmt.Sprintf("line %d (seq %d) differs from the database's anchor of its pruned events", lineNo, h.Seq)
			return st, nil
		}
		offset += int64(len(first)) + 1
		line, torn, eof, err := nextLine()
		switch {
		case errors.Is(err, errLineTooLong):
			st.corrupt = fmt.Sprintf("line %d is too long", lineNo+1)
			return st, nil
		case err != nil:
			return st, err
		case (eof || torn) && h.Seq != anchor.Seq:
			st.corrupt = fmt.Sprintf("the file ends at seq %d, before the database's first remaining event %d", h.Seq, anchor.Seq+1)
			return st, nil
		case eof:
			st.last = anchor.Seq
			return st, nil
		case torn:
			st.last, st.torn = anchor.Seq, offset
			return st, nil
		}
		first = line
		lineNo++
		if err := json.Unmarshal(first, &hdr); err != nil || hdr.Seq != h.Seq+1 {
			st.corrupt = fmt.Sprintf("line %d does not follow seq %d", lineNo, h.Seq)
			return st, nil
		}
	}

	pending := first // the line to compare with the next record
	expect := hdr.Seq
	var ioErr error
	err = l.store.ScanAudit(ctx, hdr.Seq-1, func(rec storage.AuditRecord) (bool, error) {
		if rec.Seq != expect {
			return false, fmt.Errorf("store returned seq %d, expected %d", rec.Seq, expect)
		}
		if pending == nil {
			line, torn, eof, err := nextLine()
			switch {
			case errors.Is(err, errLineTooLong):
				st.corrupt = fmt.Sprintf("line %d is too long", lineNo+1)
				return false, nil
			case err != nil:
				ioErr = err
				return false, nil
			case eof:
				return false, nil
			case torn:
				st.torn = offset
				return false, nil
			}
			pending = line
			lineNo++
		}
		if !bytes.Equal(pending, rec.Data) {
			st.corrupt = fmt.Sprintf("line %d (seq %d) differs from the database", lineNo, rec.Seq)
			return false, nil
		}
		offset += int64(len(pending)) + 1
		st.last = rec.Seq
		pending = nil
		expect++
		return true, nil
	})
	if err != nil {
		return st, err
	}
	if ioErr != nil {
		return st, ioErr
	}
	if st.corrupt != "" || st.torn >= 0 {
		return st, nil
	}
	if pending != nil {
		// The store ran out before the mirror's first line.
		st.corrupt = fmt.Sprintf("line 1 has seq %d, beyond the database head", hdr.Seq)
		return st, nil
	}
	// The store is exhausted (or the file ended). Anything left in the
	// file is a line the store lacks, unless it is a torn fragment.
	_, torn, eof, err = nextLine()
	switch {
	case errors.Is(err, errLineTooLong):
		st.corrupt = fmt.Sprintf("line %d is too long", lineNo+1)
	case err != nil:
		return st, err
	case eof:
	case torn:
		st.torn = offset
	default:
		st.corrupt = fmt.Sprintf("line %d follows seq %d, the database head: the database lacks it", lineNo+1, st.last)
	}
	return st, nil
}
