#!/usr/bin/env bash
# Benchmarks (not part of the test suite): vaultd's proxy over HTTP/2 and
# HTTP/3, with [audit] sync = "batch" and "always", against a direct call,
# nginx as an mTLS reverse proxy and a minimal Go mTLS proxy (the floor),
# plus an fdatasync floor, the refresh storm, store_token vs raw bbolt,
# the audit retention file size and vaultd on PostgreSQL (1 and 3 nodes:
# proxied calls, store_token, the refresh storm), all in one run on this
# machine; 1,000 vs 1 million integrations (memory, start-up) only with
# -scale-large 10000/1000000 (slow: one HSM key object per tenant). Writes
# docs/benchmarks.md and leaves the binaries and the CPU profile in
# $BENCH_OUT (default /tmp/vaultd-bench). Loopback only; about 6 minutes
# and ~1.5 GB of disk in $TMPDIR. Extra arguments go to vaultd-bench
# (e.g. -retention-n 5000 for a quick check, -postgres=false to skip it).
#   BENCH_DURATION  measured time per scenario (default 5s)
#   VAULTD_PG_DSN   a PostgreSQL cluster to use (a role that may create
#                   roles and databases); unset, a throwaway one is started
#                   with scripts/pg.sh when Debian's postgresql is installed
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/bench.sh: nginx is missing; run as root or install nginx-light" >&2
    exit 1
  fi
  echo "installing: nginx-light" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

out=${BENCH_OUT:-${TMPDIR:-/tmp}/vaultd-bench}
mkdir -p "$out"
echo "== go build (no -race)"
go build -o "$out/" ./cmd/vaultd ./cmd/vaultctl
go build -o "$out/vaultd-bench" ./internal/bench/cmd/vaultd-bench
if [ -z "${VAULTD_PG_DSN:-}" ]; then
  source scripts/pg.sh
  if pg_bindir >/dev/null 2>&1; then
    echo "== PostgreSQL (throwaway cluster)"
    pg_up
    trap pg_down EXIT
  else
    echo "scripts/bench.sh: no PostgreSQL installed; its section is skipped" >&2
  fi
fi
echo "== benchmark"
"$out/vaultd-bench" -bin "$out" -nginx "$NGINX" -out docs/benchmarks.md -profile-dir "$out" \
  -duration "${BENCH_DURATION:-5s}" "$@"
