"""Every statement of the worker's hot path, built once at import.

The guarded transaction is two round trips, whatever the number of commands: the locks and
the reads are pipelined with ``BEGIN``; the one ``WRITE_RUN`` statement with ``COMMIT``.
"""

from __future__ import annotations

REQUEST_COLUMNS = (
    "request_id, state_id, state_type, mutation_type, intent, context, status, pending_reason, "
    "approval_requirements, revision, expected_state_version, expires_at, created_at, "
    "updated_at, metadata, policy"
)

#: Held shared from before the clock is read to the commit; a registry change takes it
#: exclusively (migration 0009's audit triggers) and stamps its audit row after. So every
#: decision time falls strictly between two registry changes, and the registry a decision was
#: made under is its audit replayed up to that time.
REGISTRY_SHARED = "SELECT pg_advisory_xact_lock_shared(7300, 1)"

#: One clock for every decision of the transaction: the database's, read once the registry
#: can no longer change under it.
CLOCK = "SELECT clock_timestamp()"

#: Transaction-scoped advisory locks on the requests' ids, taken in the order given (sorted).
LOCK_REQUEST_KEYS = """
SELECT pg_advisory_xact_lock(hashtextextended(request_id, 0))
FROM unnest(%(request_ids)s::text[]) WITH ORDINALITY AS ids(request_id, position)
ORDER BY position
"""

#: The requests as locked, with the head of each one's decision chain last.
LOCK_REQUESTS = f"""
SELECT {REQUEST_COLUMNS}, chain_head FROM mutation_requests
WHERE request_id = ANY(%(request_ids)s::text[])
ORDER BY request_id
FOR UPDATE
"""

#: The locked requests that have events nobody has published yet; run after the locks, so it
#: sees all that the requests' previous holders committed. Each request is looked up on its
#: own (a LATERAL subquery with LIMIT is run per request, with the request id as an index
#: condition): as a join, a planner that believes the unpublished rows are few would read
#: all of them for every command, which is what a backlog after a broker outage makes slow.
WITH_BACKLOG = """
SELECT r.request_id FROM unnest(%(request_ids)s::text[]) AS r(request_id)
CROSS JOIN LATERAL (
    SELECT 1 FROM outbox_events AS o
    WHERE o.request_id = r.request_id AND o.published_at IS NULL
    LIMIT 1
) AS unpublished
"""

#: The registered actors the commands name, each with the registered key its command names
#: (if any): read in the transaction's first round trip, beside the locks, in one statement,
#: so checking who sent a command costs neither a round trip nor a statement of its own.
PRINCIPALS_AND_KEYS = """
SELECT q.actor_id, a.actor_id IS NOT NULL, a.name, a.type, a.roles, a.groups, a.active,
       k.key_id, k.actor_id, k.public_key, k.revoked_at, k.scheme, k.algorithm
FROM unnest(%(actor_ids)s::text[], %(key_ids)s::text[]) AS q(actor_id, key_id)
LEFT JOIN actors AS a ON a.actor_id = q.actor_id
LEFT JOIN actor_keys AS k ON k.key_id = q.key_id
"""

#: Where each grant recorded on the locked pending requests stands in the registry now: its
#: actor (registered, active, groups) and the key that signed the grant (its revocation).
#: Read in the first round trip of a run that grants a requirement, after the locks, so a
#: grant that would complete a group requirement counts only the grants that still stand.
GRANT_STANDING = """
SELECT m.request_id, r->>'approval_id', r->>'approver_group', g->>'actor_id',
       a.actor_id IS NOT NULL, a.active, a.groups, signer.key_id, k.revoked_at
FROM mutation_requests AS m
CROSS JOIN LATERAL jsonb_array_elements(m.approval_requirements) AS r
CROSS JOIN LATERAL jsonb_array_elements(r->'grants') AS g
LEFT JOIN actors AS a ON a.actor_id = g->>'actor_id'
LEFT JOIN LATERAL (
    SELECT p.key_id FROM request_decisions AS d
    JOIN command_proofs AS p ON p.request_id = d.request_id AND p.revision = d.revision
    WHERE d.request_id = m.request_id AND d.actor_id = g->>'actor_id'
      AND d.category = 'approval' AND d.type = 'granted'
    ORDER BY d.revision DESC LIMIT 1
) AS signer ON true
LEFT JOIN actor_keys AS k ON k.key_id = signer.key_id
WHERE m.request_id = ANY(%(request_ids)s::text[]) AND m.status = 'pending'
  AND r->>'approver_group' IS NOT NULL AND r->>'status' = 'pending'
"""

#: The deployment's active approval policy (its newest version): read in the first round trip
#: of a run that has a submit to decide. The document itself is read only for a version this
#: process has not compiled yet (:data:`POLICY_DOCUMENT`).
ACTIVE_POLICY = "SELECT version, sha256 FROM policy_versions ORDER BY version DESC LIMIT 1"

POLICY_DOCUMENT = "SELECT document FROM policy_versions WHERE version = %(version)s"

#: What the idempotency ledger knows of the commands, each looked up in the namespace it
#: would be recorded in (its signer's, see :func:`worker.transaction.namespace_of`): their
#: payload hash and outcome event.
LOOKUP = """
SELECT p.namespace, p.command_id, p.payload_hash, o.sequence, o.routing_key, o.body,
       o.request_id
FROM unnest(%(namespaces)s::text[], %(command_ids)s::text[]) AS q(namespace, command_id)
JOIN processed_commands AS p ON p.namespace = q.namespace AND p.command_id = q.command_id
JOIN outbox_events AS o ON o.sequence = p.event_sequence
"""


#: Sequences for a run's events (one per command, the most it can write), drawn after its
#: locks are taken, so a request's events are numbered in the order its holders decided them.
#: The events carry their sequence when they are built and signed; unused ones are a gap.
DRAW_SEQUENCES = """
SELECT nextval(pg_get_serial_sequence('outbox_events', 'sequence'))
FROM generate_series(1, %(count)s)
"""

#: Every write of a run, in one statement, whatever the number of commands: each table is
#: written once, from one JSON array (see :class:`worker.writes.RunWrites`). A request is
#: written in its final state, guarded by the revision the run locked it at (a submit by
#: ``ON CONFLICT DO NOTHING``); the decisions, proof and applied event of a request whose write
#: matched no row are not written either, so they come back without a sequence. Each event
#: is stored under the sequence it was built with (:data:`DRAW_SEQUENCES`).
WRITE_RUN = """
WITH request_rows AS (
    SELECT * FROM jsonb_to_recordset(%(requests)s::jsonb) AS r(
        request_id text, inserted boolean, locked_revision bigint, state_id text,
        state_type text, mutation_type text, intent jsonb, context jsonb, status text,
        pending_reason text, approval_requirements jsonb, revision bigint,
        expected_state_version text, expires_at timestamptz, created_at timestamptz,
        updated_at timestamptz, metadata jsonb, policy jsonb, chain_head text)
), inserted AS (
    INSERT INTO mutation_requests (
        request_id, state_id, state_type, mutation_type, intent, context, status,
        pending_reason, approval_requirements, revision, expected_state_version, expires_at,
        created_at, updated_at, metadata, policy, chain_head)
    SELECT request_id, state_id, state_type, mutation_type, intent, context, status,
           pending_reason, approval_requirements, revision, expected_state_version, expires_at,
           created_at, updated_at, metadata, policy, chain_head
    FROM request_rows WHERE inserted
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
), updated AS (
    UPDATE mutation_requests AS m SET
        status = r.status,
        pending_reason = r.pending_reason,
        approval_requirements = r.approval_requirements,
        revision = r.revision,
        expected_state_version = r.expected_state_version,
        expires_at = r.expires_at,
        updated_at = r.updated_at,
        metadata = r.metadata,
        chain_head = r.chain_head
    FROM request_rows AS r
    WHERE NOT r.inserted AND m.request_id = r.request_id AND m.revision = r.locked_revision
    RETURNING m.request_id
), written AS (
    SELECT request_id FROM inserted UNION ALL SELECT request_id FROM updated
), decision_write AS (
    INSERT INTO request_decisions (
        request_id, revision, position, command_id, category, type, actor, actor_id, reason,
        metadata, occurred_at, chain_hash)
    SELECT d.request_id, d.revision, d.position, d.command_id, d.decision->>'category',
           d.decision->>'type', d.decision->'actor', d.decision->'actor'->>'id',
           d.decision->>'reason', d.decision->'metadata',
           (d.decision->>'occurred_at')::timestamptz, d.chain_hash
    FROM jsonb_to_recordset(%(decisions)s::jsonb) AS d(
        request_id text, revision bigint, position integer, command_id text, decision jsonb,
        chain_hash text)
    WHERE d.request_id IN (SELECT request_id FROM written)
), proof_write AS (
    INSERT INTO command_proofs (request_id, revision, command_id, key_id, signed_command)
    SELECT p.request_id, p.revision, p.command_id, p.key_id, p.signed_command
    FROM jsonb_to_recordset(%(proofs)s::jsonb) AS p(
        request_id text, revision bigint, command_id text, key_id text, signed_command text)
    WHERE p.request_id IN (SELECT request_id FROM written)
), event_rows AS (
    SELECT * FROM jsonb_to_recordset(%(events)s::jsonb) AS e(
        position integer, sequence bigint, event_id uuid, event_type text, command_id text,
        request_id text, routing_key text, body jsonb, payload_hash text, record boolean,
        namespace text, keep_until timestamptz, guarded boolean, trace_context text)
), event_write AS (
    INSERT INTO outbox_events (
        sequence, event_id, event_type, command_id, request_id, routing_key, body,
        trace_context)
    SELECT sequence, event_id, event_type, command_id, request_id, routing_key, body,
           trace_context
    FROM event_rows
    WHERE NOT guarded OR request_id IN (SELECT request_id FROM written)
    ORDER BY position
    RETURNING event_id, sequence
), ledger_write AS (
    INSERT INTO processed_commands (
        namespace, command_id, payload_hash, event_sequence, request_id, outcome, keep_until)
    SELECT e.namespace, e.command_id, e.payload_hash, w.sequence, e.request_id, e.event_type,
           coalesce(e.keep_until, 'infinity')
    FROM event_write AS w JOIN event_rows AS e ON e.event_id = w.event_id
    WHERE e.record
)
SELECT event_id::text, sequence FROM event_write
"""

#: A transaction that holds claimed outbox rows while it waits for the broker's confirms
#: (which may take up to the publisher's confirm timeout, twice): the session's
#: idle-in-transaction limit, meant for a holder that froze, must not end it meanwhile.
PUBLISHING_TRANSACTION = "SET LOCAL idle_in_transaction_session_timeout = '120s'"

#: By primary key only: a ``published_at IS NULL`` condition here would let the planner serve
#: the statement from the unpublished index, reading the whole backlog to find a few rows.
#: (An event published twice keeps its first mark.) Returns, for each row this marks, the
#: seconds from its write to now (a row marked before returns NULL: its mark is not now()).
MARK_PUBLISHED = """
UPDATE outbox_events SET published_at = coalesce(published_at, now())
WHERE sequence = ANY(%(sequences)s)
RETURNING CASE WHEN published_at = now() THEN extract(epoch FROM now() - created_at)::float8 END
"""

#: A request's unpublished events up to and including the one just committed, locked in
#: sequence order: whoever publishes a request's event first publishes its predecessors, so a
#: request's events leave in revision order even when an earlier writer died before publishing.
CLAIM_REQUEST_BACKLOG = """
SELECT sequence, routing_key, body, trace_context FROM outbox_events
WHERE request_id = %(request_id)s AND sequence <= %(sequence)s AND published_at IS NULL
ORDER BY sequence
FOR UPDATE
"""

#: Unpublished sequences of some requests, to keep the relay from overtaking a locked one.
UNPUBLISHED_OF_REQUESTS = """
SELECT request_id, sequence FROM outbox_events
WHERE published_at IS NULL AND request_id = ANY(%(request_ids)s)
ORDER BY sequence
"""

#: The relay's sweep: unpublished rows old enough that their writer has had its chance,
#: oldest first, skipping rows another relay holds.
CLAIM_UNPUBLISHED = """
SELECT sequence, routing_key, body, request_id, trace_context FROM outbox_events
WHERE published_at IS NULL AND created_at < now() - make_interval(secs => %(grace_seconds)s)
ORDER BY sequence
LIMIT %(batch_size)s
FOR UPDATE SKIP LOCKED
"""

#: Due pending requests, judged by the database clock. Claimed without ever waiting, in the
#: order every command takes its locks (the request's advisory lock, then its row), so a sweep
#: cannot deadlock with a command: what another sweeper or a command holds is skipped.
#:
#: The advisory locks are tried on a materialised list of the most overdue candidates, and the
#: LIMIT stops the trying as soon as the batch is full: a lock taken in the WHERE clause of the
#: row query would be tried on every row the plan visits before its LIMIT, and held by the
#: sweep until it commits. ``scan_size`` bounds the candidates (a few batches' worth, so
#: rows held by others do not starve the sweep).
CLAIM_DUE = """
WITH candidates AS MATERIALIZED (
    SELECT request_id, expires_at FROM mutation_requests
    WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()
    ORDER BY expires_at
    LIMIT %(scan_size)s
), claimed AS MATERIALIZED (
    SELECT request_id FROM candidates
    WHERE pg_try_advisory_xact_lock(hashtextextended(request_id, 0))
    LIMIT %(batch_size)s
)
SELECT request_id, revision FROM mutation_requests
WHERE request_id IN (SELECT request_id FROM claimed)
  AND status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()
ORDER BY expires_at
FOR UPDATE SKIP LOCKED
"""

#: One more delivery of a message that was delivered before and never completed (its worker
#: died, or the connection it came on was lost); returns how many such deliveries there were.
COUNT_DELIVERY = """
INSERT INTO delivery_attempts (message_key, attempts) VALUES (%(message_key)s, 1)
ON CONFLICT (message_key) DO UPDATE
SET attempts = delivery_attempts.attempts + 1, last_seen_at = now()
RETURNING attempts
"""

#: The delivery completed (the process survived it, whatever its outcome).
FORGET_DELIVERY = "DELETE FROM delivery_attempts WHERE message_key = %(message_key)s"
