package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// readBody reads a bounded JSON body; it writes the error itself.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, r, api.CodePayloadTooLarge, fmt.Sprintf("body exceeds %d bytes", s.maxBody))
		} else {
			writeError(w, r, api.CodeBadRequest, "cannot read body")
		}
		return nil, false
	}
	return body, true
}

// auditTimeout bounds a detached audit write (a store that cannot commit
// in this time is failing, and the call fails closed).
const auditTimeout = 30 * time.Second

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// record writes an audit event; a failure fails the call (audit is
// synchronous), so the caller must stop and answer 503. The write is
// detached from the caller: an event about something that already
// happened (a token sent upstream) is recorded even when the caller has
// hung up, timed out or reset the stream.
func (s *Server) record(ctx context.Context, ev audit.Event) error {
	ev.RequestID = requestID(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "audit write failed", "request_id", ev.RequestID, "action", ev.Action, "err", err)
		return err
	}
	return nil
}

// failed audits a write the vault refused (its success event commits with
// the change, inside the vault): ev gets the outcome and the status of
// err's answer.
func (s *Server) failed(q *request, ev audit.Event, err error) {
	_ = s.record(q.r.Context(), failedWrite(ev, err))
}
