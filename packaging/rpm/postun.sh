# vaultd %postun ($1: 0 = erase, 1 = upgrade). RPM has no purge: the
# database (/var/lib/vaultd), the audit mirror (/var/log/vaultd), the
# vaultd user and the edited config (.rpmsave) are kept, as RPM
# distributions do for service data. Remove them by hand when the data is
# no longer wanted (docs/operations.md).
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
