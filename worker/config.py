"""Settings from the environment, checked once so a bad URL fails with the variable's name."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from governance import urls
from governance.passkeys import DEFAULT_ORIGINS, origins_from
from governance.topology import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_QUEUE_TYPE,
    delivery_limit_from,
    queue_type_from,
)
from worker.retention import RetentionPolicy

T = TypeVar("T")


class ConfigurationError(ValueError):
    """A setting that cannot be used; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    """Everything a worker process needs to know about its surroundings."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    #: Connections each worker process keeps to PostgreSQL.
    pool_size: int = 4
    #: Messages each worker process reserves ahead; short tasks want several.
    prefetch_multiplier: int = 8
    #: Due requests expired per sweep transaction.
    expiry_batch_size: int = 200
    #: Seconds between expiry sweeps and between outbox sweeps (beat).
    expiry_interval: float = 5.0
    relay_interval: float = 2.0
    #: Outbox rows younger than this are left to the worker that wrote them.
    relay_grace_seconds: float = 2.0
    #: Attempts for a command whose handler raises something unexpected, before dead-lettering.
    poison_retry_limit: int = 5
    #: Counted retries of a command whose transaction keeps ending in a statement or lock
    #: timeout or an internal error (the database's fault or the command's), then parked.
    suspect_retry_limit: int = 20
    #: ``signed`` (the default): every command's author is proved by its signature and the
    #: roles table applies; ``off``: development only, the actor is taken as asserted.
    auth: str = "signed"
    #: The worker's key file (``GOVERNANCE_WORKER_KEY``): every event it publishes is signed
    #: with it. Required in signed mode; read once, when the worker starts.
    worker_key: str | None = None
    #: ``required`` (the default): a submit takes its approval requirements from the
    #: deployment's approval policy, and is refused while none is applied; ``requester``:
    #: development only, the requester's own requirements alone.
    approval_policy: str = "required"
    #: The deployment signed commands must name as their ``audience``.
    audience: str = "governance"
    #: How old (seconds) a signed command's ``issued_at`` may be.
    max_command_age: float = 86_400.0
    #: The console origins a passkey-signed command's assertion may come from
    #: (``GOVERNANCE_WEBAUTHN_ORIGINS``, comma- or space-separated); each one's host is its
    #: relying-party id.
    webauthn_origins: frozenset[str] = DEFAULT_ORIGINS
    #: Deliveries of one message during which its worker was lost (killed, never reporting a
    #: failure), past which the message is parked instead of tried again.
    lost_delivery_limit: int = 5
    #: How long a worker retries an infrastructure fault in process before the command goes
    #: back to the broker (and, in batch mode, the event loop is free again).
    infrastructure_retry_seconds: float = 5.0
    #: Days the idempotency ledger keeps a command (0: forever); a re-send after that is
    #: judged as a new command, which the revision guard refuses.
    ledger_window_days: float = 30.0
    #: Days the event log keeps a published event (0: forever); at least the ledger window.
    log_retention_days: float = 30.0
    #: Seconds between retention runs (beat).
    retention_interval: float = 3600.0
    #: The most commands applied in one transaction. The worker takes what has arrived, up to
    #: this bound, so a quiet queue gives batches of one; 1 is per-task mode (each command
    #: its own Celery task in a pool child).
    batch_size: int = 100
    #: Under a pool without an event loop only (gevent, eventlet): how often a batch is
    #: applied. With an event loop a batch is applied as soon as what arrived has been read.
    batch_linger_ms: float = 5.0
    #: ``quorum`` (the default) or ``classic``: how the worker's queues are declared.
    queue_type: str = DEFAULT_QUEUE_TYPE
    #: Deliveries after which a quorum queue dead-letters a message itself (last resort).
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    #: Port of the Prometheus metrics endpoint the worker's main process serves (None: off).
    metrics_port: int | None = None
    #: ``text`` (the default) or ``json``: one JSON object per log line.
    log_format: str = "text"
    #: ``none`` (the default: the OpenTelemetry API's no-op), ``otlp`` or ``console``.
    traces_exporter: str = "none"
    #: With ``console``, the file spans are appended to (one JSON object a line) instead of
    #: standard output.
    traces_file: str | None = None

    # Bounds on every database wait, in seconds (see worker/database.py). A parameter the
    # database URL sets itself (``?connect_timeout=``, ``?options=-c lock_timeout=...``) wins.
    #: How long a command waits for a pooled connection before it is retried.
    db_acquire_timeout: float = 5.0
    #: One connection attempt (libpq ``connect_timeout``: whole seconds, at least 2).
    db_connect_timeout: float = 5.0
    #: How long the pool retries a lost connection in the background before it gives that
    #: attempt up; the next command that needs a connection starts a fresh one at once, so
    #: this caps the pool's backoff between attempts, and so how late it notices a recovery.
    db_reconnect_timeout: float = 10.0
    #: A wait for a lock (0 turns it off); its expiry is retried, never a rejection.
    db_lock_timeout: float = 5.0
    #: One statement (0 turns it off).
    db_statement_timeout: float = 15.0
    #: A session idle inside its transaction is ended by the server, releasing its locks
    #: (0 turns it off).
    db_idle_in_transaction_timeout: float = 15.0
    #: Data left unacknowledged this long breaks the connection (0: the system's default).
    db_tcp_user_timeout: float = 10.0
    #: TCP keepalives on both ends: an idle connection whose peer vanished is dropped after
    #: idle + interval x count seconds.
    db_keepalives_idle: float = 5.0
    db_keepalives_interval: float = 2.0
    db_keepalives_count: int = 3

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=database_url_from(
                env.get("GOVERNANCE_DATABASE_URL", DEFAULT_DATABASE_URL), "GOVERNANCE_DATABASE_URL"
            ),
            broker_url=broker_url_from(
                env.get("GOVERNANCE_BROKER_URL", DEFAULT_BROKER_URL), "GOVERNANCE_BROKER_URL"
            ),
            pool_size=_int(env, "GOVERNANCE_DB_POOL_SIZE", 4, minimum=1),
            prefetch_multiplier=_int(env, "GOVERNANCE_PREFETCH_MULTIPLIER", 8, minimum=1),
            expiry_batch_size=_int(env, "GOVERNANCE_EXPIRY_BATCH_SIZE", 200, minimum=1),
            expiry_interval=_float(env, "GOVERNANCE_EXPIRY_INTERVAL", 5.0),
            relay_interval=_float(env, "GOVERNANCE_RELAY_INTERVAL", 2.0),
            relay_grace_seconds=_float(env, "GOVERNANCE_RELAY_GRACE_SECONDS", 2.0),
            poison_retry_limit=_int(env, "GOVERNANCE_POISON_RETRY_LIMIT", 5, minimum=0),
            suspect_retry_limit=_int(env, "GOVERNANCE_SUSPECT_RETRY_LIMIT", 20, minimum=0),
            auth=_choice(env, "GOVERNANCE_AUTH", "signed", ("signed", "off")),
            worker_key=env.get("GOVERNANCE_WORKER_KEY") or None,
            approval_policy=_choice(
                env, "GOVERNANCE_POLICY", "required", ("required", "requester")
            ),
            audience=audience_from(env.get("GOVERNANCE_AUDIENCE", "governance")),
            max_command_age=_float(env, "GOVERNANCE_MAX_COMMAND_AGE", 86_400.0),
            webauthn_origins=webauthn_origins_from(env.get("GOVERNANCE_WEBAUTHN_ORIGINS")),
            lost_delivery_limit=_int(env, "GOVERNANCE_LOST_DELIVERY_LIMIT", 5, minimum=0),
            infrastructure_retry_seconds=_float(
                env, "GOVERNANCE_INFRASTRUCTURE_RETRY_SECONDS", 5.0
            ),
            ledger_window_days=_float(env, "GOVERNANCE_LEDGER_WINDOW_DAYS", 30.0, zero=True),
            log_retention_days=_float(env, "GOVERNANCE_LOG_RETENTION_DAYS", 30.0, zero=True),
            retention_interval=_float(env, "GOVERNANCE_RETENTION_INTERVAL", 3600.0),
            batch_size=_int(env, "GOVERNANCE_BATCH_SIZE", 100, minimum=1),
            batch_linger_ms=_float(env, "GOVERNANCE_BATCH_LINGER_MS", 5.0),
            queue_type=_queue_setting(queue_type_from, env),
            delivery_limit=_queue_setting(delivery_limit_from, env),
            metrics_port=_port(env, "GOVERNANCE_METRICS_PORT"),
            log_format=_choice(env, "GOVERNANCE_LOG_FORMAT", "text", ("text", "json")),
            traces_exporter=_choice(
                env, "OTEL_TRACES_EXPORTER", "none", ("none", "otlp", "console")
            ),
            traces_file=env.get("GOVERNANCE_TRACES_FILE") or None,
            db_acquire_timeout=_float(env, "GOVERNANCE_DB_ACQUIRE_TIMEOUT", 5.0),
            db_connect_timeout=_float(env, "GOVERNANCE_DB_CONNECT_TIMEOUT", 5.0),
            db_reconnect_timeout=_float(env, "GOVERNANCE_DB_RECONNECT_TIMEOUT", 10.0),
            db_lock_timeout=_float(env, "GOVERNANCE_DB_LOCK_TIMEOUT", 5.0, zero=True),
            db_statement_timeout=_float(env, "GOVERNANCE_DB_STATEMENT_TIMEOUT", 15.0, zero=True),
            db_idle_in_transaction_timeout=_float(
                env, "GOVERNANCE_DB_IDLE_IN_TRANSACTION_TIMEOUT", 15.0, zero=True
            ),
            db_tcp_user_timeout=_float(env, "GOVERNANCE_DB_TCP_USER_TIMEOUT", 10.0, zero=True),
            db_keepalives_idle=_float(env, "GOVERNANCE_DB_KEEPALIVES_IDLE", 5.0),
            db_keepalives_interval=_float(env, "GOVERNANCE_DB_KEEPALIVES_INTERVAL", 2.0),
            db_keepalives_count=_int(env, "GOVERNANCE_DB_KEEPALIVES_COUNT", 3, minimum=1),
        )
        try:
            settings.retention_policy()
        except ValueError as exc:
            raise ConfigurationError(
                f"GOVERNANCE_LOG_RETENTION_DAYS={settings.log_retention_days:g} with "
                f"GOVERNANCE_LEDGER_WINDOW_DAYS={settings.ledger_window_days:g}: {exc}"
            ) from None
        window = _days(settings.ledger_window_days)
        if window is not None and settings.max_command_age > window.total_seconds():
            # A command still young enough to be accepted must still be in the ledger, or
            # its re-send (or a captured copy) would be judged as new once its row is pruned.
            raise ConfigurationError(
                f"GOVERNANCE_MAX_COMMAND_AGE={settings.max_command_age:g} (seconds) exceeds "
                f"the ledger window GOVERNANCE_LEDGER_WINDOW_DAYS="
                f"{settings.ledger_window_days:g} ({window.total_seconds():g} seconds): a "
                "command young enough to be accepted would be forgotten by the ledger; "
                "lower the one or raise the other"
            )
        return settings

    def retention_policy(self) -> RetentionPolicy:
        """What the ledger and the event log keep (0 days: forever)."""
        return RetentionPolicy(
            ledger_window=_days(self.ledger_window_days),
            log_retention=_days(self.log_retention_days),
        )


def _days(days: float) -> timedelta | None:
    return None if days == 0 else timedelta(days=days)


def database_url_from(url: str, variable: str) -> str:
    """The PostgreSQL URL ``url`` as libpq reads it (see :func:`governance.urls.database_url`);
    a refusal names ``variable``."""
    try:
        return urls.database_url(url, variable)
    except urls.UrlError as exc:
        raise ConfigurationError(str(exc)) from None


def sqlalchemy_url(database_url: str) -> str:
    """The same database, spelled for SQLAlchemy with the psycopg 3 driver."""
    return urls.sqlalchemy_url(database_url)


def broker_url_from(url: str, variable: str) -> str:
    """The AMQP URL (or ``;``-separated failover list) ``url``, checked (see
    :func:`governance.urls.broker_url`); a refusal names ``variable``."""
    try:
        return urls.broker_url(url, variable)
    except urls.UrlError as exc:
        raise ConfigurationError(str(exc)) from None


def _queue_setting(read: Callable[[Mapping[str, str]], T], env: Mapping[str, str]) -> T:
    try:
        return read(env)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _choice(
    env: os._Environ[str] | dict[str, str], name: str, default: str, allowed: tuple[str, ...]
) -> str:
    raw = env.get(name, default)
    if raw not in allowed:
        raise ConfigurationError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw


def _port(env: os._Environ[str] | dict[str, str], name: str) -> int | None:
    """A TCP port, or None when the variable is unset or empty (the feature is off)."""
    if not env.get(name):
        return None
    port = _int(env, name, 0, minimum=1)
    if port > 65535:
        raise ConfigurationError(f"{name}={env[name]!r} must be a port (1..65535)")
    return port


def webauthn_origins_from(
    raw: str | None, variable: str = "GOVERNANCE_WEBAUTHN_ORIGINS"
) -> frozenset[str]:
    """The console origins a passkey's assertion may come from (the default when unset)."""
    if raw is None:
        return DEFAULT_ORIGINS
    try:
        origins = origins_from(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{variable}: {exc}") from None
    if not origins:
        raise ConfigurationError(f"{variable} names no origin")
    return origins


def audience_from(raw: str, variable: str = "GOVERNANCE_AUDIENCE") -> str:
    """The deployment name signed commands carry; a refusal names ``variable``."""
    if not raw or len(raw) > 128 or not raw.isprintable() or raw.strip() != raw:
        raise ConfigurationError(
            f"{variable}={raw!r} must be 1..128 printable characters without spaces around them"
        )
    return raw


def _int(env: os._Environ[str] | dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(
    env: os._Environ[str] | dict[str, str], name: str, default: float, *, zero: bool = False
) -> float:
    """A positive number (or zero, where ``zero`` says 0 means "off")."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}={raw!r} must be a finite number")
    if zero and value == 0:
        return value
    if not value > 0:
        qualifier = "zero or positive" if zero else "positive"
        raise ConfigurationError(f"{name}={raw!r} must be {qualifier}")
    return value
