#!/bin/sh
# Stops what scripts/swarm-up.sh NAME started, by PID and namespace name; idempotent.
#   usage: scripts/swarm-down.sh NAME       everything: every node, the bridge, the files
#          scripts/swarm-down.sh NAME I     node I only, as a machine dying would: every
#                                           process in its namespace killed (SIGKILL), its
#                                           link cut; its files stay for the final cleanup
set -u

NAME=${1:?usage: swarm-down.sh NAME [NODE]}
DIR=${SWARM_DIR:-/tmp/magrathea-swarm}/$NAME
echo "$NAME" | grep -Eq '^[a-z0-9]{1,8}$' || { echo "swarm-down: bad NAME" >&2; exit 1; }

# PIDS and every process below them (a task's container has a network namespace of its own,
# under its shim, which is in the node's).
with_descendants() {
    ps -e -o pid= -o ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            do { more = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 } } while (more)
            for (k in keep) print k
        }'
}

# Every process whose network namespace is NS (dockerd, its containerd, the shims, anything
# started there: an agent) and every process below them (the containers).
kill_ns() {
    ns=$1
    [ -e "/var/run/netns/$ns" ] || return 0
    for round in 1 2 3 4 5; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -9 $(with_descendants $pids) 2>/dev/null
        sleep 0.5
    done
}

down_node() {
    i=$1; d=$DIR/node$i
    kill_ns "$NAME-$i"
    ip link del "sw${NAME}h$i" 2>/dev/null
    # The pid file's process if it is somehow outside the namespace (never broad names).
    if [ -s "$d/pid" ]; then kill -9 "$(cat "$d/pid")" 2>/dev/null; fi
}

if [ $# -ge 2 ]; then
    down_node "$2"
    exit 0
fi

for d in "$DIR"/node*; do
    [ -d "$d" ] || continue
    i=${d##*node}
    down_node "$i"
    ip netns del "$NAME-$i" 2>/dev/null
    # Mounts a killed dockerd left (overlays, its exec-root), innermost first.
    grep -F " $d/" /proc/self/mounts | cut -d' ' -f2 | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
done
for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1 | grep -E "^$NAME-[0-9]$"); do
    kill_ns "$ns"; ip netns del "$ns" 2>/dev/null
done
ip link del "swbr-$NAME" 2>/dev/null
rm -rf "$DIR"
exit 0
