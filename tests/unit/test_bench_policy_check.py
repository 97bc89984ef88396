"""The bench's satisfiability timing runs on a generated registry and policy, which the
policy reader accepts."""

from __future__ import annotations

from bench.policy_check import measure


def test_a_small_policy_check_reports_its_sizes_and_times() -> None:
    report = measure(rules=20, actors=60, groups=6, seed=3)

    assert (report["rules"], report["actors"], report["groups"]) == (20, 60, 6)
    assert report["check_seconds"] >= 0 and report["read_seconds"] >= 0
    assert 0 <= report["rules_falling_short"] <= 20
