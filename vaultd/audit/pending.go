package audit

// Pending key events: `vaultctl init` and `vaultctl kek-rotate` create key
// material in the HSM without vaultd. When the database is free they
// record key.create through a Log like any event; when a running vaultd
// holds it, they leave the events in a small file beside the database,
// which vaultd records at its next start and on SIGHUP, then removes. The
// file holds what the event says (kind, label, version, time), never key
// material.

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
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PendingSuffix names the pending-events file: the database path plus it.
const PendingSuffix = ".audit-pending"

// PendingPath is the pending-events file of the database at storePath.
func PendingPath(storePath string) string { return storePath + PendingSuffix }

// Kinds of key a key.create event names.
const (
	KeyKindKEK          = "kek"               // a KEK version (vaultctl init, kek-rotate)
	KeyKindAuditSigning = "audit_signing_key" // the checkpoint signing key (vaultctl init)
)

// ActorVaultctl is the actor of events vaultctl records for its local
// commands.
const ActorVaultctl = "vaultctl"

// KeyCreated is one key.create event of an offline tool.
type KeyCreated struct {
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Kind    string    `json:"kind"`
	Label   string    `json:"label"`
	Version uint32    `json:"version,omitempty"` // KEK versions only
}

// Bounds of the pending file: a real one holds a handful of lines.
const (
	maxPendingBytes = 1 << 20
	maxPendingLabel = 256
)

// ErrPendingInvalid: a KeyCreated that cannot be recorded as given.
var ErrPendingInvalid = errors.New("audit: invalid pending key event")

func (k KeyCreated) validate() error {
	switch {
	case k.Kind != KeyKindKEK && k.Kind != KeyKindAuditSigning:
		return fmt.Errorf("%w: kind", ErrPendingInvalid)
	case k.Label == "" || len(k.Label) > maxPendingLabel || strings.ContainsFunc(k.Label, isSpaceOrControl) ||
		strings.ContainsAny(k.Label, ";,="):
		// No separators: the label lands in a key=value detail.
		return fmt.Errorf("%w: label", ErrPendingInvalid)
	case k.Actor != ActorVaultctl:
		// Only vaultctl writes this file: whoever else can write the
		// database's directory must not choose whom the trail names.
		return fmt.Errorf("%w: actor", ErrPendingInvalid)
	case k.Kind == KeyKindKEK && k.Version == 0:
		return fmt.Errorf("%w: a KEK needs its version", ErrPendingInvalid)
	case k.Time.IsZero():
		return fmt.Errorf("%w: time", ErrPendingInvalid)
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= 0x20 || r == 0x7f }

// Event is the key.create event k stands for: detail "kek label=L
// version=N" or "audit_signing_key label=L".
func (k KeyCreated) Event() Event {
	d := k.Kind + " label=" + k.Label
	if k.Version != 0 {
		d += " version=" + strconv.FormatUint(uint64(k.Version), 10)
	}
	return Event{Actor: k.Actor, Action: ActionKeyCreate, Outcome: OutcomeSuccess, Detail: d}
}

// AppendPending appends evs to the pending file at path (created 0600,
// never through a symlink) under an exclusive lock, and fsyncs it. A
// reader that removed the file while this waited for the lock is noticed
// and the new file is written instead, so no event goes to an unlinked
// file.
func AppendPending(path string, evs []KeyCreated) error {
	var buf bytes.Buffer
	for _, k := range evs {
		if err := k.validate(); err != nil {
			return err
		}
		k.Time = k.Time.UTC()
		line, err := json.Marshal(k)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			return fmt.Errorf("audit: pending events: %w", err)
		}
		if err := plainFile(f); err != nil {
			_ = f.Close()
			return err
		}
		current, err := lockCurrent(f, path)
		if err != nil || !current {
			_ = f.Close()
			if err != nil {
				return fmt.Errorf("audit: pending events: %w", err)
			}
			continue // removed while we waited: write the new file
		}
		_, err = f.Write(buf.Bytes())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("audit: pending events: %w", err)
		}
		return nil
	}
	return errors.New("audit: pending events: the file keeps being replaced")
}

// lockCurrent takes f's exclusive lock and reports whether path still
// names f (it may have been removed or replaced meanwhile).
func lockCurrent(f *os.File, path string) (bool, error) {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return false, err
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

// RecordPending records the key.create events of the pending file at path,
// in the file's order, each with " pending_since=<its time>" appended to
// its detail (it is recorded later than it happened), then removes the
// file. It returns how many events it recorded; no file is 0, nil. Lines
// that do not parse are dropped with one key.create failure event saying
// how many (their content is not echoed). If recording fails part-way,
// the file keeps the events not yet recorded and the error is returned:
// the next call goes on from there.
func (l *Log) RecordPending(ctx context.Context, path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit: pending events: %w", err)
	}
	defer f.Close()
	if err := plainFile(f); err != nil {
		return 0, err
	}
	current, err := lockCurrent(f, path)
	if err != nil {
		return 0, fmt.Errorf("audit: pending events: %w", err)
	}
	if !current {
		return 0, nil // another reader took it
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPendingBytes+1))
	if err != nil {
		return 0, fmt.Errorf("audit: pending events: %w", err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxPendingBytes+1)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	bad := 0
	if len(data) > maxPendingBytes {
		// Never this large in use: refuse the rest rather than grow.
		bad++
		lines = nil
	}
	n := 0
	for i, line := range lines {
		var k KeyCreated
		if err := json.Unmarshal(line, &k); err != nil || k.validate() != nil {
			bad++
			continue
		}
		ev := k.Event()
		ev.Detail += " pending_since=" + k.Time.UTC().Format(time.RFC3339)
		if _, err := l.Record(ctx, ev); err != nil {
			return n, errors.Join(fmt.Errorf("audit: pending events: %w", err), keepPending(f, lines[i:]))
		}
		n++
	}
	if bad > 0 {
		ev := Event{Actor: "vaultd", Action: ActionKeyCreate, Outcome: OutcomeFailure,
			Detail: fmt.Sprintf("pending events file: %d malformed line(s) dropped", bad)}
		if _, err := l.Record(ctx, ev); err != nil {
			return n, fmt.Errorf("audit: pending events: %w", err)
		}
	}
	if err := os.Remove(path); err != nil {
		return n, fmt.Errorf("audit: pending events: %w", err)
	}
	return n, nil
}

// keepPending rewrites f with the lines not yet recorded.
func keepPending(f *os.File, rest [][]byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, l := range rest {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	if _, err := f.WriteAt(buf.Bytes(), 0); err != nil {
		return err
	}
	return f.Sync()
}

// plainFile refuses anything at the pending path but a regular file with
// one link: a FIFO would hang start-up, and a hard link would let the
// truncation that follows a recording reach another file.
func plainFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit: pending events: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("audit: pending events: %s is not a regular file", f.Name())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
		return fmt.Errorf("audit: pending events: %s has %d links", f.Name(), st.Nlink)
	}
	return nil
}
