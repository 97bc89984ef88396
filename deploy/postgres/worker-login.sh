#!/bin/sh
# Run once after `governance migrate`, as the database's owner: the login the workers and beat
# connect as, a member of the database's worker role (the one `governance migrate` recorded)
# and of nothing else, so the workers hold only what they do, never the owner's rights. With
# GOVERNANCE_DB_CONSOLE_USER and GOVERNANCE_DB_CONSOLE_PASSWORD also the approver console's
# login, a member of the reader role (it reads, and enrolls passkeys only by an operator's
# one-time link, through the function the reader role may call).
# Idempotent: a second run sets the passwords again and changes nothing else.
#
# Connects as libpq's variables say (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...).
set -eu

: "${GOVERNANCE_DB_WORKER_USER:?set GOVERNANCE_DB_WORKER_USER}"
: "${GOVERNANCE_DB_WORKER_PASSWORD:?set GOVERNANCE_DB_WORKER_PASSWORD}"

until pg_isready -q; do
    echo "waiting for PostgreSQL"
    sleep 1
done

psql -v ON_ERROR_STOP=1 -q -tA \
    -v login="$GOVERNANCE_DB_WORKER_USER" -v password="$GOVERNANCE_DB_WORKER_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'login')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
              'NOBYPASSRLS PASSWORD %L', :'login', :'password') \gexec
SELECT format('GRANT %I TO %I', worker_role, :'login') FROM deployment_settings \gexec
SELECT format('%s is a member of %s', :'login', worker_role) FROM deployment_settings;
SQL

if [ -n "${GOVERNANCE_DB_CONSOLE_USER:-}" ]; then
    : "${GOVERNANCE_DB_CONSOLE_PASSWORD:?set GOVERNANCE_DB_CONSOLE_PASSWORD}"
    psql -v ON_ERROR_STOP=1 -q -tA \
        -v login="$GOVERNANCE_DB_CONSOLE_USER" -v password="$GOVERNANCE_DB_CONSOLE_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'login')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
              'NOBYPASSRLS PASSWORD %L', :'login', :'password') \gexec
SELECT format('GRANT %I TO %I', reader_role, :'login') FROM deployment_settings \gexec
SELECT format('%s is a member of %s', :'login', reader_role) FROM deployment_settings;
SQL
fi
