"""The one parser of each service URL, shared by the worker, the CLI and the client."""

from __future__ import annotations

import pytest

from governance.urls import UrlError, broker_url, database_url, redact, sqlalchemy_url

DB = "GOVERNANCE_DATABASE_URL"
BROKER = "GOVERNANCE_BROKER_URL"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("postgresql://app:pw@db:5432/gov", "postgresql://app:pw@db:5432/gov"),
        ("postgres://app:pw@db/gov", "postgresql://app:pw@db/gov"),
        ("postgresql+psycopg://app:pw@db:5432/gov", "postgresql://app:pw@db:5432/gov"),
        (
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
        ),
        ("postgresql:///gov?host=/run/postgresql", "postgresql:///gov?host=/run/postgresql"),
        ("postgresql://u@[::1]:5432/gov", "postgresql://u@[::1]:5432/gov"),
    ],
)
def test_every_postgresql_spelling_is_accepted_and_normalised_for_libpq(
    given: str, normalised: str
) -> None:
    assert database_url(given, DB) == normalised


def test_sqlalchemy_gets_the_psycopg_driver_spelling_of_the_same_database() -> None:
    libpq = database_url("postgres://u:pw@h1:5432,h2:5433/db", DB)

    assert sqlalchemy_url(libpq) == "postgresql+psycopg://u:pw@h1:5432,h2:5433/db"


@pytest.mark.parametrize(
    "given", ["mysql://u:pw@db/gov", "postgresql+psycopg2://db/gov", "db:5432/gov", ""]
)
def test_a_url_of_another_database_is_refused_naming_the_variable(given: str) -> None:
    with pytest.raises(UrlError) as refused:
        database_url(given, DB)

    assert str(refused.value).startswith(f"{DB}=")
    assert "is not a PostgreSQL URL: give postgresql://" in str(refused.value)


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UrlError, match="has a port that is not a number"):
        database_url("postgresql://u@db:54x2/gov", "--database-url")


@pytest.mark.parametrize(
    "given",
    [
        "amqp://guest:guest@localhost:5672//",
        "amqps://u:pw@rabbit.example:5671/prod",
        "amqp://u:pw@h1:5672//;amqp://u:pw@h2:5672//",
        "amqp://",
    ],
)
def test_amqp_urls_and_failover_lists_are_accepted_as_given(given: str) -> None:
    assert broker_url(given, BROKER) == given


def test_spaces_around_the_urls_of_a_failover_list_are_dropped() -> None:
    assert broker_url("amqp://h1// ; amqp://h2//", BROKER) == "amqp://h1//;amqp://h2//"


@pytest.mark.parametrize("given", ["redis://localhost:6379/0", "amqp://h1//;redis://h2", "h1"])
def test_a_url_of_another_broker_is_refused_naming_the_variable(given: str) -> None:
    with pytest.raises(UrlError) as refused:
        broker_url(given, BROKER)

    assert str(refused.value).startswith(f"{BROKER}=")
    assert "is not an AMQP URL" in str(refused.value)


def test_brokers_listed_with_commas_are_told_to_use_semicolons() -> None:
    with pytest.raises(UrlError, match="separate them with ';'"):
        broker_url("amqp://h1,h2//", BROKER)


def test_an_empty_broker_url_is_refused() -> None:
    with pytest.raises(UrlError, match=f"^{BROKER} is empty"):
        broker_url(" ", BROKER)


def test_no_refusal_shows_the_password() -> None:
    for parse, url in (
        (database_url, "mysql://app:s3cret@db/gov"),
        (database_url, "postgresql://app:s3cret@db:port/gov"),
        (broker_url, "redis://app:s3cret@cache:6379"),
        (broker_url, "amqp://app:s3cret@h1,h2//"),
    ):
        with pytest.raises(UrlError) as refused:
            parse(url, "SETTING")
        assert "s3cret" not in str(refused.value)
        assert "app:***@" in str(refused.value)


def test_redact_hides_the_password_of_every_url_of_a_list() -> None:
    assert redact("amqp://a:pw1@h1//;amqp://b:pw2@h2:5672//") == (
        "amqp://a:***@h1//;amqp://b:***@h2:5672//"
    )
    assert redact("postgresql://app@db/gov") == "postgresql://app@db/gov"
    assert redact("postgresql://app:p@ss@db/gov?sslmode=require") == (
        "postgresql://app:***@db/gov?sslmode=require"
    )
