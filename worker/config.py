"""Settings from the environment, checked once so a bad URL fails with the variable's name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from governance.topology import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL


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
    #: Commands per transaction; 1 applies each command as its own Celery task.
    batch_size: int = 1
    #: How long a batch waits to fill before it is applied anyway.
    batch_linger_ms: float = 5.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
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
            batch_size=_int(env, "GOVERNANCE_BATCH_SIZE", 1, minimum=1),
            batch_linger_ms=_float(env, "GOVERNANCE_BATCH_LINGER_MS", 5.0),
        )


def database_url_from(url: str, variable: str) -> str:
    """A libpq-style PostgreSQL URL; SQLAlchemy's ``+psycopg`` spelling is accepted too."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.path):
        raise ConfigurationError(
            f"{variable}={url!r} is not a PostgreSQL URL "
            "(expected postgresql://user:password@host:port/database)"
        )
    return url.replace(parts.scheme + "://", "postgresql://", 1)


def sqlalchemy_url(database_url: str) -> str:
    """The same database, spelled for SQLAlchemy with the psycopg 3 driver."""
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def broker_url_from(url: str, variable: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("amqp", "amqps", "pyamqp", "memory"):
        raise ConfigurationError(
            f"{variable}={url!r} is not an AMQP URL (expected amqp://user:password@host:5672//)"
        )
    return url


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


def _float(env: os._Environ[str] | dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ConfigurationError(f"{name}={raw!r} must be positive")
    return value
