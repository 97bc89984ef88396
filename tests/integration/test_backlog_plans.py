"""A backlog of unpublished events of other requests does not slow a command: on an outbox
large enough that its statistics do not notice the backlog, every statement of the command
path, run with the parameters the worker gives it, touches only the command's own rows —
with custom plans and with generic ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import migrated_database
from tests.support.commands import command, new_id, submit
from tests.support.signed import apply_command
from worker import sql

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTBOX_ROWS = 300_000
#: One row in twenty: 15,000 unpublished events, 5 % of the table, under the 10 % change that
#: makes autovacuum analyse it (and autovacuum is off for the table anyway).
BACKLOG_EVERY = 20
#: Buffers a statement on one request's rows may touch: a few index and heap pages.
FEW_BUFFERS = 60


@pytest.fixture(scope="module")
def outbox_with_backlog(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE outbox_events SET (autovacuum_enabled = false)")
            conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, command_id, request_id, "
                "routing_key, body, published_at) "
                "SELECT gen_random_uuid(), 'transition.applied', 'old-cmd-' || g, "
                "'old-' || (g %% 50000), 'transition.applied.approve', '{}'::jsonb, now() "
                "FROM generate_series(1, %s) AS g",
                (OUTBOX_ROWS,),
            )
            conn.execute("ANALYZE outbox_events")
            # What a broker outage leaves behind: events of other requests, never published,
            # which the statistics have not seen.
            conn.execute(
                "UPDATE outbox_events SET published_at = NULL WHERE sequence %% %s = 0",
                (BACKLOG_EVERY,),
            )
        yield url


def plan(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> dict[str, Any]:
    """The executed plan of ``statement`` (rolled back: nothing it locks or writes stays)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params
        ).fetchone()
    assert row is not None
    return dict(row[0][0]["Plan"])


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def buffers(node: dict[str, Any]) -> int:
    return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))


def assert_touches_only_its_own_rows(top: dict[str, Any]) -> None:
    removed = max(
        int(n.get("Rows Removed by Filter", 0)) + int(n.get("Rows Removed by Join Filter", 0))
        for n in nodes(top)
    )
    indexes = {n.get("Index Name") for n in nodes(top)} - {None}
    assert removed <= 5, (removed, indexes)
    assert buffers(top) <= FEW_BUFFERS, (buffers(top), indexes)
    assert "outbox_events_unpublished_idx" not in indexes


@pytest.fixture(params=["auto", "force_generic_plan"])
def conn(outbox_with_backlog: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    with psycopg.connect(outbox_with_backlog, autocommit=True) as connection:
        connection.execute(f"SET plan_cache_mode = {request.param}")
        yield connection


def test_the_per_command_statements_touch_only_the_command_s_own_rows(conn: Any) -> None:
    # Given a request of this command, with one event of its own
    request_id = new_id("fresh")
    stored = apply_command(conn, submit(request_id, initial_status="pending"))
    approve = command("approve", request_id, 1)
    # When the statements of a command on it run, with the parameters the worker gives them
    statements = {
        "backlog probe": (sql.WITH_BACKLOG, {"request_ids": [request_id]}),
        "backlog claim": (
            sql.CLAIM_REQUEST_BACKLOG,
            {"request_id": request_id, "sequence": stored.sequence},
        ),
        "mark published": (sql.MARK_PUBLISHED, {"sequences": [stored.sequence]}),
        "ledger lookup": (
            sql.LOOKUP,
            {"namespaces": ["operator"], "command_ids": [approve["command_id"]]},
        ),
        "principals and keys": (
            sql.PRINCIPALS_AND_KEYS,
            {"actor_ids": ["operator"], "key_ids": ["test-operator"]},
        ),
        "request lock": (sql.LOCK_REQUESTS, {"request_ids": [request_id]}),
    }
    # Then none of them reads the backlog of the other requests
    for name, (statement, params) in statements.items():
        try:
            assert_touches_only_its_own_rows(plan(conn, statement, params))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def test_a_request_with_a_backlog_of_its_own_reads_only_its_own(conn: Any) -> None:
    # old-20 is one of the requests whose events were left unpublished
    probe = plan(conn, sql.WITH_BACKLOG, {"request_ids": ["old-20"]})
    assert_touches_only_its_own_rows(probe)
    assert probe["Actual Rows"] == 1
