#!/bin/sh
# Entrypoint of tests/docker/postgres: a small stand-in for the official image's.
# On first start (empty $PGDATA) it runs initdb as the postgres user with the
# superuser $POSTGRES_USER / $POSTGRES_PASSWORD, opens host connections with
# scram-sha-256, creates $POSTGRES_DB (in single-user mode, so no temporary
# server ever logs "ready to accept connections"), then execs postgres as the
# postgres user. postgres itself logs "database system is ready to accept
# connections" (on stderr) once it accepts connections.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

log() { printf 'entrypoint: %s\n' "$*" >&2; }

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        exec_as="setpriv --reuid=postgres --regid=postgres --init-groups"
    else
        exec_as=""
    fi
    # shellcheck disable=SC2086
    $exec_as "$@"
}

# `docker run IMAGE -c foo=bar` means `postgres -c foo=bar`.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi
shift

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    chmod 2775 /var/run/postgresql
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        log "POSTGRES_PASSWORD must be set (the superuser's password)"
        exit 1
    fi
    log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" \
        --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >&2
    rm -f "$pwfile"
    {
        echo
        echo "# added by docker-entrypoint.sh: password logins from any address"
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        dbident="$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')"
        # Single-user mode runs as the bootstrap superuser ($POSTGRES_USER),
        # which therefore owns the new database.
        printf 'CREATE DATABASE "%s";\n' "$dbident" \
            | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    log "initialised"
fi

exec_as=""
[ "$(id -u)" = 0 ] && exec_as="setpriv --reuid=postgres --regid=postgres --init-groups"
# shellcheck disable=SC2086
exec $exec_as postgres -c listen_addresses='*' "$@"
