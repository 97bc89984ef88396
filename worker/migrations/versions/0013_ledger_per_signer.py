"""The ledger belongs to its signer, and keeps each entry for as long as it must.

``processed_commands`` is keyed by ``(namespace, command_id)``: in signed mode the namespace
is the proved signer's actor id, so nobody can occupy another actor's ``command_id``; in
development mode every sender shares the namespace ``''`` (an asserted actor proves
nothing); the worker's own expiries keep theirs, ``system``.

Each entry says when it may be forgotten (``keep_until``, set when it is written: the
idempotency window from then, and for a signed command at least until it is too old to be
accepted), and the database refuses to delete an entry before then, whoever asks: a role
that may prune the ledger still cannot make a command's re-send be judged as new.

Existing entries take the namespace of their outcome event's actor (signed mode) or the
shared one (development mode), and are kept 30 days (the default window) from when they
were written.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE processed_commands
    ADD COLUMN namespace text,
    ADD COLUMN keep_until timestamptz NOT NULL DEFAULT 'infinity';

UPDATE processed_commands AS p SET
    namespace = CASE
        WHEN o.body->'actor'->>'id' = 'system' AND p.command_id LIKE 'expire-%' THEN 'system'
        WHEN (SELECT auth FROM deployment_settings) = 'signed'
            THEN coalesce(o.body->'actor'->>'id', '')
        ELSE ''
    END,
    keep_until = p.processed_at + interval '30 days'
FROM outbox_events AS o
WHERE o.sequence = p.event_sequence;
UPDATE processed_commands SET namespace = '' WHERE namespace IS NULL;

-- A worker of the previous release, still running while this migration is rolled out, writes
-- entries without either column: they take the shared namespace and the default window, so
-- its commands are neither refused nor parked (a re-send of one is then judged by the
-- revision guard in signed mode, as after the window).
ALTER TABLE processed_commands ALTER COLUMN namespace SET NOT NULL,
    ALTER COLUMN namespace SET DEFAULT '',
    ALTER COLUMN keep_until SET DEFAULT now() + interval '30 days';
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_pkey;
ALTER TABLE processed_commands ADD PRIMARY KEY (namespace, command_id);
-- Retention reads the entries it may forget, oldest first, and only those.
CREATE INDEX processed_commands_keep_until_idx ON processed_commands (keep_until);

CREATE FUNCTION governance_refuse_early_forgetting() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.keep_until > now() THEN
        RAISE EXCEPTION 'processed_commands: % of % is kept until %',
            OLD.command_id, quote_literal(OLD.namespace), OLD.keep_until
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER processed_commands_kept
    BEFORE DELETE ON processed_commands
    FOR EACH ROW EXECUTE FUNCTION governance_refuse_early_forgetting();
"""

DOWNGRADE = """
DROP TRIGGER processed_commands_kept ON processed_commands;
DROP FUNCTION governance_refuse_early_forgetting();
DROP INDEX processed_commands_keep_until_idx;
-- Only one entry per command_id can stay: the oldest.
DELETE FROM processed_commands AS p USING processed_commands AS q
WHERE p.command_id = q.command_id AND (q.processed_at, q.namespace) < (p.processed_at, p.namespace);
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_pkey;
ALTER TABLE processed_commands ADD PRIMARY KEY (command_id);
ALTER TABLE processed_commands DROP COLUMN keep_until, DROP COLUMN namespace;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
