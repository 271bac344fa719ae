#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, build the binary,
# initialise a data dir with your SSH key as admin, start the server on 127.0.0.1:2222
# (in the background, log in $DATA/serve.log) and push the sample app into it.
#
#   MAGRATHEA_DATA   data dir (default ~/.magrathea)
#   LISTEN           ssh listen address (default 127.0.0.1:2222)
#   HTTP             the apps' HTTP address (default 127.0.0.1:8080)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${MAGRATHEA_DATA:-$HOME/.magrathea}
LISTEN=${LISTEN:-127.0.0.1:2222}
PORT=${LISTEN##*:}
HTTP=${HTTP:-127.0.0.1:8080}

bash scripts/deps.sh
bash scripts/docker-up.sh
bash scripts/stack-tiny.sh >/dev/null
bash scripts/stack-bookworm.sh >/dev/null
# Apps that pin Python 3.13 or Node 20 say `stack: trixie`.
bash scripts/stack-trixie.sh >/dev/null
echo "==> building magrathea (release)"
cargo build --release --locked 2>&1 | tail -n 1
BIN=$ROOT/target/release/magrathea

KEY=$HOME/.ssh/id_ed25519
if [ ! -f "$KEY.pub" ] && [ ! -f "$HOME/.ssh/id_rsa.pub" ]; then
    echo "==> no SSH key found; creating $KEY"
    mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$KEY"
fi
[ -f "$KEY.pub" ] || KEY=$HOME/.ssh/id_rsa

if [ -d /run/systemd/system ] && [ "${MAGRATHEA_SYSTEMD:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
    # systemd runs here: install the controller as a service of its own unprivileged user.
    echo "==> installing the magrathea service (systemd, user 'magrathea', data /var/lib/magrathea)"
    DATA=/var/lib/magrathea
    echo "MAGRATHEA_SERVE_ARGS=--listen $LISTEN --http $HTTP" >/etc/default/magrathea
    bash scripts/install-systemd.sh "$BIN" "$KEY.pub"
    for _ in $(seq 150); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
    RUNNING="as the systemd service 'magrathea' (journalctl -u magrathea)"
    STOP="systemctl stop magrathea"
else
    "$BIN" init --data "$DATA" --admin-key "$KEY.pub"

    if [ -f "$DATA/serve.pid" ] && kill -0 "$(cat "$DATA/serve.pid")" 2>/dev/null; then
        echo "==> stopping the running server (pid $(cat "$DATA/serve.pid"))"
        kill "$(cat "$DATA/serve.pid")"
        for _ in $(seq 50); do kill -0 "$(cat "$DATA/serve.pid")" 2>/dev/null || break; sleep 0.2; done
    fi
    echo "==> starting magrathea serve on $LISTEN (log: $DATA/serve.log)"
    nohup "$BIN" serve --data "$DATA" --listen "$LISTEN" --http "$HTTP" >"$DATA/serve.log" 2>&1 &
    echo $! >"$DATA/serve.pid"
    for _ in $(seq 100); do grep -q "ssh listening" "$DATA/serve.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "ssh listening" "$DATA/serve.log" || { cat "$DATA/serve.log"; exit 1; }
    RUNNING="(pid $(cat "$DATA/serve.pid"), log $DATA/serve.log)"
    STOP="kill \$(cat $DATA/serve.pid)"
fi

SSH="ssh -i $KEY -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
SAMPLE=$(mktemp -d)
cp -r "$ROOT/tests/fixtures/static/." "$SAMPLE/" 2>/dev/null || echo "<h1>hello from magrathea</h1>" >"$SAMPLE/index.html"
(
    cd "$SAMPLE"
    git init -q -b main
    git add -A
    git -c user.email=you@example.com -c user.name=you commit -qm "sample app"
    echo "==> git push paas main (sample app 'hello')"
    GIT_SSH_COMMAND="$SSH" git push "ssh://git@127.0.0.1:$PORT/hello" main
)
rm -rf "$SAMPLE"
echo "==> curl -H 'Host: hello.localhost' http://$HTTP/"
curl -fsS -H 'Host: hello.localhost' "http://$HTTP/"

cat <<EOT

Magrathea is running $RUNNING.

The sample app answers at http://$HTTP/ with 'Host: hello.localhost'.

Add it to an app's repo:
    git remote add paas ssh://git@127.0.0.1:$PORT/myapp
    git push paas main

Or add this to ~/.ssh/config and use 'ssh paas help':
    Host paas
        HostName 127.0.0.1
        Port $PORT
        User git
        IdentityFile $KEY

Stop it with: $STOP
Check the machine with: $BIN doctor --data $DATA
EOT
