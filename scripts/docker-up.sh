#!/bin/sh
# Ensure a working Docker daemon on this machine (Debian 12, run as root).
# Idempotent: exits 0 at once when `docker info` already answers from a daemon started with
# the flags below. A daemon this script started earlier with the old flags
# (`--iptables=false`, when apps shared the host network) is restarted once: that stops
# every running container, so do it before tests run.
#   usage: scripts/docker-up.sh
# Env: DOCKERD_LOG (default /var/log/dockerd.log), DOCKER_UP_TIMEOUT (default 60 s).
#
# Flags, and why:
#   --iptables=true (the default)  every app gets its own bridge network (src/node/network.rs);
#       Docker's DOCKER-ISOLATION chains drop traffic between two bridges, its NAT gives them
#       egress (MASQUERADE) and publishes a process's port on the node's address.
#   --userland-proxy=false  published ports are plain DNAT (no docker-proxy per port), so a
#       port nobody listens on is refused at once, as it was on the host network.
#   --bridge=none  no shared default bridge: a container is on its app's network or none.
#   --default-address-pool  room for 1024 networks (the default pools hold about 30); a
#       range the host's own networks are unlikely to use.
set -eu

LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
TIMEOUT=${DOCKER_UP_TIMEOUT:-60}

say() { echo "docker-up: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

docker_ok() { docker info >/dev/null 2>&1; }

POOL=${DOCKER_ADDRESS_POOL:-base=10.212.0.0/14,size=24}

dockerd_pid() {
    if [ -s /var/run/docker.pid ]; then
        p=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "$p"; return 0; fi
    fi
    return 1
}

# A daemon started by an older version of this script: no iptables, so no network isolation.
old_flags() {
    p=$(dockerd_pid) || return 1
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- '--iptables=false'
}

if command -v docker >/dev/null 2>&1 && docker_ok && ! old_flags; then
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root to install/start dockerd"

if old_flags; then
    p=$(dockerd_pid)
    say "restarting dockerd (pid $p): it runs with --iptables=false; apps need per-app networks"
    kill "$p"
    i=0
    while kill -0 "$p" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le 60 ] || die "dockerd (pid $p) did not stop within 60s"
        sleep 1
    done
fi

export DEBIAN_FRONTEND=noninteractive

# 1. Install docker.io (dockerd, containerd, runc, client) when dockerd is missing.
if ! command -v dockerd >/dev/null 2>&1; then
    # Only refresh the package lists if apt doesn't know a candidate yet.
    cand=$(apt-cache policy docker.io 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
        say "apt-get update"
        apt-get update -q >&2
    fi
    say "installing docker.io"
    apt-get install -y -q --no-install-recommends \
        docker.io containerd runc iptables ca-certificates >&2
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after install"
fi

# 2. Start dockerd unless one is already running (it may just be slow to answer).
started=""
if pid=$(dockerd_pid); then
    say "dockerd already running (pid $pid); waiting for it"
else
    # Stale pid files from a killed daemon make dockerd/containerd refuse to start.
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
    mkdir -p "$(dirname "$LOG")"
    say "starting dockerd (log: $LOG)"
    echo "=== dockerd start $(date -u +%Y-%m-%dT%H:%M:%SZ) ===" >>"$LOG"
    # setsid + nohup: detach from this shell/job so it outlives us.
    setsid nohup dockerd \
        --storage-driver=overlay2 \
        --iptables=true \
        --userland-proxy=false \
        --bridge=none \
        --default-address-pool "$POOL" \
        </dev/null >>"$LOG" 2>&1 &
    started=$!
fi

# 3. Wait (bounded) for the daemon to answer.
i=0
while [ "$i" -lt "$TIMEOUT" ]; do
    if docker_ok; then
        say "docker is up after ${i}s ($(docker info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
        exit 0
    fi
    if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null; then
        say "dockerd exited during startup; last lines of $LOG:"
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    sleep 1
    i=$((i + 1))
done

say "docker did not answer within ${TIMEOUT}s; last lines of $LOG:"
tail -n 40 "$LOG" >&2 || true
exit 1
