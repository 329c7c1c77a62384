# vaultd %post ($1: 1 = install, 2 = upgrade). Not enabled or started: the
# service needs an HSM token, a PIN, TLS material and a KEK first
# (/usr/share/doc/vaultd/operations.md).
if getent group softhsm >/dev/null && ! id -nG vaultd | tr ' ' '\n' | grep -qx softhsm; then
    # SoftHSM packages that keep tokens group softhsm need vaultd inside it.
    usermod -a -G softhsm vaultd || :
fi
# /var/lib/vaultd and /var/log/vaultd (0700 vaultd), for `vaultctl init`
# before the first start. RPM distributions ship systemd, so no fallback.
systemd-tmpfiles --create /usr/lib/tmpfiles.d/vaultd.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 2 ]; then
        systemctl try-restart vaultd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
