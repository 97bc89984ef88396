"""The first policy the deployment ships (deploy/policy/policy.yaml, mounted into the
compose file's ``cli`` service) is one the service accepts, and decides as it says."""

from __future__ import annotations

from pathlib import Path

import yaml

from governance.policy import RequestAttributes, first_match
from governance.policy_document import parse_policy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE = DEPLOY / "policy" / "policy.yaml"


def request(risk_level: str, scope: str) -> RequestAttributes:
    return RequestAttributes(
        mutation_type="update",
        state_type="config",
        risk_level=risk_level,
        scope=scope,
        category="general",
        tags=frozenset(),
        requester_groups=frozenset(),
    )


def test_the_example_policy_is_valid() -> None:
    policy = parse_policy(EXAMPLE.read_text())

    assert [rule.id for rule in policy.rules] == [
        "critical",
        "global-reach",
        "high-risk",
        "default",
    ]


def test_the_example_policy_decides_by_risk_and_reach() -> None:
    policy = parse_policy(EXAMPLE.read_text())

    assert first_match(policy, request("critical", "single")).id == "critical"
    assert first_match(policy, request("low", "global")).id == "global-reach"
    assert first_match(policy, request("high", "module")).id == "high-risk"
    assert first_match(policy, request("low", "single")).id == "default"


def test_the_compose_files_cli_reads_the_deploy_folder() -> None:
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())

    assert "./deploy:/deploy:ro" in compose["services"]["cli"]["volumes"]
