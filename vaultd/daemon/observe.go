package daemon

import (
	"context"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vaultd/vaultd/hsm"
	"github.com/vaultd/vaultd/internal/secret"
)

// countingKeyring counts the HSM operations the data-key cache makes, as
// vaultd_hsm_operations_total{op}: once the DEK cache is warm the proxy hot
// path must make none, and this is how an operator (and scripts/bench.sh)
// sees it. Labels are fixed operation names; nothing about keys or tenants.
// /readyz pings go to the keyring directly and are not counted.
type countingKeyring struct {
	hsm.Keyring
	ops *prometheus.CounterVec
}

func newCountingKeyring(kr hsm.Keyring, reg prometheus.Registerer) *countingKeyring {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vaultd_hsm_operations_total",
		Help: "PKCS#11 key operations by kind (wrap, unwrap), failures included; health pings are not counted.",
	}, []string{"op"})
	for _, op := range []string{"wrap", "unwrap"} {
		ops.WithLabelValues(op) // export zeros: "no HSM call" must be visible
	}
	reg.MustRegister(ops)
	return &countingKeyring{Keyring: kr, ops: ops}
}

func (c *countingKeyring) Wrap(ctx context.Context, plaintext, aad []byte) (hsm.WrappedKey, error) {
	c.ops.WithLabelValues("wrap").Inc()
	return c.Keyring.Wrap(ctx, plaintext, aad)
}

func (c *countingKeyring) Unwrap(ctx context.Context, w hsm.WrappedKey, aad []byte) (secret.Bytes, error) {
	c.ops.WithLabelValues("unwrap").Inc()
	return c.Keyring.Unwrap(ctx, w, aad)
}

// PprofEnv, set to "1", adds net/http/pprof under /debug/pprof/ on the ops
// listener (plain HTTP, meant for loopback). Off by default: profiles
// expose code paths and heap contents' shapes, never meant for production
// traffic. scripts/bench.sh uses it to profile vaultd under load.
const PprofEnv = "VAULTD_PPROF"

// opsHandler is the server's ops handler, plus pprof when PprofEnv=1.
func opsHandler(ops http.Handler) http.Handler {
	if os.Getenv(PprofEnv) != "1" {
		return ops
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", ops)
	return mux
}
