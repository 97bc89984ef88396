"""The client's builders refuse what a command may not carry with ``InvalidCommand`` naming
the field, before anything is sent: an instant out of range is no ``OverflowError``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from governance.commands import InvalidCommand, MoveToPendingArgs, SubmitArgs
from producer.client import GovernanceClient

EAST = timezone(timedelta(hours=14))
WEST = timezone(timedelta(hours=-14))
#: Aware instants that are not even representable in UTC, and the edges just outside the range.
OUT_OF_RANGE = [
    pytest.param(datetime(1, 1, 1, tzinfo=EAST), id="before-year-1-in-utc"),
    pytest.param(datetime(9999, 12, 31, 23, tzinfo=WEST), id="after-year-9999-in-utc"),
    pytest.param(datetime.max.replace(tzinfo=UTC), id="datetime-max"),
    pytest.param(datetime.min.replace(tzinfo=UTC), id="datetime-min"),
]


@pytest.fixture
def client() -> Iterator[GovernanceClient]:
    # Building connects to nothing: the broker is only reached by a send.
    with GovernanceClient("memory://") as governance:
        yield governance


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_move_to_pending_refuses_an_expiry_out_of_range_naming_the_field(
    client: GovernanceClient, moment: datetime
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        client.move_to_pending(
            "req-1", expected_revision=1, actor="a", pending_reason="approval", expires_at=moment
        )

    assert caught.value.field == "args.expires_at"
    assert "expected a timestamp between 0001-01-02 and 9999-12-30 UTC" in caught.value.message


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_submit_refuses_an_expiry_out_of_range_naming_the_field(
    client: GovernanceClient, moment: datetime
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        client.submit(
            "req-1",
            state_id="s",
            state_type="config",
            mutation_type="update",
            intent={"operation_name": "x"},
            actor="a",
            pending_reason="quota",
            expires_at=moment,
        )

    assert caught.value.field == "args.expires_at"


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_build_refuses_an_issued_at_out_of_range_naming_the_field(
    client: GovernanceClient, moment: datetime
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        client.build("cancel", "req-1", actor="a", expected_revision=1, issued_at=moment)

    assert caught.value.field == "issued_at"


def test_an_expiry_in_any_zone_inside_the_range_is_kept_as_the_same_instant(
    client: GovernanceClient,
) -> None:
    moment = datetime(9999, 12, 30, 9, 59, tzinfo=WEST)

    pending = client.move_to_pending(
        "req-1", expected_revision=1, actor="a", pending_reason="approval", expires_at=moment
    )
    submitted = client.submit(
        "req-1",
        state_id="s",
        state_type="config",
        mutation_type="update",
        intent={"operation_name": "x"},
        actor="a",
        pending_reason="quota",
        expires_at=moment,
    )

    assert isinstance(pending.args, MoveToPendingArgs)
    assert isinstance(submitted.args, SubmitArgs)
    assert pending.args.expires_at == submitted.args.expires_at == moment
