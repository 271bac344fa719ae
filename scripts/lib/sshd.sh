# Sourced by the benchmarks: a stock OpenSSH sshd on loopback as the same-run baseline.
#
#   start_sshd DIR AUTHORIZED_PUBKEY   # sets SPORT and SPID; files and logs go in DIR

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_sshd() {
    local dir=$1 pubkey=$2
    if [ ! -x /usr/sbin/sshd ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
    fi
    SPORT=$(free_port)
    ssh-keygen -q -t ed25519 -N '' -f "$dir/sshd_host"
    mkdir -p /run/sshd
    cp "$pubkey" "$dir/authorized_keys"
    cat >"$dir/sshd_config" <<EOC
Port $SPORT
ListenAddress 127.0.0.1
HostKey $dir/sshd_host
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
EOC
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    SPID=$!
    sleep 0.5
}
