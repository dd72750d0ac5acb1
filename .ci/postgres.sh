#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the database tests (Debian's initdb/pg_ctl).
#   . .ci/postgres.sh && pg_start    exports JBO_TEST_POSTGRES_URL (loopback port, trust auth)
#   pg_stop                          stops it and removes its data folder
# The server runs as an unprivileged user: CI runs as root, which PostgreSQL refuses.
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

pg_start() {
    local user port
    user="$(id -un)"
    if [ "$(id -u)" -eq 0 ]; then
        user=jbo-pg
        id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
    PG_DIR="$(mktemp -d /tmp/jbo-pg.XXXXXX)"
    chown "$user" "$PG_DIR"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    _pg_as() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
    _pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U jbo --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 &&
    _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null || {
        echo "PostgreSQL did not start (logs in $PG_DIR); the PostgreSQL tests will fail" >&2
        cat "$PG_DIR"/*.log >&2 2>/dev/null
        return 1
    }
    export JBO_TEST_POSTGRES_URL="postgresql://jbo@127.0.0.1:$port/postgres"
    PG_USER="$user"
    echo "PostgreSQL 15 test server at $JBO_TEST_POSTGRES_URL"
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
    else
        "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
    fi
    rm -rf "$PG_DIR"
    unset PG_DIR JBO_TEST_POSTGRES_URL
}
