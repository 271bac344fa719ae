#!/usr/bin/env bash
# Incremental deploys of a Python app (issue 9's acceptance), end to end with the real binary,
# Docker, the bookworm stack and PyPI:
#
#   the Flask+gunicorn app of the compat suite (tests/fixtures/compat/flask-gunicorn) is
#   pushed once (dependencies installed and cached), then RUNS times a one-line change to
#   app.py is committed and pushed, timing push start -> the new text served through the
#   router. In the same run, the same one-line change to a Procfile-only app (the procfile
#   sample, tiny stack) is the baseline. Prints both medians and their ratio.
#
#   RUNS=5 scripts/bench-python.sh
#
# Needs root (Docker). Everything lives in one temp dir; the server it started is killed by
# pid and its containers removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}

bash scripts/deps.sh >/dev/null
sh scripts/docker-up.sh
sh scripts/stack-tiny.sh >/dev/null
sh scripts/stack-bookworm.sh >/dev/null
echo "==> building magrathea (release)"
cargo build --release --locked 2>&1 | tail -n 1
BIN=$ROOT/target/release/magrathea

W=$(realpath "$(mktemp -d /tmp/bench-python.XXXXXX)")
MPID=""
cleanup() {
    [ -n "$MPID" ] && kill "$MPID" 2>/dev/null && wait "$MPID" 2>/dev/null || true
    # The embedded node's containers (instance label: the first 4 bytes of the sha256 of the
    # node root's canonical path) and leftover build containers of this server.
    local inst ids
    for root in "$W/data/node" "$W/data"; do
        inst=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:8])' "$root")
        ids=$( { docker ps -aq --filter "label=magrathea.instance=$inst"; docker ps -aq --filter "name=magrathea-$inst-"; } 2>/dev/null || true)
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    done
    [ -f "$W/results.jsonl" ] && cp "$W/results.jsonl" "${RESULTS:-/tmp/bench-python.results.jsonl}"
    rm -rf "$W"
}
trap cleanup EXIT
RES=$W/results.jsonl
: >"$RES"
timed() { python3 scripts/lib/timed.py --out "$RES" "$@"; }

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
SSHOPTS="-i $W/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
export GIT_SSH_COMMAND="ssh $SSHOPTS"
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

echo "==> starting magrathea serve (default stack bookworm)"
"$BIN" init --data "$W/data" --admin-key "$W/key.pub" >/dev/null
"$BIN" serve --listen 127.0.0.1:0 --http 127.0.0.1:0 --default-stack bookworm --data "$W/data" \
    >"$W/serve.out" 2>"$W/serve.err" &
MPID=$!
MPORT=$(wait_line "$W/serve.out" "^ssh listening on " | sed 's/.*://')
HPORT=$(wait_line "$W/serve.out" "^http listening on " | awk '{print $4}' | sed 's/.*://')
MURL=ssh://git@127.0.0.1:$MPORT
echo "    ssh :$MPORT, http :$HPORT"

# The Flask app, unchanged; its greeting line is the one-line change. Times are push start ->
# the new text served through the router (the push itself returns once the old processes
# have drained, printed beside).
PY=$W/flask
cp -a tests/fixtures/compat/flask-gunicorn "$PY"
(cd "$PY" && git init -q -b main && gitc add -A && gitc commit -qm initial)
# The Procfile-only baseline: the procfile sample on the tiny stack.
PF=$W/procfile
cp -a tests/fixtures/procfile "$PF"
echo "stack: tiny" >"$PF/magrathea.yml"
(cd "$PF" && git init -q -b main && gitc add -A && gitc commit -qm initial)

echo "==> first pushes (dependencies installed and cached)"
timed --tag py-first --port "$HPORT" --host flask.localhost --expect "hello from flask" \
    -- git -C "$PY" push "$MURL/flask" main >/dev/null
timed --tag pf-first --port "$HPORT" --host web.localhost --expect "" \
    -- git -C "$PF" push "$MURL/web" main >/dev/null

echo "==> one-line change, pushed $RUNS times each (alternating)"
for i in $(seq "$RUNS"); do
    tok="py-$i-$RANDOM$RANDOM"
    sed -i "s/^GREETING = .*/GREETING = \"$tok\"/" "$PY/app.py"
    gitc -C "$PY" commit -qam "$tok"
    read -r pret pseen _ < <(timed --tag py --port "$HPORT" --host flask.localhost --expect "$tok" \
        -- git -C "$PY" push "$MURL/flask" main)
    tok="pf-$i-$RANDOM$RANDOM"
    echo "<p>$tok</p>" >"$PF/public/index.html"
    gitc -C "$PF" commit -qam "$tok"
    read -r fret fseen _ < <(timed --tag pf --port "$HPORT" --host web.localhost --expect "$tok" \
        -- git -C "$PF" push "$MURL/web" main)
    printf '    run %d: flask served at %.2fs (push returned %.2fs); procfile served at %.2fs (push returned %.2fs)\n' \
        "$i" "$pseen" "$pret" "$fseen" "$fret"
done

python3 - "$RES" <<'EOF'
import json, re, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in recs:
    by.setdefault(r["tag"], []).append(r)
med = statistics.median
# What the target is about: push start -> the new text served through the router.
def live(r):
    return r["seen"]
def at(r, pat):
    return next((t for t, s in r["lines"] if re.search(pat, s)), None)
py = [live(r) for r in by["py"]]
pf = [live(r) for r in by["pf"]]
first = live(by["py-first"][0])
def spread(xs):
    return f"median {med(xs):.2f}s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"
print()
print("==> where the flask push's time goes (median seconds since `git push` started)")
for name, pat in [("build starts", r"-----> Building"),
                  ("python buildpack starts", r"Python app detected"),
                  ("cached virtualenv reused", r"reusing the cached virtualenv"),
                  ("buildpacks done", r"buildpacks took"),
                  ("Released vN", r"Released v\d+"),
                  ("is live", r"is live in")]:
    ts = [t for t in (at(r, pat) for r in by["py"]) if t is not None]
    if ts:
        print(f"    {med(ts):6.2f}  {name}")
reused = sum(1 for r in by["py"] if at(r, r"reusing the cached virtualenv") is not None)
pip = sum(1 for r in by["py"] if at(r, r"Installing requirements|Creating virtualenv") is not None)
print()
print("==================== bench-python summary ====================")
print(f"first push of flask+gunicorn (installs):    served at {first:.2f}s")
print(f"one-line change, flask+gunicorn (bookworm): {spread(py)}")
print(f"   cached venv reused in {reused}/{len(py)} pushes; venv or pip run in {pip}")
print(f"   push returned (old processes drained):   {spread([r['ret'] for r in by['py']])}")
print(f"one-line change, Procfile-only (tiny):      {spread(pf)}")
print(f"   push returned (old processes drained):   {spread([r['ret'] for r in by['pf']])}")
print(f"ratio flask / Procfile-only:                {med(py) / med(pf):.2f}x")
print(f"   [{'OK  ' if med(py) < 1.5 else 'MISS'}] target: flask second push served < 1.5 s")
print("==============================================================")
EOF
