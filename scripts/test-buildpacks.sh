#!/bin/sh
# End-to-end check of buildpacks/ + tests/fixtures/ with Docker, the same way
# the platform runs them (Heroku buildpack API v2):
#   detect -> compile -> release in a stack container (as root, --network host),
#   then the web process from a container with the build at /app, $PORT set,
#   running as user app (1000), and an HTTP GET that must say "hello from <name>".
#
#   usage: scripts/test-buildpacks.sh [CASE...]
#     CASE is FIXTURE or FIXTURE@STACK (STACK = tiny | bookworm).
#     Default: every fixture on bookworm, plus static and procfile on tiny,
#     plus "failing" (which must fail in compile with its error on stderr).
# Needs scripts/docker-up.sh, scripts/stack-tiny.sh, scripts/stack-bookworm.sh
# to have been run (it does not build the stacks itself).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORDER="python nodejs php static procfile"
# Registries here sit behind a TLS-intercepting proxy: give the build container
# the host's CA bundle (pip and npm in the stack use the system bundle).
CA_BUNDLE=${MAGRATHEA_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
[ -z "$CA_BUNDLE" ] || [ -f "$CA_BUNDLE" ] || CA_BUNDLE=""
pass=0
failed=0
failures=""

say() { echo "test-buildpacks: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stack_image() {
    case "$1" in
        tiny) echo magrathea/stack-tiny:latest ;;
        bookworm) echo magrathea/stack-bookworm:latest ;;
        *) echo "unknown stack $1" >&2; return 1 ;;
    esac
}

# in_stack IMAGE BPDIR CMD...: run a buildpack script like the builder does.
in_stack() {
    img=$1; bp=$2; shift 2
    set -- ${CA_BUNDLE:+-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"} "$img" "$@"
    docker run --rm --network host \
        -e STACK="$STACK" -e HOME=/app \
        -v "$W/build:/build" -v "$W/cache:/cache" -v "$W/env:/env:ro" -v "$bp:/bp:ro" \
        "$@"
}

# web_command BUILD_DIR RELEASE_YAML: Procfile web: wins over the default.
web_command() {
    if [ -f "$1/Procfile" ]; then
        cmd=$(sed -n 's/^web:[[:space:]]*//p' "$1/Procfile" | head -n 1)
        [ -n "$cmd" ] && { echo "$cmd"; return 0; }
    fi
    sed -n 's/^[[:space:]]\{1,\}web:[[:space:]]*//p' "$2" | head -n 1
}

run_case() {
    fixture=${1%@*}
    STACK=bookworm
    case "$1" in *@*) STACK=${1#*@} ;; esac
    img=$(stack_image "$STACK")
    W=$(mktemp -d /tmp/bp-test.XXXXXX)
    mkdir -p "$W/build" "$W/cache" "$W/env"
    cp -a "$ROOT/tests/fixtures/$fixture/." "$W/build/"
    echo "-from-config" >"$W/env/GREETING_SUFFIX"

    # Select the buildpack: the app's own .buildpack, else the first that detects.
    bp=""
    if [ -d "$W/build/.buildpack/bin" ]; then
        bp="$W/build/.buildpack"
        name=$(in_stack "$img" "$bp" /bp/bin/detect /build) || { echo "no detect"; return 1; }
    else
        for b in $ORDER; do
            if name=$(in_stack "$img" "$ROOT/buildpacks/$b" /bp/bin/detect /build 2>/dev/null); then
                bp="$ROOT/buildpacks/$b"
                break
            fi
        done
    fi
    [ -n "$bp" ] || { echo "no buildpack detected"; return 1; }
    echo "   detected: $name ($bp)"

    if ! in_stack "$img" "$bp" /bp/bin/compile /build /cache /env >"$W/compile.out" 2>"$W/compile.err"; then
        sed 's/^/   | /' "$W/compile.out"
        sed 's/^/   ! /' "$W/compile.err"
        if [ "$fixture" = failing ] && grep -q 'error: intentional failure' "$W/compile.err"; then
            echo "   compile failed as expected"
            rm -rf "$W"
            return 0
        fi
        echo "compile failed"; return 1
    fi
    sed 's/^/   | /' "$W/compile.out"
    [ "$fixture" != failing ] || { echo "failing fixture compiled"; return 1; }
    grep -q '^-----> ' "$W/compile.out" || { echo "no step lines"; return 1; }

    in_stack "$img" "$bp" /bp/bin/release /build >"$W/release.yml"
    grep -q '^default_process_types:' "$W/release.yml" || { echo "bad release YAML"; return 1; }
    cmd=$(web_command "$W/build" "$W/release.yml")
    [ -n "$cmd" ] || { echo "no web process"; return 1; }
    echo "   web: $cmd"

    port=$(free_port)
    cid=$(docker run -d --network host --user 1000:1000 \
        -e PORT="$port" -e HOME=/app -e STACK="$STACK" -e WEB_CMD="$cmd" \
        -v "$W/build:/app:ro" -w /app "$img" \
        /bin/sh -c 'for f in /app/.profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; exec /bin/sh -c "$WEB_CMD"')
    body=""
    i=0
    while [ $i -lt 60 ]; do
        body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null) && break
        sleep 0.5
        i=$((i + 1))
    done
    logs=$(docker logs "$cid" 2>&1 || true)
    docker rm -f "$cid" >/dev/null 2>&1 || true
    expect="hello from $fixture"
    case "$body" in
        *"$expect"*) echo "   GET :$port -> $(echo "$body" | grep -o "${expect}[^<]*" | head -n 1)" ;;
        *) echo "   app logs:"; echo "$logs" | sed 's/^/   > /'; echo "no '$expect' in response"; return 1 ;;
    esac
    rm -rf "$W"
}

if [ $# -eq 0 ]; then
    set -- python@bookworm nodejs@bookworm php@bookworm static@bookworm procfile@bookworm \
        custom-buildpack@bookworm failing@bookworm static@tiny procfile@tiny custom-buildpack@tiny
fi

for c in "$@"; do
    echo "=== $c"
    start=$(date +%s)
    if out=$(run_case "$c" 2>&1); then
        echo "$out"
        echo "=== $c: PASS ($(( $(date +%s) - start ))s)"
        pass=$((pass + 1))
    else
        echo "$out"
        echo "=== $c: FAIL"
        failed=$((failed + 1))
        failures="$failures $c"
    fi
done
[ -z "$failures" ] || say "failed:$failures"
echo "$pass passed, $failed failed"
[ "$failed" = 0 ]
