# vaultd %pre: the service user exists before the files are unpacked, so
# that /etc/vaultd and its config file get group vaultd from the header.
if ! getent passwd vaultd >/dev/null; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        echo 'u vaultd - "vaultd OAuth token vault" /var/lib/vaultd /usr/sbin/nologin' |
            systemd-sysusers --replace=/usr/lib/sysusers.d/vaultd.conf -
    else
        useradd --system --user-group --home-dir /var/lib/vaultd \
            --no-create-home --shell /usr/sbin/nologin \
            --comment "vaultd OAuth token vault" vaultd
    fi
fi
exit 0
