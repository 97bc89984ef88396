#!/bin/sh
# Run once by the postgres image's entrypoint, when it initialises the primary's data:
# a role the standby streams WAL as, the right to do so from the compose network, and the
# standby's replication slot (the primary keeps the WAL the standby still needs).
set -eu

: "${GOVERNANCE_REPLICATION_PASSWORD:?set GOVERNANCE_REPLICATION_PASSWORD}"
: "${GOVERNANCE_STANDBY_NAME:?set GOVERNANCE_STANDBY_NAME}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$GOVERNANCE_REPLICATION_PASSWORD" -v slot="$GOVERNANCE_STANDBY_NAME" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot');
SQL

echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
