#!/bin/sh
# magrathea-svc: the one entry point of a service container. Compiled into the binary; the
# node agent writes it beside the service's data dir and mounts it read-only at
# /usr/local/bin/magrathea-svc in an image made by scripts/service-images.sh. The container
# runs as the service's own uid (not root, not a host account) with its data dir at /data
# and MAGRATHEA_SERVICE_TYPE (postgres, redis, mariadb) and MAGRATHEA_DB in its env
# (MAGRATHEA_THROWAWAY=1: a backup's throwaway instance, tuned for loading, not durability). Verbs:
#   magrathea-svc run             initialise /data when empty, then exec the server (foreground)
#   magrathea-svc ready           exit 0 once the server answers on its socket
#   magrathea-svc user-add NAME   create or reset a login for a link; its password on stdin
#   magrathea-svc user-del NAME   drop that login and its connections
#   magrathea-svc connect         the client, as the service's admin, on the local socket
#   magrathea-svc info            key=value lines: version, connections
# Admin access is only through the unix socket in /run/svc (inside the container): over TCP
# only link logins exist. Names are [a-z0-9_], passwords [A-Za-z0-9] (made by the controller;
# checked again here so nothing reaches SQL unquoted).
set -eu
TYPE=${MAGRATHEA_SERVICE_TYPE:-}
SOCK=/run/svc
DB=${MAGRATHEA_DB:-db}

die() { echo "magrathea-svc: $*" >&2; exit 1; }
case "$DB" in *[!a-z0-9_]* | "") die "bad database name" ;; esac
case "$TYPE" in postgres | redis | mariadb) ;; *) die "unknown service type '$TYPE'" ;; esac

# initdb and mariadb want the running uid to have a passwd entry; the service's uid has none.
if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
    for lib in /usr/lib/*/libnss_wrapper.so; do
        [ -f "$lib" ] || continue
        printf 'svc:x:%s:%s:service:/data:/bin/sh\n' "$(id -u)" "$(id -g)" >/run/svc/passwd.$$ 2>/dev/null || break
        printf 'svc:x:%s:\n' "$(id -g)" >/run/svc/group.$$
        export LD_PRELOAD="$lib" NSS_WRAPPER_PASSWD=/run/svc/passwd.$$ NSS_WRAPPER_GROUP=/run/svc/group.$$
        trap 'rm -f /run/svc/passwd.$$ /run/svc/group.$$' EXIT
        break
    done
fi

check_name() { case "$1" in *[!a-z0-9_]* | "") die "bad login name" ;; esac; }
read_password() {
    IFS= read -r PW || true
    case "$PW" in *[!A-Za-z0-9]* | "") die "bad password" ;; esac
}

# The container's memory limit in bytes (cgroup v2, then v1), empty when there is none: the
# servers are sized to it, so a service given more memory uses it and one given less is not
# killed for caching more than it may hold.
mem_limit() {
    l=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true)
    case "$l" in "" | max | *[!0-9]*) return 0 ;; esac
    # cgroup v1 says "no limit" with a number near 2^63.
    [ "$l" -gt 0 ] && [ "$l" -le 1099511627776 ] && echo "$l"
    return 0
}
MEM=$(mem_limit)

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -U postgres "$@"; }
maria_admin() { mariadb --no-defaults -S "$SOCK/mysqld.sock" -u root "$@"; }
redis_admin() { REDISCLI_AUTH=$(cat /data/.admin-pass) redis-cli -s "$SOCK/redis.sock" --user admin --no-auth-warning "$@"; }

init_postgres() {
    rm -rf /data/pg
    # A throwaway instance's (see below) need not reach the disk.
    nosync=
    [ "${MAGRATHEA_THROWAWAY:-}" = 1 ] && nosync=--no-sync
    initdb -D /data/pg -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 $nosync >&2
    # Over TCP: link logins with a password, from anywhere the network lets reach us.
    echo 'host all all all scram-sha-256' >>/data/pg/pg_hba.conf
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '$SOCK'"
        echo "password_encryption = scram-sha-256"
        echo "jit = off"
    } >>/data/pg/postgresql.conf
    # Links log in as their own roles and act as svc_owner, so what one creates the
    # others (and the backups) can use.
    postgres --single -D /data/pg ${nosync:+-c fsync=off} postgres >/dev/null <<EOF
CREATE ROLE svc_owner NOLOGIN;
CREATE DATABASE $DB OWNER svc_owner;
EOF
}

run_postgres() {
    if [ ! -s /data/pg/PG_VERSION ]; then
        if [ "${MAGRATHEA_THROWAWAY:-}" = 1 ] && [ -s /template/pg/PG_VERSION ]; then
            # A throwaway instance starts from a copy of the cluster the first one of its
            # service made (same image, same script: the agent keys /template by both).
            cp -R -p /template/pg /data/pg
        else
            init_postgres
            if [ "${MAGRATHEA_THROWAWAY:-}" = 1 ] && [ -d /template ] && [ ! -e /template/pg ]; then
                # Copied whole, then renamed in: a concurrent one never sees half of it. The
                # copy's name is unique across containers ($$ is not: every container's
                # entry script has the same pid), else two copies would write into one dir.
                t=$(mktemp -d /template/pg.XXXXXXXX) &&
                    { { cp -R -p /data/pg/. "$t" && chmod 700 "$t" && mv -T "$t" /template/pg; } 2>/dev/null || rm -rf "$t"; }
            fi
        fi
    fi
    if [ "${MAGRATHEA_THROWAWAY:-}" = 1 ]; then
        # A throwaway instance (a backup's verification): nothing of it survives a crash, so
        # no fsync and no WAL beyond the minimum (a restore's tables, created in its own
        # transaction, skip WAL altogether); the index builds sort in memory.
        exec postgres -D /data/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c checkpoint_timeout=1h \
            -c autovacuum=off -c maintenance_work_mem=256MB
    fi
    # A quarter of the memory for shared buffers (Postgres's own advice; its default, 128MB,
    # is that of the default 512M), and the planner told the rest is cache.
    [ -n "$MEM" ] || exec postgres -D /data/pg
    exec postgres -D /data/pg -c shared_buffers=$((MEM / 4 / 1024))kB \
        -c effective_cache_size=$((MEM * 3 / 4 / 1024))kB
}

run_mariadb() {
    if [ ! -d /data/mysql/mysql ]; then
        rm -rf /data/mysql
        mariadb-install-db --no-defaults --datadir=/data/mysql --auth-root-authentication-method=normal \
            --skip-test-db >&2
        # Only root@localhost (the socket, inside the container) stays, and the system account.
        mariadbd --no-defaults --datadir=/data/mysql --bootstrap --skip-networking >&2 <<EOF
USE mysql;
DELETE FROM global_priv WHERE NOT (User = 'root' AND Host = 'localhost') AND User <> 'mariadb.sys';
CREATE DATABASE IF NOT EXISTS \`$DB\`;
EOF
    fi
    exec mariadbd --no-defaults --datadir=/data/mysql --socket="$SOCK/mysqld.sock" \
        --pid-file="$SOCK/mysqld.pid" --bind-address=0.0.0.0 --port=3306 --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        ${MEM:+--innodb-buffer-pool-size=$((MEM / 2))}
}

run_redis() {
    if [ ! -s /data/.admin-pass ]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >/data/.admin-pass.tmp)
        mv /data/.admin-pass.tmp /data/.admin-pass
    fi
    if [ ! -s /data/users.acl ]; then
        (umask 077; printf 'user default off\nuser admin on >%s ~* &* +@all\n' "$(cat /data/.admin-pass)" >/data/users.acl)
    fi
    (umask 077; cat >"$SOCK/redis.conf" <<EOF
port 6379
bind * -::*
protected-mode no
dir /data
appendonly yes
aclfile /data/users.acl
unixsocket $SOCK/redis.sock
unixsocketperm 700
EOF
    )
    # Writes are refused ("OOM command not allowed") before the data outgrows the limit,
    # rather than the server being killed; a quarter is left for the copy-on-write of the
    # forked saves (BGSAVE, the append-only file's rewrite).
    [ -z "$MEM" ] || printf 'maxmemory %s\nmaxmemory-policy noeviction\n' $((MEM * 3 / 4)) >>"$SOCK/redis.conf"
    exec redis-server "$SOCK/redis.conf"
}

case "${1:-}" in
run)
    case "$TYPE" in postgres) run_postgres ;; mariadb) run_mariadb ;; redis) run_redis ;; esac
    ;;
ready)
    case "$TYPE" in
    postgres) pg_isready -q -h "$SOCK" -U postgres ;;
    mariadb) mariadb-admin --no-defaults -S "$SOCK/mysqld.sock" -u root ping >/dev/null 2>&1 ;;
    redis) [ -s /data/.admin-pass ] && [ "$(redis_admin PING 2>/dev/null)" = PONG ] ;;
    esac
    ;;
user-add)
    check_name "${2:-}"
    read_password
    case "$TYPE" in
    postgres)
        psql_admin -d postgres <<EOF
DO \$\$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$2') THEN
    ALTER ROLE "$2" LOGIN PASSWORD '$PW';
  ELSE
    CREATE ROLE "$2" LOGIN PASSWORD '$PW' IN ROLE svc_owner;
  END IF;
END \$\$;
ALTER ROLE "$2" SET role = 'svc_owner';
EOF
        ;;
    mariadb)
        maria_admin <<EOF
CREATE OR REPLACE USER '$2'@'%' IDENTIFIED BY '$PW';
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$2'@'%';
EOF
        ;;
    redis)
        printf 'ACL SETUSER %s reset on >%s ~* &* +@all\nACL SAVE\n' "$2" "$PW" | redis_admin >/dev/null
        ;;
    esac
    ;;
user-del)
    check_name "${2:-}"
    case "$TYPE" in
    postgres)
        psql_admin -d postgres <<EOF
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '$2';
DROP ROLE IF EXISTS "$2";
EOF
        ;;
    mariadb)
        maria_admin -e "DROP USER IF EXISTS '$2'@'%';"
        ;;
    redis)
        printf 'ACL DELUSER %s\nACL SAVE\n' "$2" | redis_admin >/dev/null
        ;;
    esac
    ;;
connect)
    case "$TYPE" in
    postgres) exec psql -X -h "$SOCK" -U postgres -d "$DB" ;;
    mariadb) exec mariadb --no-defaults -S "$SOCK/mysqld.sock" -u root "$DB" ;;
    redis) REDISCLI_AUTH=$(cat /data/.admin-pass) exec redis-cli -s "$SOCK/redis.sock" --user admin --no-auth-warning ;;
    esac
    ;;
info)
    case "$TYPE" in
    postgres)
        echo "version=$(psql_admin -d postgres -Atc 'SHOW server_version')"
        echo "connections=$(psql_admin -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")"
        ;;
    mariadb)
        echo "version=$(maria_admin -N -e 'SELECT VERSION()')"
        echo "connections=$(maria_admin -N -e "SELECT VARIABLE_VALUE - 1 FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'")"
        ;;
    redis)
        echo "version=$(redis_admin INFO server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')"
        echo "connections=$(( $(redis_admin INFO clients | sed -n 's/^connected_clients:\([0-9]*\).*/\1/p') - 1 ))"
        ;;
    esac
    ;;
*)
    die "usage: magrathea-svc run|ready|user-add NAME|user-del NAME|connect|info"
    ;;
esac
