#!/usr/bin/env bash
# openCryptoki's software token for the test suite (sourced by scripts/test.sh; run directly
# as `scripts/ock.sh up|down|env` to use it by hand). Debian 12's opencryptoki package puts its
# soft token in slot 3: AES-ECB/CBC/CBC-PAD, SHA256-HMAC and RSA (PSS included), but no
# AES-GCM, no AES key wrap and no EC. That is the point: it is the token vaultd must work on
# without the mechanisms SoftHSM has.
#
# ock_up starts pkcsslotd unless it is running (remembering whether it did, so ock_down
# stops only a daemon it started), then initialises slot 3 afresh: token label, user PIN,
# and the one user PIN change openCryptoki wants before a token is in normal use. Re-running
# it wipes the token: tests make their own key labels and leave nothing that matters.
# ock_up exports what internal/ocktest reads: VAULTD_OCK_MODULE, VAULTD_OCK_TOKEN,
# VAULTD_OCK_PIN. The PINs are those of a throwaway test token, not secrets.

OCK_MODULE=${OCK_MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so}
OCK_SLOT=${OCK_SLOT:-3}
OCK_LABEL=${OCK_LABEL:-vaultd-test}
OCK_SO_PIN=${OCK_SO_PIN:-87654321} # Debian's default SO PIN for a fresh soft token
OCK_USER_PIN=${OCK_USER_PIN:-24681357} # the soft token takes 4 to 8 characters
OCK_STARTED=""

ock_log() { echo "scripts/ock.sh: $*" >&2; }

# ock_dirs makes what pkcsslotd needs and the package's tmpfiles rule would make at boot:
# the pkcs11 group's lock and token directories, and /run/opencryptoki.
ock_dirs() {
  getent group pkcs11 >/dev/null || groupadd --system pkcs11
  if command -v systemd-tmpfiles >/dev/null 2>&1 && [ -e /usr/lib/tmpfiles.d/opencryptoki.conf ]; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/opencryptoki.conf >/dev/null 2>&1 || true
  fi
  install -d -m 0770 -o root -g pkcs11 /run/opencryptoki /var/lib/opencryptoki \
    /var/lib/opencryptoki/swtok /var/lib/opencryptoki/swtok/TOK_OBJ \
    /var/lock/opencryptoki /var/lock/opencryptoki/swtok
}

# A killed daemon whose parent has not reaped it still matches pgrep: look at the state.
ock_running() {
  ps -C pkcsslotd -o stat= 2>/dev/null | grep -qv '^Z' && [ -S /run/pkcsslotd.socket ]
}

ock_start() {
  if ock_running; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || { ock_log "pkcsslotd is not running and starting it needs root"; return 1; }
  ock_dirs
  /usr/sbin/pkcsslotd || { ock_log "pkcsslotd failed to start"; return 1; }
  for _ in $(seq 50); do
    ock_running && { OCK_STARTED=1; return 0; }
    sleep 0.1
  done
  ock_log "pkcsslotd started but its socket never appeared"
  return 1
}

ock_init_token() {
  local tool=(pkcs11-tool --module "$OCK_MODULE" --slot "$OCK_SLOT")
  "${tool[@]}" --init-token --label "$OCK_LABEL" --so-pin "$OCK_SO_PIN" >/dev/null
  "${tool[@]}" --login --login-type so --so-pin "$OCK_SO_PIN" --init-pin --pin 11223344 >/dev/null
  # A PIN set by the SO is expired until its user changes it once.
  "${tool[@]}" --login --pin 11223344 --change-pin --new-pin "$OCK_USER_PIN" >/dev/null
  pkcsconf -t -c "$OCK_SLOT" 2>/dev/null | grep -q "Label: $OCK_LABEL" ||
    { ock_log "slot $OCK_SLOT does not show label $OCK_LABEL after init"; return 1; }
}

ock_env() {
  export VAULTD_OCK_MODULE="$OCK_MODULE" VAULTD_OCK_TOKEN="$OCK_LABEL" VAULTD_OCK_PIN="$OCK_USER_PIN"
}

ock_up() {
  [ -e "$OCK_MODULE" ] || { ock_log "$OCK_MODULE missing (apt-get install opencryptoki)"; return 1; }
  ock_start || return 1
  ock_init_token || return 1
  ock_env
  ock_log "token $OCK_LABEL ready in slot $OCK_SLOT${OCK_STARTED:+ (pkcsslotd started for this run)}"
}

# ock_down stops pkcsslotd only if ock_up started it.
ock_down() {
  [ -n "$OCK_STARTED" ] || return 0
  local pid
  pid=$(cat /run/pkcsslotd.pid 2>/dev/null || cat /var/run/pkcsslotd.pid 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pkcsslotd ]; then
    kill "$pid" 2>/dev/null || true
  fi
  OCK_STARTED=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    up) ock_up; echo "export VAULTD_OCK_MODULE=$OCK_MODULE VAULTD_OCK_TOKEN=$OCK_LABEL VAULTD_OCK_PIN=$OCK_USER_PIN" ;;
    down) OCK_STARTED=1 ock_down ;;
    env) ock_env; echo "export VAULTD_OCK_MODULE=$OCK_MODULE VAULTD_OCK_TOKEN=$OCK_LABEL VAULTD_OCK_PIN=$OCK_USER_PIN" ;;
    *) echo "usage: scripts/ock.sh up|down|env" >&2; exit 2 ;;
  esac
fi
