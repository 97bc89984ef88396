#!/bin/sh
# The standby's entrypoint: on its first start (no data yet) it clones the primary with
# pg_basebackup -R, which writes primary_conninfo (naming this node by application_name, the
# name the primary's synchronous_standby_names lists) and standby.signal; then it runs the
# server as the image's entrypoint does, now as a standby streaming from the primary.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${GOVERNANCE_PRIMARY_HOST:?set GOVERNANCE_PRIMARY_HOST}"
: "${GOVERNANCE_STANDBY_NAME:?set GOVERNANCE_STANDBY_NAME}"
: "${GOVERNANCE_REPLICATION_PASSWORD:?set GOVERNANCE_REPLICATION_PASSWORD}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -q -h "$GOVERNANCE_PRIMARY_HOST" -p 5432; do
        echo "waiting for the primary at $GOVERNANCE_PRIMARY_HOST"
        sleep 1
    done
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    PGPASSWORD="$GOVERNANCE_REPLICATION_PASSWORD" su-exec postgres pg_basebackup \
        --pgdata "$PGDATA" \
        --dbname "host=$GOVERNANCE_PRIMARY_HOST port=5432 user=replicator application_name=$GOVERNANCE_STANDBY_NAME" \
        --write-recovery-conf \
        --slot "$GOVERNANCE_STANDBY_NAME" \
        --wal-method stream \
        --checkpoint=fast \
        --progress
fi

exec docker-entrypoint.sh "$@"
