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

# make_login LOGIN PASSWORD GROUP_COLUMN: LOGIN (made if missing, its password set again) as a
# member of the role deployment_settings records in GROUP_COLUMN, and of nothing more.
make_login() {
    psql -v ON_ERROR_STOP=1 -q -tA -v login="$1" -v password="$2" -v group="$3" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'login')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
              'NOBYPASSRLS PASSWORD %L', :'login', :'password') \gexec
SELECT format('GRANT %I TO %I', role, :'login')
  FROM (SELECT CASE :'group' WHEN 'worker_role' THEN worker_role ELSE reader_role END AS role
          FROM deployment_settings) AS recorded \gexec
SELECT format('%s is a member of %s', :'login',
              CASE :'group' WHEN 'worker_role' THEN worker_role ELSE reader_role END)
  FROM deployment_settings;
SQL
}

make_login "$GOVERNANCE_DB_WORKER_USER" "$GOVERNANCE_DB_WORKER_PASSWORD" worker_role
if [ -n "${GOVERNANCE_DB_CONSOLE_USER:-}" ]; then
    : "${GOVERNANCE_DB_CONSOLE_PASSWORD:?set GOVERNANCE_DB_CONSOLE_PASSWORD}"
    make_login "$GOVERNANCE_DB_CONSOLE_USER" "$GOVERNANCE_DB_CONSOLE_PASSWORD" reader_role
fi
