#!/usr/bin/env bash
# Push throughput: Magrathea's SSH front door against a stock OpenSSH sshd + git receive-pack,
# on loopback, in the same run. Pushes one generated repo (~200 MB: thousands of text files and
# incompressible binaries) RUNS times to each, alternating, into fresh repos, and prints the
# median throughput of both, their ratio, and the server's RSS idle and during the pushes.
# The branch pushed is `bench`, which builds nothing: this measures the transport.
#
#   RUNS=5 SIZE_MB=200 scripts/bench-push.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/sshd.sh
ROOT=$PWD
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-200}

bash scripts/deps.sh >/dev/null
echo "==> building magrathea (release)"
cargo build --release --locked 2>&1 | tail -n 1
BIN=$ROOT/target/release/magrathea

W=$(mktemp -d /tmp/bench-push.XXXXXX)
cleanup() {
    [ -n "${MPID:-}" ] && kill "$MPID" 2>/dev/null || true
    [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

echo "==> generating a ~${SIZE_MB} MB repo"
SRC=$W/src
mkdir -p "$SRC"
BIN_MB=$((SIZE_MB * 7 / 10))
TEXT_FILES=$((SIZE_MB * 3 / 10 * 1024 / 20)) # ~20 KB each
python3 - "$SRC" "$TEXT_FILES" "$BIN_MB" <<'EOF'
import os, random, sys
root, ntext, bin_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
words = [''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rnd.randint(2, 10))) for _ in range(5000)]
for i in range(ntext):
    d = os.path.join(root, 'src', f'm{i % 64:02d}')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f'f{i}.txt'), 'w') as f:
        n = 0
        while n < 20_000:
            line = ' '.join(rnd.choice(words) for _ in range(12)) + '\n'
            f.write(line)
            n += len(line)
os.makedirs(os.path.join(root, 'assets'), exist_ok=True)
for i in range(bin_mb // 2):
    with open(os.path.join(root, 'assets', f'blob{i}.bin'), 'wb') as f:
        f.write(os.urandom(2 << 20))
EOF
(
    cd "$SRC"
    git init -q -b bench
    git add -A
    git -c user.email=b@example.com -c user.name=bench commit -qm bench
    git repack -adq
)
PACK_BYTES=$(du -sb "$SRC/.git/objects/pack" | cut -f1)
PACK_MB=$(python3 -c "print(round($PACK_BYTES / 1048576, 1))")
echo "    $(git -C "$SRC" ls-files | wc -l) files, pack ${PACK_MB} MB"

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
SSH="ssh -i $W/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


echo "==> starting magrathea serve"
"$BIN" init --data "$W/data" --admin-key "$W/key.pub" >/dev/null
"$BIN" serve --data "$W/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 >"$W/serve.log" 2>&1 &
MPID=$!
for _ in $(seq 100); do grep -q "ssh listening" "$W/serve.log" && break; sleep 0.1; done
MPORT=$(grep "ssh listening on" "$W/serve.log" | sed 's/.*://')
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_KB=$(rss "$MPID")

echo "==> starting a stock sshd"
start_sshd "$W" "$W/key.pub"

# Peak RSS of the magrathea server while it takes pushes.
PEAK=$W/peak
echo 0 >"$PEAK"
(
    while kill -0 "$MPID" 2>/dev/null; do
        r=$(rss "$MPID" || echo 0)
        [ "$r" -gt "$(cat "$PEAK")" ] && echo "$r" >"$PEAK"
        sleep 0.05
    done
) &
SAMPLER=$!

push() { # URL -> seconds
    local t0 t1
    t0=$(date +%s.%N)
    GIT_SSH_COMMAND="$SSH" git -C "$SRC" push -q "$1" bench 2>"$W/push.err" || {
        cat "$W/push.err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)"
}

M=() O=()
for i in $(seq "$RUNS"); do
    m=$(push "ssh://git@127.0.0.1:$MPORT/bench$i")
    git init -q --bare "$W/openssh$i.git"
    o=$(push "ssh://root@127.0.0.1:$SPORT$W/openssh$i.git")
    printf '    run %d: magrathea %.2fs, openssh %.2fs\n' "$i" "$m" "$o"
    M+=("$m") O+=("$o")
done
PEAK_KB=$(cat "$PEAK")

python3 - "$PACK_BYTES" "$IDLE_KB" "$PEAK_KB" "${M[*]}" "${O[*]}" <<'EOF'
import statistics, sys
size, idle, peak = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
m = [float(x) for x in sys.argv[4].split()]
o = [float(x) for x in sys.argv[5].split()]
mt = size / statistics.median(m) / 1048576
ot = size / statistics.median(o) / 1048576
print(f"magrathea: median {statistics.median(m):.2f}s, {mt:.1f} MB/s")
print(f"openssh:   median {statistics.median(o):.2f}s, {ot:.1f} MB/s")
print(f"ratio (magrathea / openssh throughput): {mt / ot:.2f}")
print(f"magrathea serve RSS: idle {idle / 1024:.1f} MB, peak during pushes {peak / 1024:.1f} MB")
EOF
