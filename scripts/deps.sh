#!/usr/bin/env bash
# Installs what building and testing vaultd needs on a fresh Debian 12 host (run as root).
# Idempotent: installs only what is missing.
set -euo pipefail

export PATH="$PATH:/usr/local/go/bin"
need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool   >/dev/null 2>&1 || need+=(opensc)
# openCryptoki's software token (scripts/ock.sh): a second PKCS#11 token without AES-GCM,
# key wrap or EC, which the HSM suite and an e2e golden path run against.
[ -x /usr/sbin/pkcsslotd ] || need+=(opencryptoki)
# PostgreSQL for storage/postgres's tests: scripts/pg.sh runs initdb and pg_ctl from it.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v gcc           >/dev/null 2>&1 || need+=(gcc libc6-dev)   # cgo: miekg/pkcs11, -race
command -v openssl       >/dev/null 2>&1 || need+=(openssl)
command -v curl          >/dev/null 2>&1 || need+=(curl)
command -v git           >/dev/null 2>&1 || need+=(git)
[ -e /usr/share/ca-certificates ] || need+=(ca-certificates)
# Headless Chromium for the connect flow's browser test (vaultd/e2e/browser_test.go),
# only for the test suite: scripts/test.sh sets VAULTD_REQUIRE_BROWSER before sourcing
# this, and the test then fails rather than skips without it. Without recommends it
# still runs headless; one font keeps its text rendering sane.
if [ -n "${VAULTD_REQUIRE_BROWSER:-}" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -e /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
fi
# promtool checks the shipped alert rules (packaging/prometheus,
# vaultd/e2e/alertrules_test.go); scripts/test.sh sets VAULTD_REQUIRE_PROMTOOL so the
# test fails rather than skips without it. Debian's prometheus package provides it.
if [ -n "${VAULTD_REQUIRE_PROMTOOL:-}" ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/deps.sh: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  # Debian 12's golang package is too old for this module (go.mod needs 1.26).
  if apt-cache policy golang-1.26-go 2>/dev/null | grep -q Candidate; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-1.26-go >/dev/null
    export PATH="$PATH:/usr/lib/go-1.26/bin"
  else
    echo "scripts/deps.sh: Go >= 1.26 is required (expected at /usr/local/go/bin/go)" >&2
    exit 1
  fi
fi
