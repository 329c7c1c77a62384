package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// BackupFunc writes a consistent snapshot of the database to w and returns
// how many bytes it wrote (storage/bolt.Store.Backup).
type BackupFunc func(ctx context.Context, w io.Writer) (int64, error)

const msgStoreUnavailable = "store temporarily unavailable"

// backup serves GET /v1/admin/backup (operator): the database as one bbolt
// file, streamed from a single read transaction while writers carry on. The
// store.backup event is committed before the snapshot is taken, so a backup
// holds its own audit event and a backup that cannot be audited is never
// sent. A failure after the first byte aborts the stream (the client sees a
// reset, not a short file with a 200) and is audited as a failure.
func (s *Server) backup(q *request) {
	w, r := q.w, q.r
	ctx := r.Context()
	if s.backupFn == nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgStoreUnavailable)
		return
	}
	ev := q.event(audit.ActionStoreBackup, "", "", "snapshot")
	ev.Outcome, ev.HTTPStatus = audit.OutcomeSuccess, q.status
	if s.record(ctx, ev) != nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgStoreUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="vaultd-%s.db"`, time.Now().UTC().Format("20060102T150405Z")))
	h.Set("Cache-Control", "no-store")
	// The trailers vouch for the stream: the client compares them with what
	// it received, so a stream cut short (or altered by a broken middlebox)
	// is never taken for a backup. An HTTP/1.1 body without Content-Length
	// is chunked, and trailers are the only way to send something after it.
	h.Set("Trailer", api.TrailerBackupSize+", "+api.TrailerBackupSHA256)
	sw := &sumWriter{w: w, h: sha256.New()}
	n, err := s.backupFn(ctx, sw)
	if err != nil {
		s.log.ErrorContext(ctx, "backup failed", "request_id", requestID(ctx), "bytes", n, "err", err)
		ev.Outcome, ev.HTTPStatus, ev.Detail = audit.OutcomeFailure, http.StatusServiceUnavailable, "snapshot aborted"
		_ = s.record(context.WithoutCancel(ctx), ev)
		if !sw.wrote {
			h.Del("Trailer")
			h.Del("Content-Disposition")
			writeError(w, r, api.CodeIntegrationUnavailable, msgStoreUnavailable)
			return
		}
		panic(http.ErrAbortHandler) // resets the stream: no trailers, so the client refuses the file
	}
	h.Set(api.TrailerBackupSize, strconv.FormatInt(n, 10))
	h.Set(api.TrailerBackupSHA256, hex.EncodeToString(sw.h.Sum(nil)))
	s.log.InfoContext(ctx, "backup sent", "request_id", requestID(ctx), "principal", q.sub.Principal, "bytes", n)
}

type sumWriter struct {
	w     io.Writer
	h     hash.Hash
	wrote bool
}

func (s *sumWriter) Write(p []byte) (int, error) {
	s.wrote = true
	n, err := s.w.Write(p)
	s.h.Write(p[:n])
	return n, err
}
