"""Requests, their append-only decisions, the idempotency ledger and the outbox event log.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'created','pending','approved','rejected','canceled','expired','superseded','executed'"
PENDING_REASONS = "'approval','external_check','schedule','dependency','quota','manual_review'"

UPGRADE = f"""
CREATE TABLE mutation_requests (
    request_id             text        PRIMARY KEY,
    state_id               text        NOT NULL,
    state_type             text        NOT NULL,
    mutation_type          text        NOT NULL,
    intent                 jsonb       NOT NULL,
    context                jsonb       NOT NULL,
    status                 text        NOT NULL CHECK (status IN ({STATUSES})),
    pending_reason         text        CHECK (pending_reason IN ({PENDING_REASONS})),
    approval_requirements  jsonb       NOT NULL DEFAULT '[]',
    revision               bigint      NOT NULL CHECK (revision >= 1),
    expected_state_version text,
    expires_at             timestamptz,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    metadata               jsonb       NOT NULL DEFAULT '{{}}',
    CHECK ((status = 'pending') = (pending_reason IS NOT NULL))
);

-- The pending queue by state and reason.
CREATE INDEX mutation_requests_pending_idx
    ON mutation_requests (state_id, pending_reason) WHERE status = 'pending';
-- Due expiry: only pending requests with a deadline are ever swept.
CREATE INDEX mutation_requests_due_expiry_idx
    ON mutation_requests (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
-- The pending queue by approver (jsonb containment on the requirements).
CREATE INDEX mutation_requests_approvers_idx
    ON mutation_requests USING gin (approval_requirements jsonb_path_ops)
    WHERE status = 'pending';

CREATE TABLE request_decisions (
    id          bigserial   PRIMARY KEY,
    request_id  text        NOT NULL REFERENCES mutation_requests (request_id),
    revision    bigint      NOT NULL,
    position    integer     NOT NULL,
    command_id  text        NOT NULL,
    category    text        NOT NULL,
    type        text        NOT NULL,
    actor       jsonb       NOT NULL,
    actor_id    text        NOT NULL,
    reason      text,
    metadata    jsonb       NOT NULL DEFAULT '{{}}',
    occurred_at timestamptz NOT NULL,
    UNIQUE (request_id, revision, position)
);
CREATE INDEX request_decisions_actor_idx ON request_decisions (actor_id, occurred_at);

-- History is append-only: the database refuses to rewrite it, whoever asks.
CREATE FUNCTION governance_refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'request_decisions is append-only';
END;
$$;
CREATE TRIGGER request_decisions_append_only
    BEFORE UPDATE OR DELETE ON request_decisions
    FOR EACH ROW EXECUTE FUNCTION governance_refuse_history_change();

CREATE TABLE outbox_events (
    sequence     bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    command_id   text        NOT NULL,
    request_id   text,
    routing_key  text        NOT NULL,
    body         jsonb       NOT NULL,
    -- The writing transaction: a reader of the log holds back what open writers may still add
    -- below the sequences it can already see.
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_events_unpublished_idx ON outbox_events (sequence) WHERE published_at IS NULL;
-- A request's unpublished events: checked under the row lock by every command, and claimed
-- in order by whoever publishes the request's next event.
CREATE INDEX outbox_events_request_unpublished_idx
    ON outbox_events (request_id, sequence) WHERE published_at IS NULL;
CREATE INDEX outbox_events_txid_idx ON outbox_events (txid, sequence);

CREATE TABLE processed_commands (
    command_id     text        PRIMARY KEY,
    payload_hash   text        NOT NULL,
    event_sequence bigint      NOT NULL REFERENCES outbox_events (sequence),
    request_id     text,
    outcome        text        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE processed_commands;
DROP TABLE outbox_events;
DROP TABLE request_decisions;
DROP FUNCTION governance_refuse_history_change();
DROP TABLE mutation_requests;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
