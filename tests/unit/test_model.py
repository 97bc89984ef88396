"""The model's own invariants: what no approval requirement can be, however it is built."""

from __future__ import annotations

from typing import Any

import pytest

from governance.model import ApprovalRequirement


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        pytest.param({}, "exactly one of approver_id and approver_group", id="neither"),
        pytest.param(
            {"approver_id": "alice", "approver_group": "cab"},
            "exactly one of approver_id and approver_group",
            id="both",
        ),
        pytest.param(
            {"approver_id": "alice", "min_approvals": 2},
            "min_approvals must be 1 for a named approver",
            id="named-with-two-approvals",
        ),
        pytest.param(
            {"approver_group": "cab", "min_approvals": 0},
            "at least 1 for a group, got 0",
            id="group-with-no-approvals",
        ),
    ],
)
def test_a_requirement_nobody_could_decide_cannot_be_built(
    fields: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        ApprovalRequirement(approval_id="a-1", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"approver_id": "alice"}, id="named"),
        pytest.param({"approver_group": "cab"}, id="group-of-one"),
        pytest.param({"approver_group": "cab", "min_approvals": 100}, id="group-of-a-hundred"),
    ],
)
def test_a_requirement_names_an_approver_or_a_group(fields: dict[str, Any]) -> None:
    built = ApprovalRequirement(approval_id="a-1", **fields)

    assert (built.approver_id is None) != (built.approver_group is None)
    assert built.grants == ()
