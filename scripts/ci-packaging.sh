#!/usr/bin/env bash
# Packaging CI: build the .deb and .rpm, lint them, check the systemd units,
# then install the .deb on this machine and run the INSTALLED vaultd as the
# vaultd user against a SoftHSM token, and finally remove and purge it.
#
#   sudo scripts/ci-packaging.sh               # everything (Debian 12, root)
#   sudo scripts/ci-packaging.sh --units-only  # systemd-analyze checks only
#   SKIP_BUILD=1 ...                           # reuse dist/build binaries
#
# Idempotent, and it cleans up after itself (also on failure). It refuses to
# touch a vaultd package it did not install itself: a machine running a real
# vaultd is never purged by this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin" DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

MAX_EXPOSURE=1.5
TOKEN_LABEL=vaultd-ci-packaging
MARKER=/etc/vaultd/.ci-packaging
UNITS_ONLY=0
[[ ${1:-} == --units-only ]] && UNITS_ONLY=1

step() { echo "== $*"; }
fail() { echo "ci-packaging: FAIL: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  echo "ci-packaging: run as root (it installs packages and creates a system user)" >&2
  exit 1
fi

WORK=$(mktemp -d /tmp/vaultd-ci-packaging.XXXXXX)
chmod 0755 "$WORK"
VAULTD_PID=""

cleanup() {
  local rc=$?
  set +e
  if [[ -n $VAULTD_PID ]] && kill -0 "$VAULTD_PID" 2>/dev/null; then
    kill -TERM "$VAULTD_PID"; wait "$VAULTD_PID" 2>/dev/null
  fi
  if [[ $UNITS_ONLY == 0 ]]; then
    remove_ours
  fi
  rm -rf "$WORK"
  if [[ $rc -ne 0 ]]; then echo "ci-packaging: failed (exit $rc)" >&2; fi
  exit "$rc"
}

# remove_ours purges a vaultd package, token and files left by this script
# (a previous interrupted run, or this one). Anything else is refused.
remove_ours() {
  local state
  state=$(dpkg-query -W -f='${db:Status-Abbrev}' vaultd 2>/dev/null || true)
  if [[ -n ${state// /} && $state != un* ]] || [[ -d /var/lib/vaultd ]]; then
    if [[ ! -e $MARKER ]]; then
      echo "ci-packaging: a vaultd installation this script did not make is present; not touching it" >&2
      return 1
    fi
    apt-get purge -y -q vaultd >/dev/null 2>&1 || dpkg --purge vaultd >/dev/null 2>&1 || true
  fi
  if [[ -e $MARKER ]]; then
    rm -rf /etc/vaultd
  fi
  softhsm2-util --delete-token --token "$TOKEN_LABEL" >/dev/null 2>&1 || true
  return 0
}

# ---------------------------------------------------------------- tools
step "tools"
need=()
for t in systemd-analyze:systemd lintian:lintian rpmlint:rpmlint rpm:rpm softhsm2-util:softhsm2 \
         curl:curl objdump:binutils gcc:gcc man:man-db git:git; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

trap cleanup EXIT

# ---------------------------------------------------------------- units
step "systemd-analyze security (offline) systemd/vaultd.service"
security_out=$(systemd-analyze security --offline=yes --no-pager systemd/vaultd.service 2>&1)
exposure=$(sed -n 's/.*Overall exposure level for vaultd.service: \([0-9.]*\).*/\1/p' <<<"$security_out")
[[ -n $exposure ]] || { echo "$security_out" >&2; fail "no exposure score in systemd-analyze output"; }
echo "exposure: $exposure (limit $MAX_EXPOSURE)"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
  { grep '✗' <<<"$security_out" >&2; fail "exposure $exposure > $MAX_EXPOSURE"; }

# verify checks that ExecStart= exists: check a copy whose ExecStart names a
# stand-in executable (the installed unit is verified again, as is, below).
step "systemd-analyze verify systemd/vaultd.{service,socket}"
mkdir -p "$WORK/units"
printf '#!/bin/sh\nexit 0\n' > "$WORK/units/vaultd"; chmod 0755 "$WORK/units/vaultd"
sed "s#/usr/bin/vaultd #$WORK/units/vaultd #" systemd/vaultd.service > "$WORK/units/vaultd.service"
cp systemd/vaultd.socket "$WORK/units/"
verify_err=$(systemd-analyze verify --man=no "$WORK/units/vaultd.service" "$WORK/units/vaultd.socket" 2>&1 >/dev/null || true)
[[ -z $verify_err ]] || { echo "$verify_err" >&2; fail "systemd-analyze verify"; }
# The hardware-HSM example drop-in must load on top of the unit too.
mkdir -p "$WORK/units/vaultd.service.d"
cp systemd/hsm-devices.conf.example "$WORK/units/vaultd.service.d/hsm-devices.conf"
verify_err=$(systemd-analyze verify --man=no "$WORK/units/vaultd.service" 2>&1 >/dev/null || true)
[[ -z $verify_err ]] || { echo "$verify_err" >&2; fail "systemd-analyze verify with hsm-devices.conf"; }

if [[ $UNITS_ONLY == 1 ]]; then
  echo "ci-packaging: units OK (exposure $exposure)"
  exit 0
fi

# Leftovers of an interrupted earlier run go first; someone else's vaultd
# stops the run here.
remove_ours || fail "refusing to run on a machine with a vaultd installation"

# ---------------------------------------------------------------- build
step "build packages"
bash scripts/packages.sh
DEB=$(ls dist/vaultd_*.deb)
RPM=$(ls dist/vaultd-*.rpm)
VERSION=$(dpkg-deb -f "$DEB" Version)
VERSION=${VERSION%-*}

# ---------------------------------------------------------------- lint
step "lintian $DEB"
# --fail-on error,warning: info and pedantic tags are shown, not fatal.
lint_rc=0
lintian --fail-on error,warning --info --display-info "$DEB" > "$WORK/lintian.txt" 2>&1 || lint_rc=$?
grep -v "running with root privileges" "$WORK/lintian.txt" || true
[[ $lint_rc == 0 ]] || fail "lintian (exit $lint_rc)"

step "rpmlint $RPM"
# nfpm 2.33 writes absolute names into the RPM payload and rpmlint extracts
# it with `cpio -id`: as root that would write into /. The wrapper keeps the
# extraction inside rpmlint's temp dir.
mkdir -p "$WORK/cpio"
printf '#!/bin/sh\nexec /usr/bin/cpio --no-absolute-filenames "$@"\n' > "$WORK/cpio/cpio"
chmod 0755 "$WORK/cpio/cpio"
PATH="$WORK/cpio:$PATH" rpmlint -c packaging/rpmlint.toml "$RPM" || fail "rpmlint"

step "rpm payload: owners, modes, config flags"
rpm_list=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM")
echo "$rpm_list"
expect_rpm() { grep -qxE -- "$1" <<<"$rpm_list" || fail "rpm payload lacks: $1"; }
expect_rpm '-rwxr-xr-x root root  /usr/bin/vaultd'
expect_rpm '-rwxr-xr-x root root  /usr/bin/vaultctl'
expect_rpm 'drwxr-x--- root vaultd  /etc/vaultd'
expect_rpm '-rw-r----- root vaultd cn /etc/vaultd/vaultd.toml'
expect_rpm '-rw-r--r-- root root  /usr/lib/systemd/system/vaultd.service'
expect_rpm '-rw-r--r-- root root  /usr/lib/systemd/system/vaultd.socket'
expect_rpm '-rw-r--r-- root root d /usr/share/man/man8/vaultd.8.gz'
rpm -qp --requires "$RPM" | grep -q '^libc.so.6(GLIBC_' || fail "rpm lacks its glibc requirement"
rpm -qp --scripts "$RPM" | grep -q 'systemd-sysusers' || fail "rpm %pre does not create the user"

# ---------------------------------------------------------------- install
step "apt-get install ./$DEB"
cp "$DEB" "$WORK/"   # readable by apt's _apt sandbox user
apt-get install -y -q --no-install-recommends "$WORK/$(basename "$DEB")" >/dev/null
touch "$MARKER"

step "installed files, owners and modes"
expect_stat() { # path "mode owner group"
  local got
  got=$(stat -c '%a %U %G' "$1" 2>/dev/null) || fail "$1 missing"
  [[ $got == "$2" ]] || fail "$1: got '$got', want '$2'"
}
expect_stat /usr/bin/vaultd "755 root root"
expect_stat /usr/bin/vaultctl "755 root root"
expect_stat /lib/systemd/system/vaultd.service "644 root root"
expect_stat /lib/systemd/system/vaultd.socket "644 root root"
expect_stat /usr/lib/sysusers.d/vaultd.conf "644 root root"
expect_stat /usr/lib/tmpfiles.d/vaultd.conf "644 root root"
expect_stat /etc/vaultd "750 root vaultd"
expect_stat /etc/vaultd/vaultd.toml "640 root vaultd"
expect_stat /var/lib/vaultd "700 vaultd vaultd"
expect_stat /var/log/vaultd "700 vaultd vaultd"
expect_stat /usr/share/man/man8/vaultd.8.gz "644 root root"
expect_stat /usr/share/man/man1/vaultctl.1.gz "644 root root"
expect_stat /usr/share/doc/vaultd/copyright "644 root root"
expect_stat /usr/share/doc/vaultd/changelog.Debian.gz "644 root root"
expect_stat /usr/share/doc/vaultd/operations.md "644 root root"
expect_stat /usr/share/doc/vaultd/examples/hsm-devices.conf "644 root root"
expect_stat /usr/share/vaultd/prometheus/vaultd-alerts.yml "644 root root"
expect_stat /usr/share/vaultd/grafana/vaultd-dashboard.json "644 root root"
dpkg-query -W -f='${Conffiles}\n' vaultd | grep -q '^ /etc/vaultd/vaultd.toml ' || fail "vaultd.toml is not a conffile"
dpkg-query -W -f='${Recommends}\n' vaultd | grep -qw softhsm2 || fail "no Recommends: softhsm2"
IFS=: read -r _ _ vuid _ _ vhome vshell < <(getent passwd vaultd) || fail "no vaultd user"
((vuid < 1000)) || fail "vaultd uid $vuid is not a system uid"
[[ $vhome == /var/lib/vaultd && $vshell == /usr/sbin/nologin ]] || fail "vaultd home/shell: $vhome $vshell"
id -nG vaultd | tr ' ' '\n' | grep -qx softhsm || fail "vaultd is not in group softhsm"
/usr/bin/vaultd -version | grep -qx "vaultd $VERSION" || fail "vaultd -version: want $VERSION"
/usr/bin/vaultctl version | grep -qx "vaultctl $VERSION" || fail "vaultctl version: want $VERSION"
man -w vaultd >/dev/null && man -w vaultctl >/dev/null || fail "man pages not found by man"

step "systemd-analyze verify (installed units, man pages checked)"
verify_err=$(systemd-analyze verify /lib/systemd/system/vaultd.service /lib/systemd/system/vaultd.socket 2>&1 >/dev/null || true)
[[ -z $verify_err ]] || { echo "$verify_err" >&2; fail "systemd-analyze verify (installed)"; }

# ---------------------------------------------------------------- configure
step "SoftHSM token, PIN, dev PKI, provider secret, config"
softhsm2-util --delete-token --token "$TOKEN_LABEL" >/dev/null 2>&1 || true
PIN=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
SOPIN=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
# As the vaultd user (group softhsm, tokens dir 2770 root:softhsm): the token
# files then belong to vaultd, as on a real SoftHSM deployment.
runuser -u vaultd -- softhsm2-util --init-token --free --label "$TOKEN_LABEL" \
  --so-pin "$SOPIN" --pin "$PIN" >/dev/null
( umask 0137; printf '%s\n' "$PIN" > /etc/vaultd/hsm.pin )
chgrp vaultd /etc/vaultd/hsm.pin
expect_stat /etc/vaultd/hsm.pin "640 root vaultd"

vaultctl dev-pki /etc/vaultd/tls >/dev/null
cp /etc/vaultd/tls/ca.crt /etc/vaultd/tls/client-ca.crt
chgrp vaultd /etc/vaultd/tls /etc/vaultd/tls/server.key
chmod 0750 /etc/vaultd/tls
chmod 0640 /etc/vaultd/tls/server.key

install -d -m 0750 -g vaultd /etc/vaultd/secrets
( umask 0137; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > /etc/vaultd/secrets/example )
chgrp vaultd /etc/vaultd/secrets/example

free_port() {
  local p i
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  fail "no free port"
}
API_PORT=$(free_port)
OPS_PORT=$(free_port)
[[ $API_PORT != "$OPS_PORT" ]] || OPS_PORT=$((API_PORT + 1))
conf=/etc/vaultd/vaultd.toml
sed -i -e "s/^listen     = \"127.0.0.1:8443\"/listen     = \"127.0.0.1:$API_PORT\"/" \
       -e "s/^ops_listen = \"127.0.0.1:9090\"/ops_listen = \"127.0.0.1:$OPS_PORT\"/" \
       -e "s/^token_label = \"vaultd\"/token_label = \"$TOKEN_LABEL\"/" "$conf"
grep -q "127.0.0.1:$API_PORT" "$conf" && grep -q "$TOKEN_LABEL" "$conf" || fail "could not edit $conf"
cat >> "$conf" <<EOF

[[principals]]
subject_cn = "ops-admin"
roles      = ["operator"]

[[principals]]
subject_cn = "auditor"
roles      = ["auditor"]

# Never contacted in this test: loopback, nothing listens on port 9.
[providers.example]
token_url          = "https://127.0.0.1:9/token"
api_base_url       = "https://127.0.0.1:9/api"
client_id          = "ci"
client_secret_file = "/etc/vaultd/secrets/example"
scopes             = ["read"]
EOF
CONF_SUM=$(sha256sum "$conf")

# ---------------------------------------------------------------- init
step "vaultctl init (as vaultd, twice: idempotent)"
out=$(runuser -u vaultd -- vaultctl init -config "$conf")
echo "$out"
grep -q "created" <<<"$out" || fail "first init did not create the KEK/database"
out=$(runuser -u vaultd -- vaultctl init -config "$conf")
echo "$out"
grep -q "created" <<<"$out" && fail "second init changed something"
expect_stat /var/lib/vaultd/vault.db "600 vaultd vaultd"

# ---------------------------------------------------------------- run
step "run the installed vaultd as vaultd (no systemd: NOTIFY_SOCKET unset)"
# What the unit gives it: 64 MiB of lockable memory, no core dumps, umask 077.
# setpriv execs vaultd in place, so $! is vaultd and its exit status is ours.
(
  # Raising needs CAP_SYS_RESOURCE, which containers often lack; the usual
  # 8 MiB default covers the DEK cache (docs/hardening.md).
  ulimit -l 65536 2>/dev/null || echo "note: RLIMIT_MEMLOCK stays at $(ulimit -l) KiB"
  ulimit -c 0
  umask 0077
  cd /
  exec env -u NOTIFY_SOCKET -u LISTEN_FDS -u CREDENTIALS_DIRECTORY \
    setpriv --reuid=vaultd --regid=vaultd --init-groups --inh-caps=-all \
    /usr/bin/vaultd -config "$conf"
) > "$WORK/vaultd.log" 2>&1 &
VAULTD_PID=$!

ready=0
for ((i = 0; i < 120; i++)); do
  if curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$VAULTD_PID" 2>/dev/null || break
  sleep 0.5
done
if [[ $ready != 1 ]]; then cat "$WORK/vaultd.log" >&2; fail "vaultd did not become ready"; fi
echo "ready on 127.0.0.1:$API_PORT (ops $OPS_PORT), pid $VAULTD_PID"
[[ $(stat -c %U "/proc/$VAULTD_PID") == vaultd ]] || fail "vaultd does not run as vaultd"
curl -fsS "http://127.0.0.1:$OPS_PORT/healthz" >/dev/null || fail "/healthz"

api=(-server "https://127.0.0.1:$API_PORT" -ca /etc/vaultd/tls/ca.crt)
vaultctl tenant create ci-tenant "${api[@]}" -cert /etc/vaultd/tls/operator.crt -key /etc/vaultd/tls/operator.key >/dev/null ||
  { cat "$WORK/vaultd.log" >&2; fail "tenant create over mTLS"; }
vaultctl providers "${api[@]}" -cert /etc/vaultd/tls/operator.crt -key /etc/vaultd/tls/operator.key | grep -q example ||
  fail "providers"

step "SIGHUP reload, audit mirror"
kill -HUP "$VAULTD_PID"
for ((i = 0; i < 40; i++)); do
  grep -q 'configuration reloaded' "$WORK/vaultd.log" && break
  sleep 0.25
done
grep -q 'configuration reloaded' "$WORK/vaultd.log" || { cat "$WORK/vaultd.log" >&2; fail "reload"; }
curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null || fail "not ready after reload"
expect_stat /var/log/vaultd/audit.jsonl "600 vaultd vaultd"
vaultctl audit verify /var/log/vaultd/audit.jsonl || fail "audit mirror does not verify"
grep -q '"tenant.create"' /var/log/vaultd/audit.jsonl || fail "tenant.create not in the audit mirror"
if grep -qF "$PIN" "$WORK/vaultd.log" /var/log/vaultd/audit.jsonl; then fail "the PIN appears in logs or audit"; fi

step "KEK rotation and online backup with the installed binaries"
out=$(runuser -u vaultd -- vaultctl kek-rotate -config "$conf")
echo "$out"
grep -q "version 2 created" <<<"$out" || fail "kek-rotate"
kill -HUP "$VAULTD_PID"
for ((i = 0; i < 40; i++)); do
  grep -q '"configuration reloaded".*"kek_version":2' "$WORK/vaultd.log" && break
  sleep 0.25
done
grep -q '"configuration reloaded".*"kek_version":2' "$WORK/vaultd.log" || { cat "$WORK/vaultd.log" >&2; fail "reload did not pick up KEK version 2"; }
op=("${api[@]}" -cert /etc/vaultd/tls/operator.crt -key /etc/vaultd/tls/operator.key)
vaultctl tenant rewrap ci-tenant "${op[@]}" | grep -q '"rewrapped_deks": 1' || fail "tenant rewrap"
vaultctl tenant rewrap ci-tenant "${op[@]}" | grep -q '"rewrapped_deks": 0' || fail "a second tenant rewrap must report 0"
vaultctl backup -out "$WORK/backup.db" "${op[@]}" || fail "vaultctl backup"
expect_stat "$WORK/backup.db" "600 root root"
if grep -qaF "$PIN" "$WORK/backup.db"; then fail "the PIN appears in the backup"; fi

step "SIGTERM: graceful stop, exit 0"
kill -TERM "$VAULTD_PID"
set +e
wait "$VAULTD_PID"
rc=$?
set -e
VAULTD_PID=""
[[ $rc == 0 ]] || { cat "$WORK/vaultd.log" >&2; fail "vaultd exited $rc after SIGTERM"; }

# ---------------------------------------------------------------- upgrade
step "reinstall (upgrade path): config and data kept"
DB_SUM=$(sha256sum /var/lib/vaultd/vault.db)
dpkg -i "$WORK/$(basename "$DEB")" >/dev/null
[[ $(sha256sum "$conf") == "$CONF_SUM" ]] || fail "upgrade changed the edited config"
[[ $(sha256sum /var/lib/vaultd/vault.db) == "$DB_SUM" ]] || fail "upgrade changed the database"
expect_stat /etc/vaultd/vaultd.toml "640 root vaultd"
getent passwd vaultd >/dev/null || fail "upgrade lost the user"

# ---------------------------------------------------------------- remove / purge
step "apt-get remove: user, data, audit and config kept"
apt-get remove -y -q vaultd >/dev/null
[[ ! -e /usr/bin/vaultd ]] || fail "remove left /usr/bin/vaultd"
getent passwd vaultd >/dev/null || fail "remove deleted the user"
[[ -f /var/lib/vaultd/vault.db ]] || fail "remove deleted the database"
[[ -f /var/log/vaultd/audit.jsonl ]] || fail "remove deleted the audit mirror"
[[ -f $conf ]] || fail "remove deleted the config"

step "apt-get purge: user, data and audit gone"
apt-get purge -y -q vaultd >/dev/null
! getent passwd vaultd >/dev/null || fail "purge kept the user"
! getent group vaultd >/dev/null || fail "purge kept the group"
[[ ! -e /var/lib/vaultd ]] || fail "purge kept /var/lib/vaultd"
[[ ! -e /var/log/vaultd ]] || fail "purge kept /var/log/vaultd"
[[ ! -e $conf ]] || fail "purge kept the config"
! dpkg-statoverride --list /etc/vaultd >/dev/null || fail "purge kept the statoverride"
# The operator's files (PIN, TLS, secrets) and the HSM token survive a
# purge by design; this script's cleanup removes them.

echo "ci-packaging: OK (vaultd $VERSION, exposure $exposure)"
