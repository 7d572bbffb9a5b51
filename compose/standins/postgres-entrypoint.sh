#!/bin/sh
# Stand-in for the official postgres image's entrypoint, for machines without a registry: the
# same variables (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA), the same data path.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
BIN=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/pwfile
    chown postgres /tmp/pwfile
    su postgres -s /bin/sh -c "$BIN/initdb -D '$PGDATA' -U '${POSTGRES_USER:-postgres}' \
        --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8" >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    su postgres -s /bin/sh -c "$BIN/pg_ctl -D '$PGDATA' -w -o '-c listen_addresses=' start" >/dev/null
    if [ -n "${POSTGRES_DB:-}" ] && [ "${POSTGRES_DB}" != postgres ]; then
        su postgres -s /bin/sh -c "$BIN/createdb -U '${POSTGRES_USER:-postgres}' '$POSTGRES_DB'"
    fi
    su postgres -s /bin/sh -c "$BIN/pg_ctl -D '$PGDATA' -w stop" >/dev/null
fi
exec su postgres -s /bin/sh -c "exec $BIN/postgres -D '$PGDATA' -c listen_addresses='*'"
