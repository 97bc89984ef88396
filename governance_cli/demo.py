"""Placeholder: filled in by its issue."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's subcommands to ``cli``."""
