"""A context manager that closes what it wraps: the one ``with`` protocol of the producer's
client, subscriptions and replays."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with obj:`` calls ``obj.close()`` on the way out, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
