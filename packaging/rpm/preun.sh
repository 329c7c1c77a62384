# vaultd %preun ($1: 0 = erase, 1 = upgrade): stop only on erase.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now vaultd.socket vaultd.service >/dev/null 2>&1 || :
fi
exit 0
