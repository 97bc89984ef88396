"""The retention settings: days, 0 for forever, and a log never kept shorter than the ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.config import ConfigurationError, Settings


def test_by_default_both_keep_thirty_days() -> None:
    policy = Settings.from_env({}).retention_policy()

    assert (policy.ledger_window, policy.log_retention) == (timedelta(days=30), timedelta(days=30))


def test_zero_days_keeps_forever() -> None:
    env = {"GOVERNANCE_LEDGER_WINDOW_DAYS": "0", "GOVERNANCE_LOG_RETENTION_DAYS": "0"}

    policy = Settings.from_env(env).retention_policy()

    assert (policy.ledger_window, policy.log_retention) == (None, None)


@pytest.mark.parametrize(
    "env",
    [
        {"GOVERNANCE_LOG_RETENTION_DAYS": "7"},
        {"GOVERNANCE_LEDGER_WINDOW_DAYS": "0"},
    ],
)
def test_a_log_kept_shorter_than_the_ledger_is_refused_naming_both(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)

    assert "GOVERNANCE_LOG_RETENTION_DAYS" in str(refused.value)
    assert "GOVERNANCE_LEDGER_WINDOW_DAYS" in str(refused.value)


def test_a_max_command_age_beyond_the_ledger_window_is_refused_naming_both() -> None:
    env = {"GOVERNANCE_LEDGER_WINDOW_DAYS": "0.00001", "GOVERNANCE_MAX_COMMAND_AGE": "2592000"}

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)

    assert "GOVERNANCE_MAX_COMMAND_AGE" in str(refused.value)
    assert "GOVERNANCE_LEDGER_WINDOW_DAYS" in str(refused.value)


def test_a_max_command_age_equal_to_the_ledger_window_is_accepted() -> None:
    env = {"GOVERNANCE_LEDGER_WINDOW_DAYS": "1", "GOVERNANCE_MAX_COMMAND_AGE": "86400"}

    assert Settings.from_env(env).max_command_age == 86_400.0


def test_a_ledger_kept_forever_takes_any_max_command_age() -> None:
    env = {
        "GOVERNANCE_LEDGER_WINDOW_DAYS": "0",
        "GOVERNANCE_LOG_RETENTION_DAYS": "0",
        "GOVERNANCE_MAX_COMMAND_AGE": "99999999",
    }

    assert Settings.from_env(env).max_command_age == 99_999_999.0
