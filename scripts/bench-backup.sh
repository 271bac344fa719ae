#!/usr/bin/env bash
# Service backup and restore throughput (issue 13), end to end with the real binary, its
# built-in node and the Postgres 15 service image, against the plain tools on the same
# database in the same run. Every run measures, in this order:
#
#   baseline dump:     pg_dump -Fc > file            (custom format: compressed by pg_dump
#                                                     itself, what pg_restore reads)
#   baseline dump (b): pg_dump -Fc -Z1 > file        (the settings ours uses: its overhead alone)
#   baseline dump (c): pg_dump | gzip > file         (plain SQL, the issue's literal words)
#   baseline restore:  pg_restore --clean --if-exists --single-transaction --exit-on-error
#                      < the -Fc file, into the same running database
#   ours import:       ssh services:import NAME < the -Fc file (stored sealed, restored with
#                      a safety backup, owners handed over), against the baseline restore
#   load alone:        pg_restore --section=pre-data --section=data of the -Z1 file into an
#                      empty database of a throwaway instance started as the verification's
#                      are (same image, entry script and settings), nothing beside it: what
#                      one Postgres backend takes to load every row, the verification's floor
#   ours backup:       ssh services:backup NAME      (dump streamed to the controller, sealed
#                      with XChaCha20-Poly1305 STREAM, fsynced, read back and opened again,
#                      and at the same time restored into a throwaway instance: verified;
#                      see src/agent/svcverify.rs for what that proves)
#   ours --no-verify:  ssh services:backup NAME --no-verify
#   ours restore:      ssh services:restore NAME ID  (sha256 checked, the backup opened and
#                      streamed into a new database while a safety backup of the live one is
#                      taken, then swapped in for the live one in one step), into the full
#                      database (a few rows deleted and a table added since the backup: the
#                      restore must undo both)
#
# The dumps go from `docker exec` to a file on the host, like ours go from the node to the
# controller's data dir. The database is pgbench's, generated once in the service container
# (SCALE 68 is about 1 GiB on disk). Prints every figure of every run, then the medians and
# the ratios ours/baseline: first the issue's (verified backup against `pg_dump | gzip`,
# restore against `pg_restore`, and their sum; "over 1.2x" marks a miss), then against
# `pg_dump -Fc` (the archive pg_restore reads) and the rest; then the CPU time of each (the
# machine's busy time while it ran) and the floor that puts under ours on this machine: no
# step ends sooner than its CPU time spread over every cpu.
#
#   RUNS=3 SCALE=68 scripts/bench-backup.sh
#   BIN=target/release/magrathea RUNS=2 scripts/bench-backup.sh
#
# Needs root (Docker). Everything lives in one temp dir; the server it started is killed by
# pid and its containers removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-68}
RUNS=${RUNS:-2}

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
echo "==> machine: $(nproc) cpus, load average $(cut -d' ' -f1-3 /proc/loadavg)"

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
    docker rm -f -v "mgbench-tw-$$" >/dev/null 2>&1 || true
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
# The machine's busy CPU time so far, in jiffies (user, nice, system, irq, softirq: every
# process's, the server's, Docker's and the containers' alike).
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
# A mark: wall clock and busy CPU. `since MARK`: wall seconds; `cpu_since MARK`: CPU seconds.
now() { echo "$(date +%s.%N),$(busy)"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2].split(\",\")[0]) - float(sys.argv[1].split(\",\")[0]):.2f}')" "$1" "$(now)"; }
cpu_since() { python3 -c "import os,sys; hz=os.sysconf('SC_CLK_TCK'); print(f'{(int(sys.argv[2].split(\",\")[1]) - int(sys.argv[1].split(\",\")[1])) / hz:.2f}')" "$1" "$(now)"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# The server's own timing lines (where a backup's or a restore's time went), the last N.
timing() {
    grep -a -e 'backup timing' -e 'backup verification' -e 'backup restored into' -e 'restore timing' "$W/serve.err" |
        tail -n "$1" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^.*INFO [^ ]* //' -e 's/^/      /' || true
}

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

# A throwaway instance like the verification's (the service's image, uid and entry script,
# MAGRATHEA_THROWAWAY=1), for the "load alone" step; removed on exit.
TW=mgbench-tw-$$
mkdir -p "$W/tw"
USR=$(docker inspect "$C" --format '{{.Config.User}}')
chown "$USR" "$W/tw"
ENTRY=$(docker inspect "$C" --format '{{range .Mounts}}{{if eq .Destination "/usr/local/bin/magrathea-svc"}}{{.Source}}{{end}}{{end}}')
docker run -d --name "$TW" --network none --user "$USR" -e MAGRATHEA_SERVICE_TYPE=postgres \
    -e MAGRATHEA_DB=db -e MAGRATHEA_THROWAWAY=1 -v "$ENTRY:/usr/local/bin/magrathea-svc:ro" \
    -v "$W/tw:/data" --tmpfs "/run/svc:uid=${USR%%:*}" "$(docker inspect "$C" --format '{{.Config.Image}}')" >/dev/null
in_tw() { docker exec -i "$TW" sh -c "$1"; }
for _ in $(seq 300); do in_tw "pg_isready -q -h /run/svc" && break; sleep 0.1; done

# One line per run: the figures the summary reads.
RESULTS=$W/results
: >"$RESULTS"
for run in $(seq "$RUNS"); do
    echo "==> run $run of $RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    l0=$(load1)
    t=$(now)
    in_svc "pg_dump -Fc $PG" >"$W/base.dump"
    b_fc=$(since "$t")
    b_fc_size=$(stat -c %s "$W/base.dump")
    echo "    baseline pg_dump -Fc:           ${b_fc}s ($((b_fc_size / 1048576)) MiB)"
    t=$(now)
    in_svc "pg_dump -Fc -Z1 $PG" >"$W/base-z1.dump"
    b_z1=$(since "$t")
    b_z1_size=$(stat -c %s "$W/base-z1.dump")
    echo "    baseline pg_dump -Fc -Z1:       ${b_z1}s ($((b_z1_size / 1048576)) MiB)"
    in_tw "psql -X -q -h /run/svc -U postgres -d postgres -c 'DROP DATABASE IF EXISTS load' -c 'CREATE DATABASE load'" 2>/dev/null
    t=$(now)
    in_tw "pg_restore -h /run/svc -U postgres -d load --section=pre-data --section=data --single-transaction --exit-on-error" <"$W/base-z1.dump"
    b_ld_cpu=$(cpu_since "$t")
    b_ld=$(since "$t")
    rm -f "$W/base-z1.dump"
    in_tw "psql -X -q -h /run/svc -U postgres -d postgres -c 'DROP DATABASE load'"
    echo "    load alone (one backend):       ${b_ld}s, ${b_ld_cpu} CPU-s"
    t=$(now)
    in_svc "pg_dump $PG | gzip" >"$W/base.sql.gz"
    b_gz_cpu=$(cpu_since "$t")
    b_gz=$(since "$t")
    b_gz_size=$(stat -c %s "$W/base.sql.gz")
    rm -f "$W/base.sql.gz"
    echo "    baseline pg_dump | gzip:        ${b_gz}s, ${b_gz_cpu} CPU-s ($((b_gz_size / 1048576)) MiB)"
    t=$(now)
    in_svc "pg_restore $PG --clean --if-exists --single-transaction --exit-on-error" <"$W/base.dump"
    b_rs_cpu=$(cpu_since "$t")
    b_rs=$(since "$t")
    [ "$(ROWS)" = "$WANT" ] || { echo "baseline restore lost rows" >&2; exit 1; }
    echo "    baseline pg_restore:            ${b_rs}s, ${b_rs_cpu} CPU-s"

    t=$(now)
    $SSH services:backup bench >"$W/backup.out"
    o_bk_cpu=$(cpu_since "$t")
    o_bk=$(since "$t")
    grep -h -e '-----> Backup' "$W/backup.out" | sed 's/^/      /' || true
    timing 2
    echo "    ours services:backup:           ${o_bk}s, ${o_bk_cpu} CPU-s"
    t=$(now)
    $SSH services:backup bench --no-verify >"$W/backup-nv.out"
    o_nv_cpu=$(cpu_since "$t")
    o_nv=$(since "$t")
    timing 1
    echo "    ours services:backup --no-verify: ${o_nv}s, ${o_nv_cpu} CPU-s"
    json=$($SSH services:backups bench --json)
    id=$(python3 -c 'import json,sys; print([b for b in json.loads(sys.argv[1]) if b["verified"]][0]["id"])' "$json")
    o_size=$(python3 -c 'import json,sys; print([b for b in json.loads(sys.argv[1]) if b["verified"]][0]["size"])' "$json")
    # Changes after the backup, small enough that the restore replaces the whole database
    # like the baseline's: some rows gone, a table added (which a restore must drop).
    in_svc "psql -X -q $PG -c 'DELETE FROM pgbench_accounts WHERE aid <= 1000' -c 'CREATE TABLE after_backup(x int)'"
    t=$(now)
    $SSH services:restore bench "$id" >"$W/restore.out"
    o_rs_cpu=$(cpu_since "$t")
    o_rs=$(since "$t")
    [ "$(ROWS)" = "$WANT" ] || { echo "our restore lost rows" >&2; exit 1; }
    [ "$(in_svc "psql -X -At $PG -c \"SELECT to_regclass('after_backup') IS NULL\"")" = t ] ||
        { echo "our restore kept a table made after the backup" >&2; exit 1; }
    timing 3
    echo "    ours services:restore:          ${o_rs}s, ${o_rs_cpu} CPU-s"
    # The baseline's own archive brought in as a dump made elsewhere (stored sealed, then
    # restored without its owners, everything handed to the service's role).
    in_svc "psql -X -q $PG -c 'DELETE FROM pgbench_accounts WHERE aid <= 1000'"
    t=$(now)
    $SSH services:import bench <"$W/base.dump" 2>"$W/import.out"
    o_im_cpu=$(cpu_since "$t")
    o_im=$(since "$t")
    rm -f "$W/base.dump"
    [ "$(ROWS)" = "$WANT" ] || { echo "our import lost rows" >&2; exit 1; }
    echo "    ours services:import (-Fc file): ${o_im}s, ${o_im_cpu} CPU-s"
    l1=$(load1)
    echo "$b_fc $b_z1 $b_gz $b_rs $o_bk $o_nv $o_rs $b_fc_size $b_z1_size $b_gz_size $o_size $l0 $l1 $b_gz_cpu $b_rs_cpu $o_bk_cpu $o_nv_cpu $o_rs_cpu $b_ld $b_ld_cpu $o_im $o_im_cpu" >>"$RESULTS"
done

python3 - "$SIZE" "$RESULTS" "$(nproc)" <<'EOF'
import statistics, sys
size = int(sys.argv[1])
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
cols = list(zip(*rows))
med = lambda i: statistics.median(cols[i])
b_fc, b_z1, b_gz, b_rs, o_bk, o_nv, o_rs = (med(i) for i in range(7))
s_fc, s_z1, s_gz, s_o = (med(i) for i in range(7, 11))
mib = lambda b: f"{b / 1048576:.1f} MiB"
print()
print(f"database: {mib(size)} on disk (pgbench), {len(rows)} runs; medians below")
print("per run (s): pg_dump -Fc, -Fc -Z1, pg_dump|gzip, pg_restore | ours: backup, --no-verify, restore | load1 before/after")
for r in rows:
    print("   " + "  ".join(f"{x:6.1f}" for x in r[:4]) + "  |" + "  ".join(f"{x:6.1f}" for x in r[4:7]) + f"  | {r[11]:.1f}/{r[12]:.1f}")
row = lambda name, b, o: print(f"{name:50}{b:>9.1f}s{o:>9.1f}s{o / b:>8.2f}" + ("" if o / b <= 1.2 else "  over 1.2x"))
print(f"{'':50}{'baseline':>10}{'ours':>10}{'ratio':>8}")
print("the issue's targets (ours within 1.2x, encryption and verification included):")
row("  backup (verified) vs pg_dump | gzip", b_gz, o_bk)
row("  restore (safety backup included) vs pg_restore", b_rs, o_rs)
row("  backup + restore vs pg_dump | gzip + pg_restore", b_gz + b_rs, o_bk + o_rs)
print("against pg_dump -Fc (the archive pg_restore reads):")
row("  backup (verified) vs pg_dump -Fc", b_fc, o_bk)
row("  backup + restore vs pg_dump -Fc + pg_restore", b_fc + b_rs, o_bk + o_rs)
o_im = med(20)
row("  import of a pg_dump -Fc file vs pg_restore of it", b_rs, o_im)
print("the rest:")
row("  backup vs pg_dump -Fc -Z1 (ours' settings)", b_z1, o_bk)
row("  backup --no-verify vs pg_dump -Fc", b_fc, o_nv)
row("  backup --no-verify vs pg_dump -Fc -Z1", b_z1, o_nv)
row("  backup + restore vs fastest dump + pg_restore", min(b_fc, b_z1, b_gz) + b_rs, o_bk + o_rs)
ncpu = int(sys.argv[3])
g_cpu, r_cpu, bk_cpu, nv_cpu, rs_cpu = (med(i) for i in range(13, 18))
print(f"CPU time (the whole machine's busy time while each ran; {ncpu} cpus):")
print(f"  pg_dump | gzip {g_cpu:.1f} CPU-s, ours backup {bk_cpu:.1f} (--no-verify {nv_cpu:.1f}); pg_restore {r_cpu:.1f}, ours restore {rs_cpu:.1f}")
# Nothing finishes sooner than its CPU time spread over every cpu: the best wall time this
# machine allows for the work each did, against the baseline's measured wall time.
print(f"  floor of ours on this machine (CPU time / cpus) against the baseline's wall time:")
print(f"    backup (verified) {bk_cpu / ncpu:.2f}s = {bk_cpu / ncpu / b_gz:.2f}x of pg_dump | gzip ({b_gz:.2f}s)")
print(f"    restore           {rs_cpu / ncpu:.2f}s = {rs_cpu / ncpu / b_rs:.2f}x of pg_restore ({b_rs:.2f}s)")
ld, ld_cpu = med(18), med(19)
print(f"  the verification's own floor: one backend loading every row from the file, nothing beside it:")
print(f"    {ld:.2f}s ({ld_cpu:.1f} CPU-s) = {ld / b_gz:.2f}x of pg_dump | gzip: a verified backup ends no sooner")
print(f"file size: pg_dump -Fc {mib(s_fc)}, -Fc -Z1 {mib(s_z1)}, pg_dump | gzip {mib(s_gz)}, ours (sealed) {mib(s_o)}")
print(f"backup throughput (of the database): pg_dump -Fc {size / b_fc / 1048576:.0f} MiB/s, ours {size / o_bk / 1048576:.0f} MiB/s")
print(f"restore throughput (of the database): pg_restore {size / b_rs / 1048576:.0f} MiB/s, ours {size / o_rs / 1048576:.0f} MiB/s")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
