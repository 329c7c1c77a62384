#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run runs.
# Installs what it needs, then gofmt, go vet, staticcheck, a build and test without cgo, and
# go test -race over every package (SoftHSM tokens are made per test process in temp dirs;
# nothing global is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser test of the connect flow must run, never skip: deps.sh installs
# Chromium for it, and the test fails if it is still missing.
export VAULTD_REQUIRE_BROWSER=1
# Likewise promtool for the alert rules' check (vaultd/e2e/alertrules_test.go).
export VAULTD_REQUIRE_PROMTOOL=1
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1
# openCryptoki's soft token: pkcsslotd for the run (stopped after it if this started it),
# slot 3 initialised afresh; ock_up exports VAULTD_OCK_* for internal/ocktest, and
# VAULTD_REQUIRE_OCK makes a test that finds no token fail rather than skip.
source scripts/ock.sh
# A throwaway PostgreSQL cluster (scripts/pg.sh) for storage/postgres and the tests that use
# it: pg_up exports VAULTD_PG_DSN; VAULTD_REQUIRE_PG makes a test without it fail, not skip.
# One EXIT trap stops both, whichever started.
source scripts/pg.sh
trap 'pg_down; ock_down' EXIT
ock_up
pg_up
export VAULTD_REQUIRE_OCK=1 VAULTD_REQUIRE_PG=1

echo "== go version: $(go version)"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
echo "== go vet"
go vet ./...
# go.mod and go.sum must be exactly what the imports need: a dependency
# nobody uses, or a direct one marked indirect, is drift.
echo "== go mod tidy -diff"
go mod tidy -diff
# Pinned by go.mod's tool directive: staticcheck's checks change between
# releases, and an unpinned linter would fail CI on a day nobody changed a
# line.
echo "== staticcheck"
go tool staticcheck ./...
echo "== go build ./cmd/..."
go build -o /dev/null ./cmd/...
# Only hsm/pkcs11 needs cgo (without it, its Open fails with a clear error):
# the HSM contract and the packages above it must build and test without it.
# No -race here: the race detector needs cgo.
echo "== CGO_ENABLED=0 go build ./..., go test of the cgo-free core"
CGO_ENABLED=0 go build ./...
CGO_ENABLED=0 go test -count=1 ./hsm/... ./vaultd/envelope ./vaultd/vault ./vaultd/server ./vaultd/config
echo "== go test -race"
# -p 2: the suite runs on 2-core machines; SoftHSM- and process-heavy packages share them.
go test -race -count=1 -p 2 -timeout 9m "$@" ./...
echo "== packaging (.deb/.rpm, lintian, rpmlint, systemd-analyze, install + run + purge)"
bash scripts/ci-packaging.sh
echo "== all checks passed"
