"""The bench's emulated network: a proxy that adds a round trip to PostgreSQL and RabbitMQ
and changes nothing else."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import kombu
import psycopg

from bench.delay_proxy import DelayProxy

RTT_MS = 20.0


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def test_a_query_through_the_proxy_answers_the_same_one_round_trip_later(
    database_url: str,
) -> None:
    target = urlsplit(database_url)
    with (
        DelayProxy(f"{target.hostname}:{target.port or 5432}", RTT_MS) as proxy,
        psycopg.connect(through(database_url, proxy.port), autocommit=True) as conn,
    ):
        conn.execute("SELECT 1")  # the connection's own setup is not what is measured
        started = time.monotonic()
        row = conn.execute("SELECT 41 + 1").fetchone()
        took_ms = (time.monotonic() - started) * 1000
    assert row == (42,)
    # A lower bound only: the proxy holds each way for half the round trip.
    assert took_ms >= RTT_MS


def test_messages_go_through_the_proxy_intact(broker_url: str) -> None:
    target = urlsplit(broker_url)
    with (
        DelayProxy(f"{target.hostname}:{target.port or 5672}", RTT_MS) as proxy,
        kombu.Connection(through(broker_url, proxy.port)) as conn,
    ):
        queue = conn.SimpleQueue("governance.test.delay-proxy")
        try:
            body = {"payload": "x" * 300_000}  # larger than one chunk
            queue.put(body)
            message = queue.get(timeout=10)
            message.ack()
            assert message.payload == body
        finally:
            queue.close()
            conn.default_channel.queue_delete("governance.test.delay-proxy")


def test_a_stopped_proxy_reports_its_cpu_time(database_url: str) -> None:
    target = urlsplit(database_url)
    proxy = DelayProxy(f"{target.hostname}:{target.port or 5432}", 1.0).start()
    with psycopg.connect(through(database_url, proxy.port)) as conn:
        conn.execute("SELECT 1")
    used = proxy.stop()
    assert used["cpu_seconds"] > 0 and used["wall_seconds"] > 0
