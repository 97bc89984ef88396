"""The root ``governance`` group: where any error becomes one line with its exit code."""

from __future__ import annotations

from typing import Any

import click

from governance_cli.errors import OneLine, service_failure


class GovernanceGroup(click.Group):
    """A click group whose every error, its subcommands' included, is one line on stderr.

    A usage error keeps its exit code (2) but loses the usage text click prints before it; a
    service that cannot be reached or used exits 7 naming the setting to fix (see
    :mod:`governance_cli.errors`).
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except OneLine:
            raise
        except click.ClickException as exc:
            raise OneLine(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLine:
            raise
        except click.ClickException as exc:
            raise OneLine(exc) from exc
        except Exception as exc:
            failure = service_failure(exc, ctx)
            if failure is None:
                raise
            raise failure from exc
