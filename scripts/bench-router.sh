#!/usr/bin/env bash
# The router against nginx as a reverse proxy to the same app, on the same machine, in the
# same run (issue 14): requests/s and p50/p99 latency for small keep-alive responses, over
# HTTP and over HTTPS (TLS 1.3, the same certificate), measured with wrk.
#
#   DURATION=10 CONNS=64 RUNS=3 scripts/bench-router.sh
#   BENCH=path/to/router_bench scripts/bench-router.sh   (a harness built already)
#
# The app is a third process both proxies forward to: an nginx server block answering
# `hello world` (the fastest app there is, so the proxies are what is measured). The router
# runs as `examples/router_bench.rs`: the `Router` `magrathea serve` runs (listeners, host
# routing, TLS by SNI, the upstream pool, accounting), without the controller. nginx gets
# the same job: as many workers as cores, upstream keep-alive, the same X-Forwarded-*,
# X-Real-IP and X-Request-Id headers, and the same logging policy: with ACCESS_LOG=on (the
# default) the router counts every request for its app environment (traffic figures, as
# under `magrathea serve`) and writes an access log line per request to a file in batches,
# and nginx writes its access log buffered (64k); with ACCESS_LOG=off neither does. The
# router serves connections on one single-threaded runtime per core (src/router/workers.rs),
# like nginx's `worker_processes auto`: a connection and its requests stay on one thread.
# The router's listener accepts on the harness's main runtime and hands connections over
# (once per connection); nginx's workers accept for themselves.
# Each measurement runs RUNS times, alternating router and nginx; medians are printed, then
# router/nginx ratios. Needs root (apt-get for nginx and wrk, Debian's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
ACCESS_LOG=${ACCESS_LOG:-on}

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]} (Debian's packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${BENCH:-}" ]; then
    echo "==> building the router harness (release)"
    cargo build --release --locked --example router_bench 2>&1 | tail -n 1
    BENCH=$ROOT/target/release/examples/router_bench
fi

W=$(realpath "$(mktemp -d /tmp/bench-router.XXXXXX)")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
APP=$(free_port)
NGX_HTTP=$(free_port)
NGX_HTTPS=$(free_port)
R_HTTP=$(free_port)
R_HTTPS=$(free_port)
CORES=$(nproc)
case "$ACCESS_LOG" in
    on)
        NGX_LOG="access_log $W/nginx-proxy/access.log bench buffer=64k;"
        R_LOG=(--access-log "$W/router-access.log")
        ;;
    off)
        NGX_LOG="access_log off;"
        R_LOG=()
        ;;
    *) echo "ACCESS_LOG is on or off" >&2; exit 2 ;;
esac

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" >"$W/bundle.pem"

mkdir -p "$W/nginx-app" "$W/nginx-proxy"
cat >"$W/nginx-app/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx-app/pid;
error_log $W/nginx-app/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$APP;
        location / { default_type text/plain; return 200 "hello world\n"; }
    }
}
EOF
cat >"$W/nginx-proxy/nginx.conf" <<EOF
worker_processes auto;
pid $W/nginx-proxy/pid;
error_log $W/nginx-proxy/error.log;
events { worker_connections 4096; }
http {
    log_format bench '\$request_method \$request_uri \$status \$request_time'
        ' in=\$request_length out=\$body_bytes_sent client=\$remote_addr';
    $NGX_LOG
    keepalive_requests 1000000;
    upstream app { server 127.0.0.1:$APP; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_HTTP;
        listen 127.0.0.1:$NGX_HTTPS ssl;
        server_name localhost;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
nginx -c "$W/nginx-app/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
nginx -c "$W/nginx-proxy/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGX_PID=$!
"$BENCH" --http "127.0.0.1:$R_HTTP" --https "127.0.0.1:$R_HTTPS" --bundle "$W/bundle.pem" \
    --host localhost --upstream "127.0.0.1:$APP" "${R_LOG[@]}" >"$W/router.log" 2>&1 &
PIDS+=($!)
R_PID=$!

# Everyone answers before anything is measured.
for url in "http://127.0.0.1:$APP/" "http://localhost:$NGX_HTTP/" "http://localhost:$R_HTTP/" \
    "https://localhost:$NGX_HTTPS/" "https://localhost:$R_HTTPS/"; do
    for _ in $(seq 100); do
        curl -skf -o /dev/null "$url" && break
        sleep 0.1
    done
    curl -skf -o /dev/null "$url" || { echo "no answer from $url" >&2; cat "$W/router.log" >&2; exit 1; }
done

# CPU seconds (user + system) a process and its children (nginx's workers) used so far.
cpu_seconds() {
    python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
ticks = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    if pid == root or fields[1] == root:
        ticks += int(fields[11]) + int(fields[12])
print(ticks / os.sysconf("SC_CLK_TCK"))
PY
}

# One wrk run against the proxy with pid $2: "rps p50_ms p99_ms cpu_us_per_request".
measure() {
    local before after
    before=$(cpu_seconds "$2")
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" >"$W/wrk.out"
    after=$(cpu_seconds "$2")
    python3 -c '
import re, sys
cpu = float(sys.argv[2]) - float(sys.argv[1])
out = open(sys.argv[3]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
if errors:
    sys.stderr.write("wrk: " + errors.group(0) + "\n")
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {cpu * 1e6 / max(total, 1):.1f}")
' "$before" "$after" "$W/wrk.out"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "==> wrk -t$THREADS -c$CONNS -d${DURATION}s, $RUNS runs each, $CORES cores, keep-alive, 12-byte body"
echo "    release build; router: $CORES worker threads (a runtime each), nginx: worker_processes auto ($CORES);"
echo "    access log $ACCESS_LOG for both$([ "$ACCESS_LOG" = on ] && echo " (router: accounting + access lines to a file in batches; nginx: access_log buffer=64k)")"
echo "    load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A RES
for proto in http https; do
    for run in $(seq "$RUNS"); do
        for who in router nginx; do
            case "$who-$proto" in
                router-http) url="http://localhost:$R_HTTP/" pid=$R_PID ;;
                router-https) url="https://localhost:$R_HTTPS/" pid=$R_PID ;;
                nginx-http) url="http://localhost:$NGX_HTTP/" pid=$NGX_PID ;;
                nginx-https) url="https://localhost:$NGX_HTTPS/" pid=$NGX_PID ;;
            esac
            r=$(measure "$url" "$pid")
            # The logs only grow; start each run from empty files (both are appended to).
            : >"$W/router-access.log"
            : >"$W/nginx-proxy/access.log"
            echo "    $who $proto run $run: $r (req/s p50_ms p99_ms cpu_us/req)"
            RES[$who-$proto]+="$r"$'\n'
        done
    done
done

echo
printf '%-7s %-6s %12s %10s %10s %12s\n' proto proxy "req/s" "p50 ms" "p99 ms" "cpu us/req"
declare -A MED
for proto in http https; do
    for who in router nginx; do
        rows=${RES[$who-$proto]}
        rps=$(printf '%s' "$rows" | awk 'NF { print $1 }' | median)
        p50=$(printf '%s' "$rows" | awk 'NF { print $2 }' | median)
        p99=$(printf '%s' "$rows" | awk 'NF { print $3 }' | median)
        cpu=$(printf '%s' "$rows" | awk 'NF { print $4 }' | median)
        MED[$who-$proto]="$rps $p50 $p99 $cpu"
        printf '%-7s %-6s %12s %10s %10s %12s\n' "$proto" "$who" "$rps" "$p50" "$p99" "$cpu"
    done
done
echo
for proto in http https; do
    read -r r_rps r_p50 r_p99 r_cpu <<<"${MED[router-$proto]}"
    read -r n_rps n_p50 n_p99 n_cpu <<<"${MED[nginx-$proto]}"
    awk -v p="$proto" -v a="$r_rps" -v b="$n_rps" -v c="$r_p50" -v d="$n_p50" -v e="$r_p99" -v f="$n_p99" -v g="$r_cpu" -v h="$n_cpu" 'BEGIN {
        printf "%-5s router/nginx: throughput %.2fx, p50 %.2fx, p99 %.2fx, cpu per request %.2fx (target: throughput >= 1.00x, p99 <= 1.20x)\n", p, a / b, c / d, e / f, g / h
    }'
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
