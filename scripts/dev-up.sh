#!/usr/bin/env bash
# Brings vaultd up on embedded defaults in a local folder and walks the golden
# path once: tenant created, the integration connected through vaultd's own
# OAuth flow (the connect listener, the example provider's consent page,
# approved here by curl with a cookie jar), proxied call answered, audit trail
# shown. It leaves vaultd (and the dev-only example provider) running, prints
# how to call them and a fresh connect link to open in a browser.
#
#   scripts/dev-up.sh          start (or restart) the dev instance under ./.dev
#   scripts/dev-up.sh stop     stop it
#
# Everything lives in $VAULTD_DEV_DIR (default ./.dev): a SoftHSM token, the
# bbolt file, a throwaway PKI, the config. NOT for production: the PKI, the PIN
# handling and the example provider are development stand-ins.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV=${VAULTD_DEV_DIR:-$ROOT/.dev}
API_PORT=${VAULTD_DEV_PORT:-8443}
OPS_PORT=${VAULTD_DEV_OPS_PORT:-9090}
PROV_PORT=${VAULTD_DEV_PROVIDER_PORT:-8480}
CONNECT_PORT=${VAULTD_DEV_CONNECT_PORT:-8444}
# The connect flow's return_to: an application page. Nothing listens there in
# the dev setup; a browser lands on an error page whose URL still shows
# connect_session and status, and the session's status is readable over the API.
RETURN_TO="http://127.0.0.1:${VAULTD_DEV_APP_PORT:-8445}/connected"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_pid() { # name
  local f="$DEV/$1.pid"
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill -TERM "$(cat "$f")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
}

if [ "${1:-}" = "stop" ]; then
  stop_pid vaultd; stop_pid devprovider; echo "stopped"; exit 0
fi

source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1
mkdir -p "$DEV" && chmod 700 "$DEV"
stop_pid vaultd; stop_pid devprovider

say "building vaultd, vaultctl and the dev-only example provider"
go build -o "$DEV/bin/" ./cmd/vaultd ./cmd/vaultctl ./cmd/vaultd-devprovider
VAULTCTL="$DEV/bin/vaultctl"

say "SoftHSM token (stands in for the HSM) in $DEV/softhsm"
export SOFTHSM2_CONF="$DEV/softhsm/softhsm2.conf"
if [ ! -f "$SOFTHSM2_CONF" ]; then
  mkdir -p "$DEV/softhsm/tokens" && chmod 700 "$DEV/softhsm"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$DEV/softhsm/tokens" > "$SOFTHSM2_CONF"
fi
if [ ! -s "$DEV/hsm.pin" ]; then
  umask 077
  head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DEV/hsm.pin"
  so_pin=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # softhsm2-util takes PINs only as arguments; acceptable for a dev token.
  softhsm2-util --init-token --free --label vaultd-dev --pin "$(cat "$DEV/hsm.pin")" --so-pin "$so_pin" >/dev/null
  unset so_pin
  umask 022
fi

say "dev PKI in $DEV/pki (CA, server cert for 127.0.0.1, app/operator/auditor client certs)"
"$VAULTCTL" dev-pki "$DEV/pki"
if [ ! -s "$DEV/provider-secret" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DEV/provider-secret")
fi

cat > "$DEV/vaultd.toml" <<EOF
# vaultd dev config written by scripts/dev-up.sh (not for production)
[server]
listen     = "127.0.0.1:$API_PORT"
http3      = true
tls_cert   = "$DEV/pki/server.crt"
tls_key    = "$DEV/pki/server.key"
client_ca  = "$DEV/pki/ca.crt"
ops_listen = "127.0.0.1:$OPS_PORT"

[hsm]
module      = "$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so 2>/dev/null | head -1)"
token_label = "vaultd-dev"
pin_file    = "$DEV/hsm.pin"
kek_label   = "vaultd-kek"

[storage]
path = "$DEV/vault.db"

[audit]
file = "$DEV/audit.jsonl"

# The browser-facing connect listener (server certificate only).
[connect]
listen     = "127.0.0.1:$CONNECT_PORT"
public_url = "https://127.0.0.1:$CONNECT_PORT"
return_to  = ["${RETURN_TO%/*}/"]

[harden]
mlock   = "best-effort"
seccomp = "enforce"

[[principals]]
uri_san = "spiffe://vaultd.dev/app/demo"
roles   = ["app"]
tenant  = "demo"

[[principals]]
subject_cn = "ops-admin"
roles      = ["operator"]

[[principals]]
subject_cn = "auditor"
roles      = ["auditor"]

# The dev-only example provider (cmd/vaultd-devprovider) on loopback.
[providers.example]
token_url          = "http://127.0.0.1:$PROV_PORT/token"
revocation_url     = "http://127.0.0.1:$PROV_PORT/revoke"
api_base_url       = "http://127.0.0.1:$PROV_PORT/api"
client_id          = "vaultd-dev"
client_secret_file = "$DEV/provider-secret"
auth_style         = "basic"
scopes             = ["contacts.read", "contacts.write"]
refresh_margin     = "60s"
authorization_url  = "http://127.0.0.1:$PROV_PORT/authorize"
EOF
chmod 600 "$DEV/vaultd.toml"

say "starting the dev-only example provider on 127.0.0.1:$PROV_PORT"
nohup "$DEV/bin/vaultd-devprovider" -listen "127.0.0.1:$PROV_PORT" -client-id vaultd-dev \
  -client-secret-file "$DEV/provider-secret" -redirect-uri "https://127.0.0.1:$CONNECT_PORT/oauth/callback" -require-pkce \
  >"$DEV/devprovider.out" 2>"$DEV/devprovider.log" &
echo $! > "$DEV/devprovider.pid"

say "vaultctl init (creates the KEK and the audit signing key inside the HSM if absent, and the database)"
"$VAULTCTL" init -config "$DEV/vaultd.toml"

say "starting vaultd (logs: $DEV/vaultd.log)"
nohup "$DEV/bin/vaultd" -config "$DEV/vaultd.toml" >>"$DEV/vaultd.log" 2>&1 &
echo $! > "$DEV/vaultd.pid"
for i in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$DEV/vaultd.pid")" 2>/dev/null; then echo "vaultd exited:"; tail -5 "$DEV/vaultd.log"; exit 1; fi
  [ "$i" = 120 ] && { echo "vaultd not ready after 60s"; tail -5 "$DEV/vaultd.log"; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$OPS_PORT/readyz"; echo

export VAULTCTL_SERVER="https://127.0.0.1:$API_PORT" VAULTCTL_CA="$DEV/pki/ca.crt"
as() { VAULTCTL_CERT="$DEV/pki/$1.crt" VAULTCTL_KEY="$DEV/pki/$1.key" "$VAULTCTL" "${@:2}"; }
CURL_APP=(curl -sS --cacert "$DEV/pki/ca.crt" --cert "$DEV/pki/app.crt" --key "$DEV/pki/app.key")

say "1. operator creates tenant 'demo' (fresh AES-256 DEK wrapped by the HSM KEK)"
as operator tenant create demo 2>/dev/null || as operator tenant get demo

# new_session INTEGRATION: creates a connect session as the app; prints "id url".
new_session() {
  local out
  out=$("${CURL_APP[@]}" -f -X POST -H 'Content-Type: application/json' \
    -d "{\"integration_id\":\"$1\",\"provider\":\"example\",\"scopes\":[\"contacts.read\"],\"return_to\":\"$RETURN_TO\"}" \
    "https://127.0.0.1:$API_PORT/v1/connect/sessions")
  printf '%s %s\n' "$(printf '%s' "$out" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')" \
    "$(printf '%s' "$out" | sed -n 's/.*"url":"\([^"]*\)".*/\1/p')"
}
session_status() {
  "${CURL_APP[@]}" -f "https://127.0.0.1:$API_PORT/v1/connect/sessions/$1" | sed -n 's/.*"status":"\([^"]*\)".*/\1/p'
}

say "2. app connects integration 'crm': vaultd runs the OAuth flow (PKCE, state) itself"
read -r SESSION LINK < <(new_session crm)
[ -n "$SESSION" ] && [ -n "$LINK" ] || { echo "could not create a connect session"; exit 1; }
echo "   connect session $SESSION; its one-time link goes to the user's browser"
# Here curl plays the user's browser: a cookie jar (the flow is bound to the
# browser that opened the link), each redirect looked at, never printed (the
# provider's URLs carry the state and the code).
JAR="$DEV/connect-cookies.txt"
rm -f "$JAR"; (umask 077; : > "$JAR")
CURL_BROWSER=(curl -sS --cacert "$DEV/pki/ca.crt" -b "$JAR" -c "$JAR" -o /dev/null -w '%{redirect_url}')
auth_url=$("${CURL_BROWSER[@]}" "$LINK")
[ -n "$auth_url" ] || { echo "the connect link did not redirect to the provider"; exit 1; }
form_token=$(curl -fsS "$auth_url" | sed -n 's/.*name="form_token" value="\([^"]*\)".*/\1/p')
[ -n "$form_token" ] || { echo "the example provider's consent page did not appear"; exit 1; }
echo "   the example provider's consent page asked; answering Allow"
callback=$(curl -sS -o /dev/null -w '%{redirect_url}' -d "form_token=$form_token" -d decision=allow \
  "http://127.0.0.1:$PROV_PORT/authorize/decision")
back=$("${CURL_BROWSER[@]}" "$callback")
unset auth_url form_token callback
rm -f "$JAR"
echo "   the browser was sent back to: $back"
status=$(session_status "$SESSION")
echo "   session $SESSION: $status"
[ "$status" = completed ] || { echo "the connect flow did not complete"; tail -5 "$DEV/vaultd.log"; exit 1; }

say "3. app makes a proxied call: vaultd injects the token, the app never sees it"
"${CURL_APP[@]}" "https://127.0.0.1:$API_PORT/v1/integrations/crm/proxy/contacts/1?fields=name"; echo

say "   ... and the same call described as JSON (execute)"
"${CURL_APP[@]}" -X POST -H 'Content-Type: application/json' \
  -d '{"method":"GET","path":"contacts/1","query":{"fields":"name"}}' \
  "https://127.0.0.1:$API_PORT/v1/integrations/crm/execute"; echo

say "4. integration metadata (no token in it)"
as app integration get crm

say "5. audit trail (hash-chained NDJSON) and its verification"
as auditor audit export
"$VAULTCTL" audit verify "$DEV/audit.jsonl"

read -r BROWSER_SESSION BROWSER_LINK < <(new_session crm-browser)

cat <<EOF

vaultd is running (pid $(cat "$DEV/vaultd.pid")), with the dev-only example provider (pid $(cat "$DEV/devprovider.pid")).

  API (mTLS, HTTP/1.1, HTTP/2, HTTP/3):  https://127.0.0.1:$API_PORT
  ops (health, readiness, metrics):      http://127.0.0.1:$OPS_PORT/healthz /readyz /metrics
  config / logs / audit mirror:          $DEV/vaultd.toml  $DEV/vaultd.log  $DEV/audit.jsonl

vaultctl:
  export VAULTCTL_SERVER=https://127.0.0.1:$API_PORT VAULTCTL_CA=$DEV/pki/ca.crt
  VAULTCTL_CERT=$DEV/pki/operator.crt VAULTCTL_KEY=$DEV/pki/operator.key $VAULTCTL tenant list
  VAULTCTL_CERT=$DEV/pki/app.crt VAULTCTL_KEY=$DEV/pki/app.key $VAULTCTL integration list
  VAULTCTL_CERT=$DEV/pki/auditor.crt VAULTCTL_KEY=$DEV/pki/auditor.key $VAULTCTL audit export

curl (as the app):
  curl --cacert $DEV/pki/ca.crt --cert $DEV/pki/app.crt --key $DEV/pki/app.key \\
       https://127.0.0.1:$API_PORT/v1/integrations/crm/proxy/contacts/1

connect in a browser on this machine (one-time link, valid for 10 minutes; the
example provider's consent page, then a return to $RETURN_TO, where nothing
listens: the address bar shows the outcome, as does the session):
  $BROWSER_LINK
  (it trusts the dev CA only: accept the certificate warning, or import $DEV/pki/ca.crt)
  curl --cacert $DEV/pki/ca.crt --cert $DEV/pki/app.crt --key $DEV/pki/app.key \\
       https://127.0.0.1:$API_PORT/v1/connect/sessions/$BROWSER_SESSION

stop:  scripts/dev-up.sh stop
EOF
