#!/usr/bin/env bash
# Install Magrathea as systemd services run by the unprivileged 'magrathea' user (in the
# docker group): the controller (default) or a node agent (--agent KEYFILE). Idempotent.
#
#   scripts/install-systemd.sh BIN ADMIN_KEY.pub          controller, data in /var/lib/magrathea
#   scripts/install-systemd.sh BIN --agent CONTROLLER.pub node, root in /var/lib/magrathea-node
#
# Needs systemd as PID 1 (scripts/up.sh calls this only then) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?usage: install-systemd.sh BIN ADMIN_KEY.pub | BIN --agent CONTROLLER.pub}
shift
say() { echo "install-systemd: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root"; exit 1; }
[ -d /run/systemd/system ] || { say "systemd is not running here"; exit 1; }

getent group docker >/dev/null || groupadd --system docker
if ! id magrathea >/dev/null 2>&1; then
    say "creating the system user 'magrathea' (group docker)"
    useradd --system --home-dir /var/lib/magrathea --create-home --shell /usr/sbin/nologin \
        --groups docker magrathea
fi
install -m 0755 "$BIN" /usr/local/bin/magrathea.new
mv -f /usr/local/bin/magrathea.new /usr/local/bin/magrathea
install -d -m 0755 /usr/local/share/doc/magrathea
install -m 0644 README.md /usr/local/share/doc/magrathea/README.md

if [ "${1:-}" = --agent ]; then
    KEY=${2:?--agent needs the controller's public key file (ssh paas nodes:key)}
    install -d -m 0755 /etc/magrathea
    install -m 0644 "$KEY" /etc/magrathea/controller.pub
    install -d -o magrathea -g magrathea -m 0750 /var/lib/magrathea-node
    install -m 0644 packaging/systemd/magrathea-agent.service /etc/systemd/system/
    UNIT=magrathea-agent
else
    ADMIN=${1:?the first admin's public key file}
    install -d -o magrathea -g magrathea -m 0750 /var/lib/magrathea
    if [ ! -e /var/lib/magrathea/magrathea.db ]; then
        install -m 0644 "$ADMIN" /var/lib/magrathea/.admin.pub
        runuser -u magrathea -- /usr/local/bin/magrathea init --data /var/lib/magrathea \
            --admin-key /var/lib/magrathea/.admin.pub
        rm -f /var/lib/magrathea/.admin.pub
    fi
    install -m 0644 packaging/systemd/magrathea.service /etc/systemd/system/
    UNIT=magrathea
fi
systemctl daemon-reload
systemctl enable "$UNIT" >/dev/null
systemctl restart "$UNIT"
say "$UNIT started; 'journalctl -u $UNIT' shows its log, 'magrathea doctor' checks the machine"
