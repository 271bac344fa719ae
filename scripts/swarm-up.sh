#!/bin/sh
# A Docker Swarm cluster on this one machine, for tests and for trying the swarm backend:
# N dockerd (default 2), each in its own network namespace (and UTS namespace, so each has
# its own hostname), joined by veth pairs to a bridge in the root namespace; node 1 runs
# `swarm init`, the others `swarm join` as workers. No registry: the images named in
# SWARM_IMAGES are loaded into node 1's engine only (docker save | docker -H NODE load), as
# an operator loads the stack on the manager; the magrathea agents of the other nodes
# (`agent --swarm --join`) copy them from the cluster's agent.
#   usage: scripts/swarm-up.sh NAME [NODES]      (root; NAME: 1-8 of [a-z0-9])
#          scripts/swarm-up.sh NAME --join I     node I (started, not joined) joins now
# Prints, one per line, `node I NS ADDR SOCKET PID` for each node, then `bridge ADDR`.
# SWARM_JOIN=M (default NODES): only nodes 1..M join at first; the others run their
# dockerd outside the swarm until `--join I` (a machine added later).
# Everything lives under $SWARM_DIR/NAME (default /tmp/magrathea-swarm/NAME); the
# namespaces are NAME-1..NAME-N, the bridge `swbr-NAME`. scripts/swarm-down.sh NAME stops
# it all by PID and namespace name, and scripts/swarm-down.sh NAME I kills one node (every
# process in its namespace, SIGKILL) as a machine dying would.
#
# dockerd is started with `nsenter --net=/var/run/netns/NS` (`ip netns exec` remounts /sys and
# dockerd then fails with "Devices cgroup isn't mounted"), `--bridge=none`, iptables on (its
# rules live in the node's namespace: app overlays, docker_gwbridge, host-mode published
# ports), its own data-root, exec-root, pidfile and socket.
# Env: SWARM_DIR, SWARM_IMAGES (default magrathea/stack-tiny:latest), SWARM_SUBNET (the
# third octet of 10.250.X.0/24; default from NAME), SWARM_TIMEOUT (default 60 s).
set -eu

NAME=${1:?usage: swarm-up.sh NAME [NODES]}
N=${2:-2}
if [ "$N" = --join ]; then JOIN_LATER=${3:?usage: swarm-up.sh NAME --join I}; N=1; fi
DIR=${SWARM_DIR:-/tmp/magrathea-swarm}/$NAME
IMAGES=${SWARM_IMAGES:-magrathea/stack-tiny:latest}
TIMEOUT=${SWARM_TIMEOUT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "swarm-up($NAME): $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

echo "$NAME" | grep -Eq '^[a-z0-9]{1,8}$' || die "NAME must be 1-8 of [a-z0-9]"
echo "$N" | grep -Eq '^[1-9]$' || die "NODES must be 1-9"
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, bridge, dockerd)"

node_addr_of() { echo "10.250.$(cat "$DIR/subnet").$(( 10 + $1 ))"; }
# Joins node $1 to the swarm of node 1 as a worker.
join_node() {
    D1="docker -H unix://$DIR/node1/docker.sock"
    TOKEN=$($D1 swarm join-token -q worker)
    docker -H "unix://$DIR/node$1/docker.sock" swarm join --token "$TOKEN" \
        --advertise-addr "$(node_addr_of "$1")" --listen-addr "$(node_addr_of "$1"):2377" \
        "$(node_addr_of 1):2377" >/dev/null
}
label_nodes() {
    for id in $($D1 node ls -q); do
        host=$($D1 node inspect -f '{{.Description.Hostname}}' "$id")
        $D1 node update --label-add "magrathea.node=$host" "$id" >/dev/null
    done
}
if [ -n "${JOIN_LATER:-}" ]; then
    echo "$JOIN_LATER" | grep -Eq '^[1-9]$' || die "I must be 1-9"
    [ -S "$DIR/node$JOIN_LATER/docker.sock" ] || die "no node $JOIN_LATER in $DIR"
    join_node "$JOIN_LATER"
    t=0
    until $D1 node ls --format '{{.Hostname}} {{.Status}}' | grep -q "^$NAME-$JOIN_LATER Ready"; do
        t=$((t + 1)); [ "$t" -le "$TIMEOUT" ] || die "node $JOIN_LATER did not get ready"
        sleep 1
    done
    label_nodes
    say "node $JOIN_LATER joined"
    exit 0
fi
for c in ip nsenter unshare dockerd docker; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (scripts/deps.sh installs it)"
done
[ ! -e "$DIR" ] || die "$DIR exists: scripts/swarm-down.sh $NAME first"
"$HERE/docker-up.sh"

# A /24 nobody routes yet: from NAME's checksum unless given, then the next free one.
if [ -n "${SWARM_SUBNET:-}" ]; then
    X=$SWARM_SUBNET
else
    X=$(( $(printf %s "$NAME" | cksum | cut -d' ' -f1) % 200 + 20 ))
    tries=0
    while ip -4 route | grep -q "^10\.250\.$X\."; do
        X=$(( X % 250 + 1 )); tries=$((tries + 1))
        [ "$tries" -lt 250 ] || die "no free 10.250.X.0/24"
    done
fi
ip -4 route | grep -q "^10\.250\.$X\." && die "10.250.$X.0/24 is in use"
BR=swbr-$NAME
mkdir -p "$DIR"
echo "$X" >"$DIR/subnet"

ip link add "$BR" type bridge
ip addr add "10.250.$X.1/24" dev "$BR"
ip link set "$BR" up

node_addr() { echo "10.250.$X.$(( 10 + $1 ))"; }

start_node() {
    i=$1; ns=$NAME-$i; d=$DIR/node$i; addr=$(node_addr "$i")
    mkdir -p "$d/data" "$d/exec"
    ip netns add "$ns"
    ip link add "sw${NAME}h$i" type veth peer name "sw${NAME}n$i"
    ip link set "sw${NAME}h$i" master "$BR" up
    ip link set "sw${NAME}n$i" netns "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "sw${NAME}n$i" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "10.250.$X.1"
    # Own network and hostname; the same mounts (sockets and data dirs stay reachable).
    nsenter --net="/var/run/netns/$ns" unshare --uts sh -c '
        hostname "$0"; exec dockerd --data-root "$1/data" --exec-root "$1/exec" \
          --pidfile "$1/dockerd.pid" -H "unix://$1/docker.sock" \
          --bridge=none --storage-driver=overlay2' \
        "$ns" "$d" >"$d/dockerd.log" 2>&1 &
    echo $! >"$d/pid"
}

wait_node() {
    d=$DIR/node$1; t=0
    until docker -H "unix://$d/docker.sock" info >/dev/null 2>&1; do
        kill -0 "$(cat "$d/pid")" 2>/dev/null || { tail -n 20 "$d/dockerd.log" >&2; die "dockerd of node $1 exited"; }
        t=$((t + 1)); [ "$t" -le "$TIMEOUT" ] || die "dockerd of node $1 did not answer within ${TIMEOUT}s"
        sleep 1
    done
}

i=1
while [ "$i" -le "$N" ]; do start_node "$i"; i=$((i + 1)); done
i=1
while [ "$i" -le "$N" ]; do wait_node "$i"; i=$((i + 1)); done

D1="docker -H unix://$DIR/node1/docker.sock"
$D1 swarm init --advertise-addr "$(node_addr 1)" --listen-addr "$(node_addr 1):2377" \
    --dispatcher-heartbeat 2s >/dev/null
JOINED=${SWARM_JOIN:-$N}
i=2
while [ "$i" -le "$JOINED" ]; do join_node "$i"; i=$((i + 1)); done
# Every node ready, and labelled with its namespace (placement constraints name labels).
t=0
until [ "$($D1 node ls --format '{{.Status}}' | grep -c Ready)" = "$JOINED" ]; do
    t=$((t + 1)); [ "$t" -le "$TIMEOUT" ] || die "the swarm did not get $JOINED ready nodes"
    sleep 1
done
label_nodes

# No registry: the images, on the manager only (the agents copy them to the others).
# shellcheck disable=SC2086
docker save $IMAGES | $D1 load -q >/dev/null

i=1
while [ "$i" -le "$N" ]; do
    echo "node $i $NAME-$i $(node_addr "$i") $DIR/node$i/docker.sock $(cat "$DIR/node$i/pid")"
    i=$((i + 1))
done
echo "bridge 10.250.$X.1"
say "up: $N nodes on 10.250.$X.0/24"
