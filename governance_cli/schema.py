"""``governance schema``: print the contract's documents, or write them all to a directory.

``python -m governance_cli.schema --write contract`` regenerates the checked-in contract
without the rest of the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from governance.schema import asyncapi_document, documents, render, schema_named, schema_names

#: Exit code of a usage error, as for every ``governance`` command.
EXIT_USAGE = 2


@click.command("schema")
@click.argument("name", metavar="[TYPE]", required=False)
@click.option(
    "--write",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every document (asyncapi.json, schemas/*.json) under this directory instead.",
)
def schema(name: str | None, directory: Path | None) -> None:
    """Print the AsyncAPI document, or the JSON Schema of TYPE: a command type (submit,
    approve, ...), `command` for any command, or an event (transition.applied,
    transition.rejected)."""
    if directory is not None:
        if name is not None:
            _refuse("give TYPE or --write, not both")
        for relative, document in documents().items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(document), encoding="utf-8")
            click.echo(f"wrote {target}", err=True)
        return
    if name is None:
        click.echo(render(asyncapi_document()), nl=False)
        return
    try:
        document = schema_named(name)
    except KeyError:
        _refuse(f"unknown schema {name!r}; expected one of {', '.join(schema_names())}")
    click.echo(render(document), nl=False)


def _refuse(message: str) -> NoReturn:
    """One line on stderr and the usage exit code, as every ``governance`` error."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(EXIT_USAGE)


if __name__ == "__main__":  # pragma: no cover - the regeneration entry point
    schema()
