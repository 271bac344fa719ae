#!/usr/bin/env bash
# A local ACMEv2 server with its own CA, for trying and testing automatic certificates
# without the internet: Let's Encrypt's Pebble (Debian's `pebble` package) plus its
# companion DNS server, pebble-challtestsrv, which answers every name with 127.0.0.1, so the
# HTTP-01 check of any test host comes back to this machine's router.
#
#   scripts/acme-server.sh install
#       installs pebble (and openssl) from Debian's packages; idempotent.
#   scripts/acme-server.sh run DIR HTTP_PORT
#       runs the server in the foreground until killed (Ctrl-C, SIGTERM, or the process
#       group). HTTP_PORT is where the router listens for plain HTTP: Pebble fetches
#       http://HOST:HTTP_PORT/.well-known/acme-challenge/TOKEN from it.
#       DIR (created; reused: the listener's certificate is made once) gets:
#         listener-ca.pem  the CA of the ACME API's own HTTPS certificate: give it to
#                          `magrathea serve --acme-ca`
#         config.json      Pebble's configuration
#       Environment: ACME_PORT (14000), MGMT_PORT (15000), DNS_PORT (8053),
#       CERT_VALIDITY (seconds a certificate is valid; Pebble's default: 5 years),
#       TLS_PORT (where TLS-ALPN-01 checks connect: the router's HTTPS port; default 0,
#       Pebble's 443).
#       The directory is https://127.0.0.1:ACME_PORT/dir; the root that issued the
#       certificates (new at every start) is at https://127.0.0.1:MGMT_PORT/roots/0.
#
# Try it by hand (router on :8080):
#   scripts/acme-server.sh run /tmp/acme 8080 &
#   magrathea serve ... --acme-directory https://127.0.0.1:14000/dir --acme-ca /tmp/acme/listener-ca.pem
#   ssh paas certs:auto APP
#   curl --cacert <(curl -sk https://127.0.0.1:15000/roots/0) --resolve HOST:8443:127.0.0.1 https://HOST:8443/
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

install() {
    local need=()
    command -v pebble >/dev/null || need+=(pebble)
    command -v pebble-challtestsrv >/dev/null || need+=(pebble)
    command -v openssl >/dev/null || need+=(openssl)
    if [ "${#need[@]}" -gt 0 ]; then
        echo "==> installing: ${need[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# The ACME API is HTTPS only; its certificate comes from a small CA of our own (the Debian
# package ships none), made once per DIR.
listener_cert() {
    local dir=$1
    [ -s "$dir/listener-cert.pem" ] && [ -s "$dir/listener-ca.pem" ] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=magrathea test ACME listener CA" \
        -keyout "$dir/listener-ca.key" -out "$dir/listener-ca.pem.tmp" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout "$dir/listener-key.pem" -out "$dir/listener.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$dir/listener.ext"
    openssl x509 -req -in "$dir/listener.csr" -CA "$dir/listener-ca.pem.tmp" \
        -CAkey "$dir/listener-ca.key" -CAcreateserial -days 3650 \
        -extfile "$dir/listener.ext" -out "$dir/listener-cert.pem" 2>/dev/null
    mv "$dir/listener-ca.pem.tmp" "$dir/listener-ca.pem"
}

run() {
    local dir=$1 http_port=$2
    local acme_port=${ACME_PORT:-14000} mgmt_port=${MGMT_PORT:-15000} dns_port=${DNS_PORT:-8053}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for tool in pebble pebble-challtestsrv openssl; do
        command -v "$tool" >/dev/null || {
            echo "error: $tool is missing; run: scripts/acme-server.sh install" >&2
            exit 1
        }
    done
    listener_cert "$dir"
    local validity=""
    if [ -n "${CERT_VALIDITY:-}" ]; then
        validity=", \"certificateValidityPeriod\": ${CERT_VALIDITY}"
    fi
    cat >"$dir/config.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:${acme_port}",
    "managementListenAddress": "127.0.0.1:${mgmt_port}",
    "certificate": "${dir}/listener-cert.pem",
    "privateKey": "${dir}/listener-key.pem",
    "httpPort": ${http_port},
    "tlsPort": ${TLS_PORT:-0},
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false${validity}
  }
}
EOF
    # Only the DNS side of the companion: every A query is 127.0.0.1, no AAAA (the router
    # listens on IPv4 loopback).
    pebble-challtestsrv -dns01 "127.0.0.1:${dns_port}" -http01 "" -https01 "" -tlsalpn01 "" \
        -management "127.0.0.1:0" -defaultIPv4 127.0.0.1 -defaultIPv6 "" &
    dns=$!
    trap 'kill $dns ${pebble:-} 2>/dev/null || true' EXIT
    trap 'exit 143' TERM INT
    # No artificial validation delays and no nonces refused at random: tests go at full
    # speed (the client still handles badNonce; Pebble's default refuses 5%).
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
        pebble -config "$dir/config.json" -dnsserver "127.0.0.1:${dns_port}" -strict=false &
    pebble=$!
    wait "$pebble"
}

case "${1:-}" in
install) install ;;
run)
    [ $# -eq 3 ] || {
        echo "usage: $0 run DIR HTTP_PORT" >&2
        exit 2
    }
    run "$2" "$3"
    ;;
*)
    echo "usage: $0 install | run DIR HTTP_PORT" >&2
    exit 2
    ;;
esac
