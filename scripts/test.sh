#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run runs.
# Installs what it needs, then gofmt, go vet, staticcheck, and go test -race over every package
# (SoftHSM tokens are made per test process in temp dirs; nothing global is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1

echo "== go version: $(go version)"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
echo "== go vet"
go vet ./...
# Pinned: staticcheck's checks change between releases, and an unpinned
# linter would fail CI on a day nobody changed a line.
echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.7.0 ./...
echo "== go build ./cmd/..."
go build -o /dev/null ./cmd/...
echo "== go test -race"
# -p 2: the suite runs on 2-core machines; SoftHSM- and process-heavy packages share them.
go test -race -count=1 -p 2 -timeout 9m "$@" ./...
echo "== packaging (.deb/.rpm, lintian, rpmlint, systemd-analyze, install + run + purge)"
bash scripts/ci-packaging.sh
echo "== all checks passed"
