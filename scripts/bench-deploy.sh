#!/usr/bin/env bash
# Deploy speed, measured end to end with the real binary, real agents, Docker and the tiny
# stack, on loopback, RUNS times each, medians printed (issues 3 and 4):
#
#   1. push-to-live: `git push` of a one-file change of the procfile sample to the embedded
#      node, until the push returns AND the router serves the new content; beside it, a plain
#      `git push` of the same change to a bare repo over a stock OpenSSH sshd (same run).
#   2. platform overhead: push start -> "Released vN" (as the client sees the remote: line),
#      minus the buildpack scripts' own time (the build's "buildpacks took" line), with a
#      breakdown of where the rest goes.
#   3. deploy fan-out: `ssh deploy APP vN --env E` of a fresh ~BIG_MB MB release (the nodes
#      do not have it yet) to an environment of 1 node and to one of 4 nodes.
#   4. rollback on 4 nodes: `ssh rollback APP --env E` for the big app and a tiny one, until
#      the command returns and until the router serves the previous release.
#
#   RUNS=5 BIG_MB=50 scripts/bench-deploy.sh
#
# Needs root (Docker, sshd). Everything lives in one temp dir; the servers, agents and sshd
# it started are killed by pid and their containers removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/sshd.sh
ROOT=$PWD
RUNS=${RUNS:-5}
BIG_MB=${BIG_MB:-50}

bash scripts/deps.sh >/dev/null
sh scripts/docker-up.sh
sh scripts/stack-tiny.sh >/dev/null
echo "==> building magrathea (release)"
cargo build --release --locked 2>&1 | tail -n 1
BIN=$ROOT/target/release/magrathea

W=$(realpath "$(mktemp -d /tmp/bench-deploy.XXXXXX)")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # Containers of the embedded node and of the agents, by their instance label (the first
    # 4 bytes of the sha256 of the node root's canonical path), and leftover build containers.
    local inst ids
    for root in "$W/data/node" "$W"/agent-*; do
        [ -d "$root" ] || continue
        inst=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:8])' "$root")
        ids=$(docker ps -aq --filter "label=magrathea.instance=$inst" 2>/dev/null || true)
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    done
    inst=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:8])' "$W/data")
    ids=$(docker ps -aq --filter "name=magrathea-$inst-" 2>/dev/null || true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    [ -f "$W/results.jsonl" ] && cp "$W/results.jsonl" "${RESULTS:-/tmp/bench-deploy.results.jsonl}"
    rm -rf "$W"
}
trap cleanup EXIT

RES=$W/results.jsonl
: >"$RES"

timed() { python3 scripts/lib/timed.py --out "$RES" "$@"; }

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
SSHOPTS="-i $W/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
gitc() { git -c user.email=b@example.com -c user.name=bench -c commit.gpgsign=false "$@"; }
wait_line() { # FILE PATTERN: waits (20 s) for a line, prints it
    for _ in $(seq 200); do
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
MPID=$!
PIDS+=($MPID)
MPORT=$(wait_line "$W/serve.out" "^ssh listening on " | sed 's/.*://')
HPORT=$(wait_line "$W/serve.out" "^http listening on " | awk '{print $4}' | sed 's/.*://')
SSH="ssh $SSHOPTS -p $MPORT git@127.0.0.1"
export GIT_SSH_COMMAND="ssh $SSHOPTS"
MURL=ssh://git@127.0.0.1:$MPORT
echo "    ssh :$MPORT, http :$HPORT"

echo "==> starting a stock sshd"
start_sshd "$W" "$W/key.pub"
PIDS+=($SPID)

# The ssh round trip alone (connect, auth, a trivial command), for reading the command times.
for i in $(seq "$RUNS"); do timed --tag ssh-version -- $SSH version >/dev/null; done

# ---------------------------------------------------------------------------------------
echo "==> 1+2. push-to-live of the procfile sample on the embedded node ($RUNS runs)"
APP=web
SRC=$W/web
mkdir -p "$SRC"
cp -a tests/fixtures/procfile/. "$SRC/"
grep -q 'httpd -f -p $PORT' "$SRC/Procfile" || {
    echo 'web: mkdir -p /tmp/w && echo $GIT_REV > /tmp/w/index.html && exec busybox httpd -f -p $PORT -h /tmp/w' >"$SRC/Procfile"
}
(cd "$SRC" && git init -q -b main && echo "warm-up" >public/index.html && git add -A && gitc commit -qm warm-up)
git init -q --bare "$W/openssh.git"
OURL=ssh://root@127.0.0.1:$SPORT$W/openssh.git
timed --tag warm-up --port "$HPORT" --host "$APP.localhost" --expect warm-up \
    -- git -C "$SRC" push "$MURL/$APP" main >/dev/null
git -C "$SRC" push -q "$OURL" main
for i in $(seq "$RUNS"); do
    tok="run-$i-$RANDOM$RANDOM"
    echo "<p>$tok</p>" >"$SRC/public/index.html"
    gitc -C "$SRC" commit -qam "$tok"
    read -r mret mseen _ < <(timed --tag m-push --port "$HPORT" --host "$APP.localhost" --expect "$tok" \
        -- git -C "$SRC" push "$MURL/$APP" main)
    read -r oret _ < <(timed --tag o-push -- git -C "$SRC" push "$OURL" main)
    printf '    run %d: magrathea push returned %.2fs, new page served at %.2fs; openssh push %.2fs\n' \
        "$i" "$mret" "$mseen" "$oret"
done

# ---------------------------------------------------------------------------------------
echo "==> starting 5 agents: n0 (grp=one), n1..n4 (grp=four)"
declare -A ADDR
CPU="ctl=$MPID"
for n in n0 n1 n2 n3 n4; do
    "$BIN" agent --listen 127.0.0.1:0 --root "$W/agent-$n" \
        --controller-key "$W/data/controller_ed25519.pub" >"$W/agent-$n.out" 2>"$W/agent-$n.err" &
    PIDS+=($!)
    CPU="$CPU,agent=$!"
done
for n in n0 n1 n2 n3 n4; do
    ADDR[$n]=$(wait_line "$W/agent-$n.out" "^agent listening on " | awk '{print $4}')
    grp=four
    [ "$n" = n0 ] && grp=one
    $SSH nodes:add "$n" "${ADDR[$n]}" --label "grp=$grp" >/dev/null
done

echo "==> 3. deploy fan-out of a fresh ~${BIG_MB} MB release, 1 node vs 4 nodes ($RUNS runs)"
BIG=$W/big
mkdir -p "$BIG/public"
python3 - "$BIG/assets" "$BIG_MB" <<'EOF'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
rnd = random.Random(42)
for i in range(mb):
    with open(os.path.join(root, f"blob{i:03d}.bin"), "wb") as f:
        f.write(rnd.randbytes(1 << 20))
EOF
echo 'web: busybox httpd -f -p $PORT -h public' >"$BIG/Procfile"
# No branch or tag rules: pushes are cooked and deploy nowhere; `deploy --env` sends them.
cat >"$BIG/magrathea.yml" <<'EOF'
environments:
  one: { nodes: { grp: one } }
  four: { nodes: { grp: four } }
EOF
echo "big-0" >"$BIG/public/index.html"
(cd "$BIG" && git init -q -b main && git add -A && gitc commit -qm big-0)
git -C "$BIG" push -q "$MURL/big" main 2>"$W/big-push.err" || { cat "$W/big-push.err" >&2; exit 1; }
echo "    $(du -sm "$W/data/releases/big" | cut -f1) MB of releases stored after the first push"
declare -A TOKEN
for i in $(seq "$RUNS"); do
    tok="big-$i-$RANDOM$RANDOM"
    echo "$tok" >"$BIG/public/index.html"
    gitc -C "$BIG" commit -qam "$tok"
    read -r _ _ v < <(timed --tag big-push -- git -C "$BIG" push "$MURL/big" main)
    TOKEN[$v]=$tok
    envs=(one four)
    [ $((i % 2)) = 0 ] && envs=(four one)
    for e in "${envs[@]}"; do
        read -r ret seen _ < <(timed --tag "deploy-$e" --cpu "$CPU" --port "$HPORT" --host "big-$e.localhost" --expect "$tok" \
            -- $SSH deploy big "v$v" --env "$e")
        printf '    run %d: deploy v%s to %-4s %.2fs (served at %.2fs)\n' "$i" "$v" "$e" "$ret" "$seen"
    done
done
LAST_BIG=$v

echo "==> 4. rollback on 4 nodes: the ${BIG_MB} MB app and a tiny app ($RUNS runs each)"
TINY=$W/tiny
mkdir -p "$TINY"
cp -a tests/fixtures/procfile/. "$TINY/"
cp "$SRC/Procfile" "$TINY/Procfile"
cat >"$TINY/magrathea.yml" <<'EOF'
environments:
  production: { branch: main, nodes: { grp: four } }
EOF
(cd "$TINY" && git init -q -b main)
TT=()
for k in 1 2; do
    tok="tiny-$k-$RANDOM$RANDOM"
    echo "<p>$tok</p>" >"$TINY/public/index.html"
    (cd "$TINY" && git add -A && gitc commit -qm "$tok")
    timed --tag tiny-push --port "$HPORT" --host "tiny.localhost" --expect "$tok" \
        -- git -C "$TINY" push "$MURL/tiny" main >/dev/null
    TT+=("$tok")
done
# big: live in four is the last release, previous the one before; rollbacks alternate.
prev_big=${TOKEN[$((LAST_BIG - 1))]}
cur_big=${TOKEN[$LAST_BIG]}
prev_tiny=${TT[0]} cur_tiny=${TT[1]}
for i in $(seq "$RUNS"); do
    read -r ret seen _ < <(timed --tag rollback-big --cpu "$CPU" --port "$HPORT" --host "big-four.localhost" --expect "$prev_big" \
        -- $SSH rollback big --env four)
    printf '    run %d: rollback big  %.2fs (previous release served at %.2fs)\n' "$i" "$ret" "$seen"
    t=$prev_big prev_big=$cur_big cur_big=$t
    read -r ret seen _ < <(timed --tag rollback-tiny --cpu "$CPU" --port "$HPORT" --host "tiny.localhost" --expect "$prev_tiny" \
        -- $SSH rollback tiny)
    printf '    run %d: rollback tiny %.2fs (previous release served at %.2fs)\n' "$i" "$ret" "$seen"
    t=$prev_tiny prev_tiny=$cur_tiny cur_tiny=$t
done

# ---------------------------------------------------------------------------------------
python3 - "$RES" "$BIG_MB" "$RUNS" <<'EOF'
import json, os, re, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
big_mb, runs = sys.argv[2], sys.argv[3]
by = {}
for r in recs:
    by.setdefault(r["tag"], []).append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
def spread(xs):
    return f"median {med(xs):.2f}s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})" if xs else "n/a"
def at(r, pat):
    return next((t for t, s in r["lines"] if re.search(pat, s)), None)
def ok(v, target):
    return "OK  " if v <= target else "MISS"

ssh_rt = [r["ret"] for r in by.get("ssh-version", [])]
mp = by.get("m-push", [])
live = [max(r["ret"], r["seen"]) for r in mp]
base = [r["ret"] for r in by.get("o-push", [])]
# Overhead: push start -> "Released vN" line, minus the buildpack scripts' own time.
bp = []
for r in mp:
    m = next((re.search(r"buildpacks took ([0-9.]+)s", s) for _, s in r["lines"] if "buildpacks took" in s), None)
    bp.append(float(m.group(1)) if m else float("nan"))
released = [at(r, r"Released v\d+") for r in mp]
overhead = [rel - b for rel, b in zip(released, bp) if rel is not None]
phases = [
    ("first remote: line (transport, hook, export)", r"-----> Building"),
    ("first buildpack line (container started)", r"app detected|Buildpack 1/"),
    ("buildpacks done", r"buildpacks took"),
    ("Compressing... (container gone, processes read)", r"Compressing"),
    ("Released vN (release stored)", r"Released v\d+"),
    ("Deploying vN", r"Deploying v\d+"),
    ("started and healthy", r"started and healthy"),
    ("is live", r"is live in"),
]
d1 = [r["ret"] for r in by.get("deploy-one", [])]
d4 = [r["ret"] for r in by.get("deploy-four", [])]
s1 = [r["seen"] for r in by.get("deploy-one", [])]
s4 = [r["seen"] for r in by.get("deploy-four", [])]
rb = [r["ret"] for r in by.get("rollback-big", [])]
rbs = [r["seen"] for r in by.get("rollback-big", [])]
rt = [r["ret"] for r in by.get("rollback-tiny", [])]
rts = [r["seen"] for r in by.get("rollback-tiny", [])]

print()
print("==> where a push's time goes (median seconds since `git push` started, from remote: lines)")
for name, pat in phases:
    ts = [t for t in (at(r, pat) for r in mp) if t is not None]
    print(f"    {med(ts):6.2f}  {name}")
print(f"    {med([r['ret'] for r in mp]):6.2f}  push returned")
print(f"    {med([r['seen'] for r in mp]):6.2f}  new page served through the router")
def breakdown(title, tag, marks):
    rs = by.get(tag, [])
    if not rs:
        return
    print(f"==> {title} (median seconds since the command started)")
    for name, pat, last in marks:
        ts = []
        for r in rs:
            hits = [t for t, s in r["lines"] if re.search(pat, s)]
            if hits:
                ts.append(hits[-1] if last else hits[0])
        if ts:
            print(f"    {med(ts):6.2f}  {name}")
    print(f"    {med([r['seen'] for r in rs]):6.2f}  served through the router")
    print(f"    {med([r['ret'] for r in rs]):6.2f}  command returned")
    cpus = {}
    for r in rs:
        for k, v in r.get("cpu", {}).items():
            cpus.setdefault(k, []).append(v)
    if cpus:
        print("    CPU seconds used: " + ", ".join(f"{k} {med(v):.2f}" for k, v in sorted(cpus.items()))
              + f" (this machine has {os.cpu_count()} cores)")
DM = [
    ("Deploying (first line)", r"Deploying v\d+", False),
    ("first node received + verified", r"received v\d+", False),
    ("last node received + verified", r"received v\d+", True),
    ("first health check begins", r"health-checking", False),
    ("last health check begins", r"health-checking", True),
    ("first node started and healthy", r"started and healthy", False),
    ("last node started and healthy", r"started and healthy", True),
    ("is live", r"is live in", False),
]
print()
breakdown(f"deploy of a fresh {big_mb} MB release to 1 node", "deploy-one", DM)
breakdown(f"deploy of a fresh {big_mb} MB release to 4 nodes", "deploy-four", DM)
breakdown(f"rollback of the {big_mb} MB app on 4 nodes", "rollback-big", DM)
breakdown("rollback of the tiny app on 4 nodes", "rollback-tiny", DM)
print()
print("==================== bench-deploy summary ====================")
print(f"ssh round trip (`ssh paas version`):       {spread(ssh_rt)}")
print(f"1. push-to-live, procfile sample, 1 node:  {spread(live)}")
print(f"   [{ok(med(live), 2.0)}] target <= 2 s")
print(f"   baseline plain git push over OpenSSH:   {spread(base)}")
print(f"   ratio push-to-live / plain push:        {med(live) / med(base):.1f}x")
print(f"2. platform overhead (push start -> release stored, minus buildpacks):")
print(f"   push start -> release stored:           {spread([x for x in released if x is not None])}")
print(f"   inside the buildpack scripts:           {spread(bp)}")
print(f"   overhead:                               {spread(overhead)}")
print(f"   [{ok(med(overhead), 0.999)}] target < 1 s")
print(f"3. deploy of a fresh {big_mb} MB release (ssh deploy, to return):")
print(f"   1 node:                                 {spread(d1)}  (served at {med(s1):.2f}s)")
print(f"   4 nodes:                                {spread(d4)}  (served at {med(s4):.2f}s)")
print(f"   ratio 4 nodes / 1 node:                 {med(d4) / med(d1):.2f}")
print(f"   [{ok(med(d4) / med(d1), 1.5)}] target <= 1.5x")
# The agents all run on this machine: the 4-node case shares its cores four ways.
ag = lambda tag: med([r.get("cpu", {}).get("agent", 0) for r in by.get(tag, [])] or [0])
print(f"   agents' CPU per deploy:                 1 node {ag('deploy-one'):.2f}s, 4 nodes {ag('deploy-four'):.2f}s"
      f" (all on this machine's {os.cpu_count()} cores)")
print(f"4. rollback on 4 nodes (ssh rollback, to return; includes the ssh round trip):")
print(f"   {big_mb} MB app:                              {spread(rb)}")
print(f"      previous release served after:       {spread(rbs)}")
print(f"   tiny app:                               {spread(rt)}")
print(f"      previous release served after:       {spread(rts)}")
print(f"   [{ok(max(med(rb), med(rt)), 0.999)}] target < 1 s; size-independent: big/tiny = {med(rb) / med(rt):.2f}")
print("==============================================================")
EOF
