#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for e2a's tests: loopback only, data in a temp dir (in
# memory where it can be).
#
#   eval "$(packaging/pg-test-cluster.sh start)"   # exports E2A_TEST_POSTGRES_URL, E2A_PG_TEST_DIR
#   .venv/bin/pytest tests/test_storage.py         # the PostgreSQL half now runs
#   packaging/pg-test-cluster.sh stop              # stops it and deletes its directory
#
# `pause DIR` stops the server and keeps its data; `resume DIR` starts it again on the same
# port (tests of a database that goes away and comes back).
#
# `start` prints only the export lines on stdout (progress goes to stderr). `stop` takes the
# cluster directory as its argument or from E2A_PG_TEST_DIR. Run as root, the server runs as
# the `postgres` OS user; run as anyone else, as that user. Never listens beyond 127.0.0.1.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DB_NAME=${E2A_PG_TEST_DB:-e2a_test}

say() { echo "pg-test-cluster: $*" >&2; }

as_server_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ensure_binaries() {
    if [ -x "$PG_BIN/initdb" ]; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        say "no PostgreSQL 15 in $PG_BIN — install it: sudo apt-get install postgresql-15"
        exit 1
    fi
    say "installing postgresql-15 (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
}

# The cluster lives in memory when /dev/shm is a tmpfs with room (1 GiB): the suite creates a
# database for each gateway it starts, and CREATE DATABASE took about 300 ms on an ext4 disk
# against 9 ms there, fsync=off notwithstanding. E2A_PG_TEST_PARENT overrides the choice.
cluster_parent() {
    if [ -n "${E2A_PG_TEST_PARENT:-}" ]; then
        echo "$E2A_PG_TEST_PARENT"
    elif [ -d /dev/shm ] && [ -w /dev/shm ] \
        && [ "$(df -P -k /dev/shm | awk 'NR == 2 { print $4 }')" -ge 1048576 ] \
        && df -P -t tmpfs /dev/shm >/dev/null 2>&1; then
        echo /dev/shm
    else
        echo "${TMPDIR:-/tmp}"
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Start the server of cluster $1 on port $2 (quietly; the exit status says whether it did).
start_server() {
    as_server_user "$PG_BIN/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $2 -k $1 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
}

start() {
    ensure_binaries
    local dir port
    dir=$(mktemp -d "$(cluster_parent)/e2a-pg.XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    as_server_user "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
        --no-locale --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        exit 1
    }
    # A free port can be taken between probing and binding: try a few.
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if start_server "$dir" "$port"; then
            as_server_user "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
            echo "$port" >"$dir/port"
            say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir"
            echo "export E2A_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/$DB_NAME"
            echo "export E2A_PG_TEST_DIR=$dir"
            return
        fi
    done
    cat "$dir/server.log" >&2
    rm -rf "$dir"
    say "could not start PostgreSQL (log above)"
    exit 1
}

# The cluster directory $2 (or E2A_PG_TEST_DIR) for command $1, if this script made it.
cluster_dir() {
    local dir=${2:-${E2A_PG_TEST_DIR:-}}
    if [ -z "$dir" ]; then
        say "$1: which cluster? pass its directory or set E2A_PG_TEST_DIR"
        exit 2
    fi
    case "$dir" in
    /dev/shm/e2a-pg.* | "${TMPDIR:-/tmp}"/e2a-pg.*) ;;
    "${E2A_PG_TEST_PARENT:-/dev/shm}"/e2a-pg.*) ;;
    *)
        say "$1: $dir is not a cluster this script made"
        exit 2
        ;;
    esac
    echo "$dir"
}

pause() {
    local dir
    dir=$(cluster_dir pause "$1")
    as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

resume() {
    local dir
    dir=$(cluster_dir resume "$1")
    start_server "$dir" "$(cat "$dir/port")" || {
        cat "$dir/server.log" >&2
        exit 1
    }
}

stop() {
    local dir
    dir=$(cluster_dir stop "$1")
    if [ -d "$dir/data" ]; then
        as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    say "stopped and removed $dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
pause) pause "${2:-}" ;;
resume) resume "${2:-}" ;;
*)
    echo "usage: $0 start | stop [DIR] | pause [DIR] | resume [DIR]" >&2
    exit 2
    ;;
esac
