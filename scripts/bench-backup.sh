#!/usr/bin/env bash
# Service backup and restore throughput (issue 13), end to end with the real binary, its
# built-in node and the Postgres 15 service image, against the plain tools in the same run:
#
#   baseline:  pg_dump -Fc | gzip  (to a file on the host), then gunzip | pg_restore --clean
#              --if-exists --single-transaction into the same database
#   ours:      ssh services:backup (dump streamed to the controller, sealed with
#              XChaCha20-Poly1305 STREAM, read back and opened again, and restored into a
#              throwaway instance at the same time: verified), then ssh services:restore
#              (sha256 checked, a safety backup of the live data taken, the backup opened and
#              streamed into pg_restore)
#
# The database is pgbench's, generated in the service container (SCALE 68 is about 1 GB
# on disk). Prints each time, the database size and the ratios ours/baseline.
#
#   SCALE=68 scripts/bench-backup.sh
#   BIN=target/debug/magrathea SCALE=68 scripts/bench-backup.sh
#
# Needs root (Docker). Everything lives in one temp dir; the server it started is killed by
# pid and its containers removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-68}

sh scripts/docker-up.sh
sh scripts/service-images.sh >/dev/null
# BIN=target/debug/magrathea runs an existing build (slower sealing: a pessimistic figure).
if [ -z "${BIN:-}" ]; then
    echo "==> building magrathea (release)"
    cargo build --release --locked 2>&1 | tail -n 1
    BIN=$ROOT/target/release/magrathea
fi
BIN=$(realpath "$BIN")
echo "==> binary: $BIN"

W=$(realpath "$(mktemp -d /tmp/bench-backup.XXXXXX)")
PIDS=()
cleanup() {
    local p inst ids
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -d "$W/data/node" ]; then
        inst=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:8])' "$W/data/node")
        ids=$(docker ps -aq --filter "label=magrathea.instance=$inst" 2>/dev/null || true)
        [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1 || true
        docker network prune -f --filter "label=magrathea.instance=$inst" >/dev/null 2>&1 || true
    fi
    rm -rf "$W"
}
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
SSHOPTS="-i $W/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
wait_line() { # FILE PATTERN: waits (20 s) for a line, prints it
    for _ in $(seq 200); do
        if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

echo "==> starting magrathea serve"
"$BIN" init --data "$W/data" --admin-key "$W/key.pub" >/dev/null
"$BIN" serve --listen 127.0.0.1:0 --http 127.0.0.1:0 --default-stack tiny --data "$W/data" \
    >"$W/serve.out" 2>"$W/serve.err" &
PIDS+=($!)
MPORT=$(wait_line "$W/serve.out" "^ssh listening on " | sed 's/.*://')
SSH="ssh $SSHOPTS -p $MPORT git@127.0.0.1"

echo "==> services:create postgres bench"
$SSH services:create postgres bench >/dev/null
INST=$(python3 -c 'import hashlib,sys,os; print(hashlib.sha256(os.path.realpath(sys.argv[1]).encode()).hexdigest()[:8])' "$W/data/node")
C=$(docker ps -q --filter "label=magrathea.instance=$INST" --filter label=magrathea.service | head -n 1)
[ -n "$C" ] || { echo "no service container" >&2; exit 1; }
PG='-h /run/svc -U postgres -d "$MAGRATHEA_DB"'
in_svc() { docker exec -i "$C" sh -c "$1"; }

echo "==> pgbench -i -s $SCALE (generating the database)"
t=$(now)
in_svc "pgbench -i -q -s $SCALE $PG" >/dev/null 2>&1
SIZE=$(in_svc "psql -X -At $PG -c \"SELECT pg_database_size(current_database())\"")
echo "    generated in $(since "$t")s: $((SIZE / 1024 / 1024)) MiB on disk"
ROWS() { in_svc "psql -X -At $PG -c 'SELECT count(*) FROM pgbench_accounts'"; }
WANT=$(ROWS)

echo "==> baseline: pg_dump -Fc | gzip, then pg_restore"
t=$(now)
in_svc "pg_dump -Fc $PG | gzip" >"$W/base.dump.gz"
B_DUMP=$(since "$t")
B_SIZE=$(stat -c %s "$W/base.dump.gz")
t=$(now)
gunzip -c "$W/base.dump.gz" | in_svc "pg_restore $PG --clean --if-exists --single-transaction --exit-on-error"
B_RESTORE=$(since "$t")
[ "$(ROWS)" = "$WANT" ] || { echo "baseline restore lost rows" >&2; exit 1; }
rm -f "$W/base.dump.gz"

echo "==> ours: services:backup (verified), then services:restore (after a safety backup)"
t=$(now)
$SSH services:backup bench >"$W/backup.out"
O_BACKUP=$(since "$t")
t=$(now)
$SSH services:backup bench --no-verify >/dev/null
O_NOVERIFY=$(since "$t")
ID=$($SSH services:backups bench --json | python3 -c 'import json,sys; print([b for b in json.load(sys.stdin) if b["verified"]][0]["id"])')
O_SIZE=$($SSH services:backups bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["size"])')
in_svc "psql -X -q $PG -c 'DROP TABLE pgbench_accounts'"
t=$(now)
$SSH services:restore bench "$ID" >"$W/restore.out"
O_RESTORE=$(since "$t")
[ "$(ROWS)" = "$WANT" ] || { echo "our restore lost rows" >&2; exit 1; }
grep -h -e '-----> Backup' "$W/backup.out" "$W/restore.out" | sed 's/^/    /' || true

python3 - "$SIZE" "$B_SIZE" "$B_DUMP" "$B_RESTORE" "$O_SIZE" "$O_BACKUP" "$O_RESTORE" "$O_NOVERIFY" <<'EOF'
import sys
size, bsize, bd, br, osize, ob, orr, onv = sys.argv[1:]
size, bsize, osize = int(size), int(bsize), int(osize)
bd, br, ob, orr, onv = map(float, (bd, br, ob, orr, onv))
mib = lambda b: f"{b / 1048576:.1f} MiB"
print(f"database: {mib(size)} on disk (pgbench)")
print(f"{'':34}{'baseline':>12}{'ours':>12}{'ratio':>8}")
print(f"{'backup (ours: + seal, verify)':34}{bd:>11.1f}s{ob:>11.1f}s{ob / bd:>8.2f}")
print(f"{'restore (ours: + safety backup)':34}{br:>11.1f}s{orr:>11.1f}s{orr / br:>8.2f}")
print(f"{'backup --no-verify':34}{bd:>11.1f}s{onv:>11.1f}s{onv / bd:>8.2f}")
print(f"{'backup + restore':34}{bd + br:>11.1f}s{ob + orr:>11.1f}s{(ob + orr) / (bd + br):>8.2f}")
print(f"{'file size':34}{mib(bsize):>12}{mib(osize):>12}")
print(f"backup throughput: baseline {size / bd / 1048576:.0f} MiB/s, ours {size / ob / 1048576:.0f} MiB/s (of database)")
EOF
