"""The database bounds: read from the environment, merged into the connection string."""

from __future__ import annotations

from dataclasses import replace

import pytest
from psycopg.conninfo import conninfo_to_dict

from worker import database
from worker.config import ConfigurationError, Settings

URL = "postgresql://governance:s3cr%40t@db.internal:6543/governance"

DEFAULT_OPTIONS = (
    "-c lock_timeout=5000 -c statement_timeout=15000 "
    "-c idle_in_transaction_session_timeout=15000 -c tcp_keepalives_idle=5 "
    "-c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 -c tcp_user_timeout=10000 "
    "-c plan_cache_mode=force_custom_plan"
)


def parsed(url: str, environ: dict[str, str] | None = None, **changes: object) -> dict[str, object]:
    settings = replace(Settings(database_url=url), **changes)  # type: ignore[arg-type]
    return dict(conninfo_to_dict(database.conninfo(settings, environ or {})))


def test_a_plain_url_gets_every_bound_and_keeps_its_own_parameters() -> None:
    # Given a URL with no query parameters, When the worker's connection string is built
    params = parsed(URL)
    # Then where it connects is unchanged, and every client- and server-side bound is added
    assert params == {
        "user": "governance",
        "password": "s3cr@t",
        "host": "db.internal",
        "port": "6543",
        "dbname": "governance",
        "connect_timeout": "5",
        "keepalives": "1",
        "keepalives_idle": "5",
        "keepalives_interval": "2",
        "keepalives_count": "3",
        "tcp_user_timeout": "10000",
        "options": DEFAULT_OPTIONS,
    }


def test_parameters_the_url_sets_itself_are_kept_and_its_options_come_last_so_they_win() -> None:
    # Given a URL of two hosts that already sets a session attribute, a connect timeout, a
    # keepalive setting and options of its own (one of them a statement timeout)
    url = (
        "postgresql://app@primary:5432,standby:5432/governance"
        "?target_session_attrs=read-write&connect_timeout=2&keepalives_idle=60"
        "&options=-c%20statement_timeout%3D0%20-c%20search_path%3Dgov"
    )
    # When the worker's connection string is built
    params = parsed(url)
    # Then nothing the URL says is lost or overridden
    assert params["host"] == "primary,standby"
    assert params["port"] == "5432,5432"
    assert params["target_session_attrs"] == "read-write"
    assert params["connect_timeout"] == "2"
    assert params["keepalives_idle"] == "60"
    # ...the bounds it does not set are added
    assert params["tcp_user_timeout"] == "10000"
    assert params["keepalives_count"] == "3"
    # ...and its options follow the worker's, where PostgreSQL lets the last one win
    assert params["options"] == f"{DEFAULT_OPTIONS} -c statement_timeout=0 -c search_path=gov"


def test_a_unix_socket_url_keeps_its_socket_directory() -> None:
    params = parsed("postgresql://postgres:@/postgres?host=/run/governance-pg")
    assert params["host"] == "/run/governance-pg"
    assert params["dbname"] == "postgres"
    assert params["options"] == DEFAULT_OPTIONS


def test_pgoptions_from_the_environment_is_kept_unless_the_url_has_options_of_its_own() -> None:
    environ = {"PGOPTIONS": "-c search_path=from_env"}
    assert parsed(URL, environ)["options"] == f"{DEFAULT_OPTIONS} -c search_path=from_env"
    with_options = URL + "?options=-c%20search_path%3Dfrom_url"
    assert parsed(with_options, environ)["options"] == (
        f"{DEFAULT_OPTIONS} -c search_path=from_url"
    )


def test_seconds_become_the_units_libpq_and_postgresql_read() -> None:
    params = parsed(
        URL,
        db_connect_timeout=2.5,
        db_keepalives_idle=0.2,
        db_keepalives_interval=1.5,
        db_keepalives_count=7,
        db_tcp_user_timeout=0.0004,
        db_lock_timeout=0.25,
        db_statement_timeout=0,
        db_idle_in_transaction_timeout=2,
    )
    # libpq's timeouts are whole seconds (connect_timeout at least 2), rounded up
    assert params["connect_timeout"] == "3"
    assert params["keepalives_idle"] == "1"
    assert params["keepalives_interval"] == "2"
    assert params["keepalives_count"] == "7"
    # ...a positive millisecond value never rounds down to 0, which means "off"
    assert params["tcp_user_timeout"] == "1"
    options = str(params["options"]).split(" -c ")
    assert "lock_timeout=250" in options[0]
    assert "statement_timeout=0" in options
    assert "idle_in_transaction_session_timeout=2000" in options
    assert parsed(URL, db_connect_timeout=0.5)["connect_timeout"] == "2"


def test_the_environment_sets_every_bound() -> None:
    settings = Settings.from_env(
        {
            "GOVERNANCE_DB_ACQUIRE_TIMEOUT": "1.5",
            "GOVERNANCE_DB_CONNECT_TIMEOUT": "3",
            "GOVERNANCE_DB_RECONNECT_TIMEOUT": "20",
            "GOVERNANCE_DB_LOCK_TIMEOUT": "0",
            "GOVERNANCE_DB_STATEMENT_TIMEOUT": "30",
            "GOVERNANCE_DB_IDLE_IN_TRANSACTION_TIMEOUT": "2",
            "GOVERNANCE_DB_TCP_USER_TIMEOUT": "7.5",
            "GOVERNANCE_DB_KEEPALIVES_IDLE": "10",
            "GOVERNANCE_DB_KEEPALIVES_INTERVAL": "3",
            "GOVERNANCE_DB_KEEPALIVES_COUNT": "4",
        }
    )
    assert (
        settings.db_acquire_timeout,
        settings.db_connect_timeout,
        settings.db_reconnect_timeout,
        settings.db_lock_timeout,
        settings.db_statement_timeout,
        settings.db_idle_in_transaction_timeout,
        settings.db_tcp_user_timeout,
        settings.db_keepalives_idle,
        settings.db_keepalives_interval,
        settings.db_keepalives_count,
    ) == (1.5, 3.0, 20.0, 0.0, 30.0, 2.0, 7.5, 10.0, 3.0, 4)


def test_without_the_environment_the_defaults_bound_every_wait() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.db_acquire_timeout == 5.0
    assert settings.db_connect_timeout == 5.0
    assert settings.db_lock_timeout == 5.0
    assert settings.db_statement_timeout == 15.0
    assert settings.db_idle_in_transaction_timeout == 15.0
    assert settings.db_tcp_user_timeout == 10.0


@pytest.mark.parametrize(
    ("name", "raw", "complaint"),
    [
        ("GOVERNANCE_DB_ACQUIRE_TIMEOUT", "soon", "is not a number"),
        ("GOVERNANCE_DB_ACQUIRE_TIMEOUT", "0", "must be positive"),
        ("GOVERNANCE_DB_CONNECT_TIMEOUT", "-1", "must be positive"),
        ("GOVERNANCE_DB_CONNECT_TIMEOUT", "inf", "must be a finite number"),
        ("GOVERNANCE_DB_RECONNECT_TIMEOUT", "nan", "must be a finite number"),
        ("GOVERNANCE_DB_LOCK_TIMEOUT", "-0.5", "must be zero or positive"),
        ("GOVERNANCE_DB_STATEMENT_TIMEOUT", "15s", "is not a number"),
        ("GOVERNANCE_DB_IDLE_IN_TRANSACTION_TIMEOUT", "-2", "must be zero or positive"),
        ("GOVERNANCE_DB_TCP_USER_TIMEOUT", "", "is not a number"),
        ("GOVERNANCE_DB_KEEPALIVES_IDLE", "0", "must be positive"),
        ("GOVERNANCE_DB_KEEPALIVES_INTERVAL", "x", "is not a number"),
        ("GOVERNANCE_DB_KEEPALIVES_COUNT", "2.5", "is not an integer"),
        ("GOVERNANCE_DB_KEEPALIVES_COUNT", "0", "must be at least 1"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_named(
    name: str, raw: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: raw})
    assert str(refused.value) == f"{name}={raw!r} {complaint}"


def test_the_pool_is_built_with_the_bounds() -> None:
    # Given settings pointing at a port nothing listens on (no service is needed: the pool
    # connects in the background and is closed before it matters)
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:1/none",
        pool_size=3,
        db_acquire_timeout=1.25,
        db_reconnect_timeout=7.0,
    )
    pool = database.create_pool(settings)
    try:
        # Then the acquire timeout, the reconnect window and the cheap check are the pool's
        assert pool.timeout == 1.25
        assert pool.reconnect_timeout == 7.0
        assert pool.max_size == 3
        assert pool.conninfo == database.conninfo(settings)
    finally:
        pool.close(timeout=1)


def test_the_sqlalchemy_spelling_of_the_database_url_is_accepted_and_normalised() -> None:
    settings = Settings.from_env({"GOVERNANCE_DATABASE_URL": "postgresql+psycopg://app@db/gov"})

    assert settings.database_url == "postgresql://app@db/gov"


def test_a_multi_host_database_url_is_kept_as_libpq_reads_it() -> None:
    url = "postgresql://app@h1:5432,h2:5433/gov?target_session_attrs=read-write"

    settings = Settings.from_env({"GOVERNANCE_DATABASE_URL": url})

    assert settings.database_url == url
    assert conninfo_to_dict(database.conninfo(settings, {}))["host"] == "h1,h2"


def test_a_failover_list_of_brokers_is_accepted() -> None:
    urls = "amqp://u:pw@rabbit-1:5672//;amqp://u:pw@rabbit-2:5672//"

    assert Settings.from_env({"GOVERNANCE_BROKER_URL": urls}).broker_url == urls


@pytest.mark.parametrize(
    ("name", "raw", "shown", "complaint"),
    [
        (
            "GOVERNANCE_DATABASE_URL",
            "mysql://app:pw@db/gov",
            "mysql://app:***@db/gov",
            "is not a PostgreSQL URL",
        ),
        (
            "GOVERNANCE_BROKER_URL",
            "redis://:pw@cache:6379",
            "redis://:***@cache:6379",
            "is not an AMQP URL",
        ),
    ],
)
def test_a_url_of_another_service_is_refused_naming_the_variable_without_its_password(
    name: str, raw: str, shown: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: raw})

    assert str(refused.value).startswith(f"{name}={shown!r} {complaint}")
