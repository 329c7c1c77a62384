package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bbolt "go.etcd.io/bbolt"
)

// ctxWriter stops a long copy once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Backup writes a consistent snapshot of the database (a valid bbolt file)
// to w from one read transaction, while writers carry on.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.read(ctx, func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx: ctx, w: w})
		return err
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// bbolt flattens some writer errors to text; keep the cause.
			err = cerr
		}
		return n, fmt.Errorf("storage: backup: %w", err)
	}
	return n, nil
}

// BackupToFile writes a snapshot to path (mode 0600) through a temporary
// file in the same directory, fsynced and renamed into place, so path
// holds either the previous file or a complete backup, never a torn one.
// It refuses to overwrite the live database.
func (s *Store) BackupToFile(ctx context.Context, path string) (n int64, err error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if same, err := sameFile(s.path, path); err != nil {
		return 0, fmt.Errorf("storage: backup to %s: %w", path, err)
	} else if same {
		return 0, fmt.Errorf("storage: backup to %s: that is the live database", path)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("storage: backup to %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp already uses 0600; Chmod states the requirement.
	if err = f.Chmod(FileMode); err != nil {
		return 0, fmt.Errorf("storage: backup to %s: %w", path, err)
	}
	if n, err = s.Backup(ctx, f); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("storage: backup to %s: sync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("storage: backup to %s: close: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return n, fmt.Errorf("storage: backup to %s: %w", path, err)
	}
	// Persist the rename itself.
	if d, derr := os.Open(dir); derr == nil {
		serr := d.Sync()
		_ = d.Close()
		if serr != nil {
			return n, fmt.Errorf("storage: backup to %s: sync directory: %w", path, serr)
		}
	}
	return n, nil
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
