"""The root ``governance`` group: where any error becomes one line with its exit code."""

from __future__ import annotations

import os
import select
import sys
from typing import Any

import click

from governance_cli.errors import OneLine, service_failure

#: Interrupted with Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130
#: Standard output closed by its reader (128 + SIGPIPE), as a shell reports it.
EXIT_STDOUT_CLOSED = 141


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
        except KeyboardInterrupt:
            # Interrupted by its user (``watch`` runs until Ctrl-C): the shell's code for it,
            # not click's "Aborted!" and 1.
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            # The reader of our output is gone (``watch | head -1``): that is no service's
            # fault; end as a process killed by SIGPIPE would, saying nothing.
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_STDOUT_CLOSED) from None
        except Exception as exc:
            failure = service_failure(exc, ctx)
            if failure is None:
                raise
            raise failure from exc


def _stdout_closed() -> bool:
    """Whether standard output is a pipe (or socket) nobody reads any more: its write end
    then reports an error condition. A broken pipe to the broker leaves it writable."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's final flush of what is
    still buffered does not fail (and print) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
