"""Baseline 2, the naive peer: a plain Celery task doing only the bare guarded transaction.

Lock the row ``FOR UPDATE``, check the revision, ``UPDATE`` it to revision + 1, insert one
decision row, commit: five statements, one round trip each, on the bench's own two tables.
No ledger, no outbox, no idempotency; the way most teams would write it. With
``BENCH_NAIVE_PUBLISH_EVENTS=1`` it also publishes one confirmed event per command.

Run as ``celery -A bench.naive_app worker`` with ``GOVERNANCE_DATABASE_URL`` and
``GOVERNANCE_BROKER_URL`` set; completion goes to the harness as a datagram
(``BENCH_SIGNAL_ADDR``) or, with events on, as the event itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

import kombu
import psycopg
from celery import signals

from bench.baseline_app import baseline_app
from bench.client import NAIVE_QUEUE, signal_done

NAIVE_TASK = "bench.naive_apply"
NAIVE_EVENTS_EXCHANGE = "bench.naive.events"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_naive_requests (
    request_id text PRIMARY KEY,
    status     text NOT NULL,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bench_naive_decisions (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    revision    bigint NOT NULL,
    command_id  text NOT NULL,
    type        text NOT NULL,
    actor_id    text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
"""

app = baseline_app("bench-naive", NAIVE_QUEUE)

_state: dict[str, Any] = {}


def _connection() -> psycopg.Connection[Any]:
    if _state.get("pid") != os.getpid():
        _state.clear()
        _state["pid"] = os.getpid()
        _state["conn"] = psycopg.connect(os.environ["GOVERNANCE_DATABASE_URL"], autocommit=True)
    conn: psycopg.Connection[Any] = _state["conn"]
    return conn


def _producer() -> kombu.Producer:
    if "producer" not in _state:
        connection = kombu.Connection(
            os.environ["GOVERNANCE_BROKER_URL"], transport_options={"confirm_publish": True}
        )
        _state["broker"] = connection
        _state["producer"] = kombu.Producer(
            connection.default_channel,
            exchange=kombu.Exchange(NAIVE_EVENTS_EXCHANGE, type="topic", durable=True),
        )
    producer: kombu.Producer = _state["producer"]
    return producer


@app.task(name=NAIVE_TASK, acks_late=True, ignore_result=True)
def naive_apply(command: dict[str, Any]) -> None:
    """Apply one command with the bare guarded transaction."""
    conn = _connection()
    request_id = command["request_id"]
    expected = command["expected_revision"]
    with conn.transaction():
        row = conn.execute(
            "SELECT revision FROM bench_naive_requests WHERE request_id = %s FOR UPDATE",
            (request_id,),
        ).fetchone()
        if row is None:
            outcome = "not_found"
        elif row[0] != expected:
            outcome = "concurrency_conflict"
        else:
            conn.execute(
                "UPDATE bench_naive_requests SET revision = revision + 1, status = %s, "
                "updated_at = now() WHERE request_id = %s AND revision = %s",
                (command["type"], request_id, expected),
            )
            conn.execute(
                "INSERT INTO bench_naive_decisions (request_id, revision, command_id, type, "
                "actor_id) VALUES (%s, %s, %s, %s, %s)",
                (
                    request_id,
                    expected + 1,
                    command["command_id"],
                    command["type"],
                    command.get("actor", {}).get("id"),
                ),
            )
            outcome = "applied"
    if os.environ.get("BENCH_NAIVE_PUBLISH_EVENTS") == "1":
        body = {"command_id": command["command_id"], "outcome": outcome, "request_id": request_id}
        _producer().publish(
            json.dumps(body),
            routing_key=f"naive.{outcome}",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            retry=True,
        )
    else:
        signal_done(os.environ.get("BENCH_SIGNAL_ADDR"), command["command_id"], outcome)


@signals.worker_process_shutdown.connect
def _close(**_: Any) -> None:
    conn = _state.get("conn")
    if conn is not None and _state.get("pid") == os.getpid():
        conn.close()
    broker = _state.get("broker")
    if broker is not None:
        broker.release()
    _state.clear()
