#!/usr/bin/env bash
# The router against nginx as a reverse proxy to the same app, on the same machine, in the
# same run (issue 14): requests/s and p50/p99 latency for small keep-alive responses, over
# HTTP and over HTTPS (TLS 1.3, the same certificate), measured with wrk.
#
#   DURATION=10 CONNS=64 RUNS=3 scripts/bench-router.sh
#
# The app is a third process both proxies forward to: an nginx server block answering
# `hello world` (the fastest app there is, so the proxies are what is measured). The router
# runs as `examples/router_bench.rs`: the `Router` `magrathea serve` runs (listeners, host
# routing, TLS by SNI, the upstream pool, accounting), without the controller. nginx gets
# the same job: as many workers as cores, upstream keep-alive, the same X-Forwarded-*,
# X-Real-IP and X-Request-Id headers, no access log (the bench harness writes none for the
# router either). Each measurement runs RUNS times, alternating router and nginx; medians
# are printed, then router/nginx ratios. Needs root (apt-get for nginx and wrk, Debian's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]} (Debian's packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
echo "==> building the router harness (release)"
cargo build --release --locked --example router_bench 2>&1 | tail -n 1
BENCH=$ROOT/target/release/examples/router_bench

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
worker_processes $CORES;
pid $W/nginx-proxy/pid;
error_log $W/nginx-proxy/error.log;
events { worker_connections 4096; }
http {
    access_log off;
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
"$BENCH" --http "127.0.0.1:$R_HTTP" --https "127.0.0.1:$R_HTTPS" --bundle "$W/bundle.pem" \
    --host localhost --upstream "127.0.0.1:$APP" >"$W/router.log" 2>&1 &
PIDS+=($!)

# Everyone answers before anything is measured.
for url in "http://127.0.0.1:$APP/" "http://localhost:$NGX_HTTP/" "http://localhost:$R_HTTP/" \
    "https://localhost:$NGX_HTTPS/" "https://localhost:$R_HTTPS/"; do
    for _ in $(seq 100); do
        curl -skf -o /dev/null "$url" && break
        sleep 0.1
    done
    curl -skf -o /dev/null "$url" || { echo "no answer from $url" >&2; cat "$W/router.log" >&2; exit 1; }
done

# One wrk run: "rps p50_ms p99_ms".
measure() {
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" | python3 -c '
import re, sys
out = sys.stdin.read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
if errors:
    sys.stderr.write("wrk: " + errors.group(0) + "\n")
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")
'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "==> wrk -t$THREADS -c$CONNS -d${DURATION}s, $RUNS runs each, $CORES cores, keep-alive, 12-byte body"
declare -A RES
for proto in http https; do
    for run in $(seq "$RUNS"); do
        for who in router nginx; do
            case "$who-$proto" in
                router-http) url="http://localhost:$R_HTTP/" ;;
                router-https) url="https://localhost:$R_HTTPS/" ;;
                nginx-http) url="http://localhost:$NGX_HTTP/" ;;
                nginx-https) url="https://localhost:$NGX_HTTPS/" ;;
            esac
            r=$(measure "$url")
            echo "    $who $proto run $run: $r (req/s p50_ms p99_ms)"
            RES[$who-$proto]+="$r"$'\n'
        done
    done
done

echo
printf '%-7s %-6s %12s %10s %10s\n' proto proxy "req/s" "p50 ms" "p99 ms"
declare -A MED
for proto in http https; do
    for who in router nginx; do
        rows=${RES[$who-$proto]}
        rps=$(printf '%s' "$rows" | awk 'NF { print $1 }' | median)
        p50=$(printf '%s' "$rows" | awk 'NF { print $2 }' | median)
        p99=$(printf '%s' "$rows" | awk 'NF { print $3 }' | median)
        MED[$who-$proto]="$rps $p50 $p99"
        printf '%-7s %-6s %12s %10s %10s\n' "$proto" "$who" "$rps" "$p50" "$p99"
    done
done
echo
for proto in http https; do
    read -r r_rps r_p50 r_p99 <<<"${MED[router-$proto]}"
    read -r n_rps n_p50 n_p99 <<<"${MED[nginx-$proto]}"
    awk -v p="$proto" -v a="$r_rps" -v b="$n_rps" -v c="$r_p50" -v d="$n_p50" -v e="$r_p99" -v f="$n_p99" 'BEGIN {
        printf "%-5s router/nginx: throughput %.2fx, p50 %.2fx, p99 %.2fx (target: throughput >= 1.00x, p99 <= 1.20x)\n", p, a / b, c / d, e / f
    }'
done
