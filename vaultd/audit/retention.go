package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// ActionAuditPrune is recorded once per retention run that pruned events;
// its detail names the range and the archive segment.
const ActionAuditPrune = "audit.prune"

// ErrArchive: writing or checking an archive segment failed; nothing was
// pruned past what the archive holds.
var ErrArchive = errors.New("audit: archive")

// Retention defaults.
const (
	// DefaultPruneBatch is how many events one prune transaction deletes:
	// small enough that a request's commit waits at most a few
	// milliseconds behind it.
	DefaultPruneBatch = 1000
	// DefaultPruneMax bounds the events one Prune run handles (and holds
	// in one archive segment); a backlog takes several runs.
	DefaultPruneMax = 50000
	// prunePause lets other writers in between two prune transactions.
	prunePause = 5 * time.Millisecond
)

// PruneOptions configure one Prune run.
type PruneOptions struct {
	// Before: events whose time is before it are pruned (now - retention).
	Before time.Time
	// ArchiveDir, if set, receives the pruned events first as a segment
	// file "audit-<first seq>-<last seq>.jsonl" (both zero-padded to 20
	// digits, so lexical order is chain order), mode 0600, fsynced with
	// its directory before any event is deleted.
	ArchiveDir string
	// Batch is the events per prune transaction (DefaultPruneBatch if 0).
	Batch int
	// Max bounds the events of one run (DefaultPruneMax if 0).
	Max int
}

// PruneResult says what one run did. Pruned is 0 when nothing was old
// enough.
type PruneResult struct {
	Pruned            int
	FirstSeq, LastSeq uint64
	Segment           string // archive segment written or reused, "" if none
}

// Prune deletes the oldest events recorded before opts.Before from the
// store, never the newest event, archiving them first when
// opts.ArchiveDir is set, and then records one audit.prune event. The
// events are verified (hashes and chain from the store's anchor) before
// they are archived or deleted: a broken chain is never pruned. Runs are
// serialised; a run while the start-up verification is still going in the
// background does nothing (it would race that scan).
//
// Crash safety: a segment is complete on disk (temporary file, fsync,
// rename to its final name, directory fsync) before its events are deleted,
// and a run first looks at the newest segment in the directory: events
// still in the store that it already holds are deleted without being
// written again, and the new segment starts after it. So a crash between
// the write and the deletes leaves neither a duplicate nor a gap.
func (l *Log) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	if l.closed.Load() {
		return PruneResult{}, ErrClosed
	}
	if err := l.refuseIfBroken(); err != nil {
		return PruneResult{}, err
	}
	if err := l.Flush(ctx); err != nil {
		return PruneResult{}, err
	}
	if l.bgDone != nil {
		select {
		case <-l.bgDone:
		default:
			l.logger.Info("audit retention: start-up verification still running, pruning later")
			return PruneResult{}, nil
		}
	}
	pruner, ok := l.store.(storage.AuditPruner)
	if !ok {
		return PruneResult{}, errors.New("audit: prune: the store cannot delete audit events (no storage.AuditPruner)")
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultPruneBatch
	}
	if opts.Max <= 0 {
		opts.Max = DefaultPruneMax
	}
	l.pruneMu.Lock()
	defer l.pruneMu.Unlock()

	anchor, err := l.store.AuditAnchor(ctx)
	if err != nil {
		return PruneResult{}, fmt.Errorf("audit: anchor: %w", err)
	}
	head, err := l.store.AuditHead(ctx)
	if err != nil {
		return PruneResult{}, fmt.Errorf("audit: head: %w", err)
	}
	res := PruneResult{FirstSeq: anchor.Seq + 1}
	upTo := anchor.Seq
	if opts.ArchiveDir != "" {
		// A segment already on disk (a crash before its deletes finished)
		// covers events still in the store: delete them, do not rewrite.
		seg, last, err := l.archivedUpTo(ctx, opts.ArchiveDir, anchor, head)
		if err != nil {
			return PruneResult{}, err
		}
		if last > upTo {
			upTo, res.Segment = last, seg
		}
	}
	if upTo == anchor.Seq {
		var err error
		if upTo, res.Segment, err = l.collect(ctx, anchor, head, opts); err != nil {
			return PruneResult{}, err
		}
	}
	if upTo == anchor.Seq {
		return PruneResult{}, nil
	}
	for done := anchor.Seq; done < upTo; {
		n, err := pruner.PruneAudit(ctx, upTo, opts.Batch)
		if err != nil {
			return res, fmt.Errorf("audit: prune: %w", err)
		}
		if n == 0 {
			return res, fmt.Errorf("audit: prune stopped at seq %d of %d", done, upTo)
		}
		done += uint64(n)
		res.Pruned += n
		res.LastSeq = done
		if done < upTo {
			t := time.NewTimer(prunePause)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, ctx.Err()
			case <-t.C:
			}
		}
	}
	detail := fmt.Sprintf("seq %d-%d pruned", res.FirstSeq, res.LastSeq)
	if res.Segment != "" {
		detail += ", archived in " + filepath.Base(res.Segment)
	}
	if _, err := l.Record(ctx, Event{Actor: "vaultd", Action: ActionAuditPrune, Outcome: OutcomeSuccess, Detail: detail}); err != nil {
		return res, fmt.Errorf("audit: record the prune: %w", err)
	}
	l.logger.Info("audit retention: pruned events", "first_seq", res.FirstSeq, "last_seq", res.LastSeq,
		"events", res.Pruned, "segment", res.Segment)
	return res, nil
}

// collect verifies the events to prune (from after anchor: older than
// opts.Before, at most opts.Max, never the head) and, with an archive,
// writes them as a segment. It returns the last seq to prune (anchor.Seq
// if none) and the segment's path.
func (l *Log) collect(ctx context.Context, anchor, head storage.AuditHead, opts PruneOptions) (uint64, string, error) {
	var v Verifier
	v.Anchor(anchor.Seq, anchor.Hash)
	var seg *segmentWriter
	if opts.ArchiveDir != "" {
		var err error
		if seg, err = newSegmentWriter(opts.ArchiveDir); err != nil {
			return anchor.Seq, "", err
		}
		defer seg.abort()
	}
	last := anchor.Seq
	err := l.store.ScanAudit(ctx, anchor.Seq, func(rec storage.AuditRecord) (bool, error) {
		if rec.Seq >= head.Seq || rec.Seq-anchor.Seq > uint64(opts.Max) {
			return false, nil
		}
		ev, err := ParseEvent(rec.Data)
		if err != nil {
			return false, &ChainError{Seq: rec.Seq, Reason: reasonOf(err)}
		}
		if !ev.Time.Before(opts.Before) {
			return false, nil
		}
		if err := v.Add(rec.Data, 0); err != nil {
			return false, err
		}
		if res := v.Result(); rec.Seq != res.LastSeq || rec.Hash != res.LastHash {
			return false, &ChainError{Seq: rec.Seq, Reason: "stored key or hash disagrees with the event"}
		}
		if seg != nil {
			if err := seg.add(rec.Data); err != nil {
				return false, err
			}
		}
		last = rec.Seq
		return true, nil
	})
	if err != nil {
		return anchor.Seq, "", fmt.Errorf("audit: read the events to prune: %w", err)
	}
	if last == anchor.Seq || seg == nil {
		return last, "", nil
	}
	path, err := seg.finish(anchor.Seq+1, last)
	if err != nil {
		return anchor.Seq, "", err
	}
	return last, path, nil
}

// segmentWriter writes a segment to a temporary file in the archive
// directory (streamed: a run's events are never all held in memory) and
// then gives it its name.
type segmentWriter struct {
	dir string
	f   *os.File
	w   *bufio.Writer
}

func newSegmentWriter(dir string) (*segmentWriter, error) {
	f, err := os.CreateTemp(dir, ".partial-segment-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	return &segmentWriter{dir: dir, f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (s *segmentWriter) add(line []byte) error {
	_, err := s.w.Write(line)
	if err == nil {
		err = s.w.WriteByte('\n')
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrArchive, s.f.Name(), err)
	}
	return nil
}

// abort removes the temporary file (after finish, only its extra name).
func (s *segmentWriter) abort() {
	if s.f != nil {
		_ = s.f.Close()
	}
	_ = os.Remove(s.f.Name())
}

// finish makes the segment durable under its name: fsync, rename (never
// replacing a file; one of that name already there is kept if it holds
// the same bytes), directory fsync.
func (s *segmentWriter) finish(first, last uint64) (string, error) {
	path := filepath.Join(s.dir, SegmentName(first, last))
	fail := func(err error) (string, error) { return "", fmt.Errorf("%w: %s: %w", ErrArchive, path, err) }
	if err := errors.Join(s.w.Flush(), s.f.Sync()); err != nil {
		return fail(err)
	}
	// Rename, not link (vaultd's seccomp filter has no link(2)): Prune runs
	// are serialised and only this vaultd (which holds the database lock)
	// writes here, so checking first keeps an existing segment intact.
	if _, err := os.Lstat(path); err == nil {
		old, err1 := os.ReadFile(path)
		cur, err2 := os.ReadFile(s.f.Name())
		if err := errors.Join(err1, err2); err != nil {
			return fail(err)
		}
		if !bytes.Equal(old, cur) {
			return fail(errors.New("exists with other content"))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	} else if err := os.Rename(s.f.Name(), path); err != nil {
		return fail(err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fail(err)
	}
	return path, nil
}

const segmentPrefix, segmentSuffix = "audit-", ".jsonl"

// SegmentName is the archive file name of events first..last.
func SegmentName(first, last uint64) string {
	return fmt.Sprintf("%s%020d-%020d%s", segmentPrefix, first, last, segmentSuffix)
}

// parseSegmentName reads first and last back from a segment name.
func parseSegmentName(name string) (first, last uint64, ok bool) {
	mid, ok1 := strings.CutPrefix(name, segmentPrefix)
	mid, ok2 := strings.CutSuffix(mid, segmentSuffix)
	a, b, ok3 := strings.Cut(mid, "-")
	if !ok1 || !ok2 || !ok3 || len(a) != 20 || len(b) != 20 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || first == 0 || last < first {
		return 0, 0, false
	}
	return first, last, true
}

// archivedUpTo finds the newest segment in dir (creating dir, 0700, if
// missing) and returns it and its last seq when it holds events the store
// still has after anchor; it checks that the segment verifies and that
// its last event is the store's. Otherwise it returns anchor.Seq.
func (l *Log) archivedUpTo(ctx context.Context, dir string, anchor, head storage.AuditHead) (string, uint64, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", 0, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	var newest string
	var first, last uint64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".partial-segment-") {
			// Left by a run that stopped before naming it: never a segment.
			_ = os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if f, l, ok := parseSegmentName(e.Name()); ok && l > last {
			newest, first, last = e.Name(), f, l
		}
	}
	if last <= anchor.Seq {
		return "", anchor.Seq, nil
	}
	path := filepath.Join(dir, newest)
	if last >= head.Seq {
		return "", 0, fmt.Errorf("%w: %s holds events up to seq %d, but this database's chain ends at %d (an archive of another database?)",
			ErrArchive, path, last, head.Seq)
	}
	if first > anchor.Seq+1 {
		return "", 0, fmt.Errorf("%w: %s starts at seq %d, but the database's events start at %d", ErrArchive, path, first, anchor.Seq+1)
	}
	res, err := verifySegment(path)
	if err != nil {
		return "", 0, err
	}
	var stored string
	if err := l.store.ScanAudit(ctx, last-1, func(rec storage.AuditRecord) (bool, error) {
		if rec.Seq == last {
			stored = rec.Hash
		}
		return false, nil
	}); err != nil {
		return "", 0, fmt.Errorf("audit: read seq %d: %w", last, err)
	}
	if res.FirstSeq != first || res.LastSeq != last || res.LastHash != stored {
		return "", 0, fmt.Errorf("%w: %s does not hold the database's events %d-%d", ErrArchive, path, first, last)
	}
	l.logger.Warn("audit retention: events already archived are still in the database (an earlier run stopped); pruning them",
		"segment", path, "last_seq", last)
	return path, last, nil
}

// verifySegment verifies one segment file on its own.
func verifySegment(path string) (VerifyResult, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer f.Close()
	res, err := Verify(f)
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrArchive, path, err)
	}
	return res, nil
}
