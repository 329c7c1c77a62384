package daemon

// Signed audit checkpoints: a loop appends one every [audit]
// checkpoint_interval while events were added, and build's closers add a
// last one at shutdown, after the API has drained and the service has
// closed, before the audit log and the store close.

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/vaultd/audit"
)

// finalCheckpointTimeout bounds the shutdown checkpoint: a hung HSM must
// not hold the stop.
const finalCheckpointTimeout = 10 * time.Second

// auditSigner is the keyring's audit key. vaultd refuses to start without
// it (hsm.ErrAuditKeyNotFound is a configuration error, see ExitCode); an
// installation set up before signed checkpoints gets it from running
// 'vaultctl init' again, which creates only what is missing.
func auditSigner(ctx context.Context, kr hsm.Keyring) (hsm.AuditSigner, crypto.PublicKey, error) {
	s, ok := kr.(hsm.AuditSigner)
	if !ok {
		return nil, nil, configError(fmt.Errorf("the %T keyring cannot sign audit checkpoints", kr))
	}
	pub, err := s.AuditPublicKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, err := audit.AlgOf(pub); err != nil {
		return nil, nil, configError(err)
	}
	return s, pub, nil
}

type checkpointer struct {
	log     *slog.Logger
	audit   *audit.Log
	signer  hsm.AuditSigner
	results *prometheus.CounterVec // result: written, failed
}

func newCheckpointer(log *slog.Logger, l *audit.Log, s hsm.AuditSigner, reg prometheus.Registerer) *checkpointer {
	c := &checkpointer{log: log, audit: l, signer: s, results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vaultd_audit_checkpoints_total",
		Help: "Signed audit checkpoints by result: written, or failed (HSM or store error; retried at the next interval).",
	}, []string{"result"})}
	c.results.WithLabelValues("written")
	c.results.WithLabelValues("failed")
	if reg != nil {
		reg.MustRegister(c.results)
	}
	return c
}

// once appends a checkpoint if events were added since the last one.
func (c *checkpointer) once(ctx context.Context) {
	ev, written, err := c.audit.Checkpoint(ctx, c.signer)
	switch {
	case err != nil:
		c.results.WithLabelValues("failed").Inc()
		c.log.Error("audit checkpoint failed", "err", err)
	case written:
		c.results.WithLabelValues("written").Inc()
		c.log.Debug("audit checkpoint written", "seq", ev.Seq)
	}
}

// loop runs until ctx ends, reading the interval each round so SIGHUP
// applies a new one.
func (c *checkpointer) loop(ctx context.Context, interval func() time.Duration) {
	for {
		t := time.NewTimer(interval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.once(ctx)
	}
}

// final is the shutdown checkpoint.
func (c *checkpointer) final() {
	ctx, cancel := context.WithTimeout(context.Background(), finalCheckpointTimeout)
	defer cancel()
	c.once(ctx)
}
