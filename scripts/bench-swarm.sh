#!/usr/bin/env bash
# The swarm backend against the SSH agents, in one run (issue 12): the same app (busybox
# httpd, tiny stack, web=2) on a two-node Docker Swarm (scripts/swarm-up.sh, the swarm agent
# in the manager's namespace) and on two `magrathea agent` nodes, one controller for both.
#
#   1. push-to-live: `git push` of a one-file change, until the push returns AND the router
#      serves the new content;
#   2. rollback: `ssh rollback APP`, until it returns and the router serves the previous
#      content.
#
#   RUNS=5 scripts/bench-swarm.sh          (BIN=path/to/magrathea to skip the release build)
#
# Needs root (namespaces, Docker). Everything lives in one temp dir and one swarm named
# bsw<pid>; what it started is stopped by pid and the swarm by its name on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}

bash scripts/deps.sh >/dev/null
sh scripts/docker-up.sh
sh scripts/stack-tiny.sh >/dev/null
if [ -z "${BIN:-}" ]; then
    echo "==> building magrathea (release)"
    cargo build --release --locked 2>&1 | tail -n 1
    BIN=$ROOT/target/release/magrathea
fi
BIN=$(realpath "$BIN")

W=$(realpath "$(mktemp -d /tmp/bench-swarm.XXXXXX)")
SW=bsw$(( $$ % 100000 ))
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    sh scripts/swarm-down.sh "$SW" || true
    local inst ids root
    for root in "$W"/agent-*; do
        [ -d "$root" ] || continue
        inst=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:8])' "$root")
        ids=$(docker ps -aq --filter "label=magrathea.instance=$inst" 2>/dev/null || true)
        [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
    done
    [ -f "$W/results.jsonl" ] && cp "$W/results.jsonl" "${RESULTS:-/tmp/bench-swarm.results.jsonl}"
    rm -rf "$W"
}
trap cleanup EXIT
RES=$W/results.jsonl
: >"$RES"
timed() { python3 scripts/lib/timed.py --out "$RES" "$@"; }

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
SSHOPTS="-i $W/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
gitc() { git -c user.email=b@example.com -c user.name=bench -c commit.gpgsign=false "$@"; }
wait_line() { # FILE PATTERN: waits (30 s) for a line, prints it
    for _ in $(seq 300); do
        if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}

echo "==> starting magrathea serve"
"$BIN" init --data "$W/data" --admin-key "$W/key.pub" >/dev/null
"$BIN" serve --listen 127.0.0.1:0 --http 127.0.0.1:0 --default-stack tiny --data "$W/data" \
    >"$W/serve.out" 2>"$W/serve.err" &
PIDS+=($!)
MPORT=$(wait_line "$W/serve.out" "^ssh listening on " | sed 's/.*://')
HPORT=$(wait_line "$W/serve.out" "^http listening on " | awk '{print $4}' | sed 's/.*://')
SSH="ssh $SSHOPTS -p $MPORT git@127.0.0.1"
export GIT_SSH_COMMAND="ssh $SSHOPTS"
MURL=ssh://git@127.0.0.1:$MPORT

echo "==> a two-node swarm ($SW) and its agent"
sh scripts/swarm-up.sh "$SW" 2 >"$W/swarm.out"
read -r _ _ NS1 IP1 SOCK1 _ < <(grep '^node 1 ' "$W/swarm.out")
DOCKER_HOST=unix://$SOCK1 nsenter --net="/var/run/netns/$NS1" -- "$BIN" agent --swarm \
    --listen "$IP1:2300" --endpoint "$IP1:2301" --root "$W/swarm-agent" \
    --controller-key "$W/data/controller_ed25519.pub" >"$W/swarm-agent.out" 2>&1 &
PIDS+=($!)
wait_line "$W/swarm-agent.out" "^agent listening on " >/dev/null
# Node 2's agent: it copies the stack image from the cluster's agent (no registry).
read -r _ _ NS2 IP2 SOCK2 _ < <(grep '^node 2 ' "$W/swarm.out")
DOCKER_HOST=unix://$SOCK2 nsenter --net="/var/run/netns/$NS2" -- "$BIN" agent --swarm \
    --join "$IP1:2301" --join-token "$W/swarm-agent/join_token" \
    --listen "$IP2:2300" --root "$W/swarm-agent-2" \
    --controller-key "$W/data/controller_ed25519.pub" >"$W/swarm-agent-2.out" 2>&1 &
PIDS+=($!)
wait_line "$W/swarm-agent-2.out" "^agent listening on " >/dev/null
$SSH clusters:add sw --swarm "$IP1:2300" >/dev/null

echo "==> two SSH agent nodes"
for n in a1 a2; do
    "$BIN" agent --listen 127.0.0.1:0 --root "$W/agent-$n" \
        --controller-key "$W/data/controller_ed25519.pub" >"$W/$n.out" 2>&1 &
    PIDS+=($!)
    addr=$(wait_line "$W/$n.out" "^agent listening on " | awk '{print $4}')
    $SSH nodes:add "$n" "$addr" --label pool=ssh >/dev/null
done
$SSH nodes:remove local >/dev/null

# The same app twice: `onswarm` on the cluster, `onssh` on the two nodes.
for app in onswarm onssh; do
    src=$W/$app
    mkdir -p "$src/public"
    echo 'web: exec busybox httpd -f -p $PORT -h public' >"$src/Procfile"
    if [ "$app" = onswarm ]; then where="cluster: sw"; else where="nodes: { pool: ssh }"; fi
    printf 'scale: { web: 2 }\nenvironments:\n  production: { branch: main, %s }\n' "$where" >"$src/magrathea.yml"
    echo "warm-up" >"$src/public/index.html"
    (cd "$src" && git init -q -b main && git add -A && gitc commit -qm warm-up)
    $SSH apps:create "$app" >/dev/null
    timed --tag "$app-warm-up" --port "$HPORT" --host "$app.localhost" --expect warm-up \
        -- git -C "$src" push "$MURL/$app" main >/dev/null
done

for i in $(seq "$RUNS"); do
    for app in onswarm onssh; do
        src=$W/$app
        prev=$(cat "$src/public/index.html")
        tok="run-$i-$RANDOM$RANDOM"
        echo "$tok" >"$src/public/index.html"
        gitc -C "$src" commit -qam "$tok"
        read -r pret pseen _ < <(timed --tag "$app-push" --port "$HPORT" --host "$app.localhost" \
            --expect "$tok" -- git -C "$src" push "$MURL/$app" main)
        read -r rret rseen _ < <(timed --tag "$app-rollback" --port "$HPORT" --host "$app.localhost" \
            --expect "$prev" -- $SSH rollback "$app")
        # Forward again, so the next run's push builds on the newest commit.
        git -C "$src" commit -q --allow-empty -m "forward $i"
        timed --tag "$app-forward" --port "$HPORT" --host "$app.localhost" --expect "$tok" \
            -- git -C "$src" push "$MURL/$app" main >/dev/null
        printf '    run %d %-8s push-to-live %.2fs (returned %.2fs), rollback %.2fs (returned %.2fs)\n' \
            "$i" "$app" "$pseen" "$pret" "$rseen" "$rret"
    done
done

python3 - "$RES" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
def m(tag, key):
    return med([r[key] for r in recs if r["tag"] == tag and r[key] is not None])
print("==> medians (seconds)")
print(f"    {'':22} {'2-node swarm':>14} {'2 SSH nodes':>14}")
for what, tag, key in [("push-to-live (served)", "push", "seen"), ("push returned", "push", "ret"),
                       ("rollback (served)", "rollback", "seen"), ("rollback returned", "rollback", "ret")]:
    print(f"    {what:22} {m('onswarm-' + tag, key):14.2f} {m('onssh-' + tag, key):14.2f}")
EOF
