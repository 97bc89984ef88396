"""The README's commands are the ones that work: extracted from the file and run or checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def marked_blocks(marker: str) -> list[str]:
    """Every fenced code block after an ``<!-- readme:<marker> -->`` comment, in order: the
    README marks the blocks a test runs with such an (invisible) comment."""
    return [
        block.strip()
        for block in re.findall(rf"<!-- readme:{marker} -->\s*```\w*\n(.*?)```", README, re.S)
    ]


def marked_block(marker: str) -> str:
    """The first fenced code block after ``<!-- readme:<marker> -->``."""
    blocks = marked_blocks(marker)
    assert blocks, f"README has no block marked readme:{marker}"
    return blocks[0]


def commented_lines(block: str) -> list[tuple[str, str]]:
    """Each command line of a shell block, continuation lines joined, with its comment (the
    text after ``  #``, or empty)."""
    lines: list[tuple[str, str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        command, _, comment = line.partition("  #")
        command = command.strip()
        if command and not command.startswith("#"):
            lines.append((command, comment.strip()))
    return lines


def shell_lines() -> list[str]:
    """Every command line of the README's sh blocks, continuation lines joined."""
    return [
        command
        for block in re.findall(r"```sh\n(.*?)```", README, re.S)
        for command, _ in commented_lines(block)
    ]


@cache
def help_text(subcommand: tuple[str, ...]) -> str:
    done = subprocess.run(
        [str(BIN / "governance"), *subcommand, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"governance {' '.join(subcommand)} --help: {done.stderr}"
    return done.stdout


def test_the_readme_test_command_is_what_ci_runs() -> None:
    command = marked_block("test-command")
    ci_commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert ci_commands[-1] == command


@pytest.mark.system
def test_the_quick_start_command_runs_as_written(tmp_path: Path) -> None:
    # Given a newcomer's shell: a fresh virtual environment first on PATH, and no service
    # URLs (the demo must need none). Fresh, so that installing never disturbs the
    # environment the other tests run in meanwhile.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERNANCE_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # When the README's first command runs exactly as written
    done = subprocess.run(
        ["sh", "-c", marked_block("run")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Then it succeeds and the demo says every guarantee held
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "every guarantee held" in done.stdout


def subcommands(help_output: str) -> list[str]:
    """The subcommands a group's ``--help`` lists under ``Commands:`` (not its options)."""
    _, _, listing = help_output.partition("\nCommands:\n")
    return re.findall(r"^  (\S+)\s{2,}", listing, re.M)


def command_path(words: list[str]) -> tuple[str, ...]:
    """The subcommand a command line names, through nested groups (``dlq list``,
    ``actors key add``): the leading words while each one is a group's subcommand."""
    path: tuple[str, ...] = ()
    for word in words:
        if word.startswith("-"):
            break
        if word not in subcommands(help_text(path)):
            break
        path = (*path, word)
    return path


def governance_lines() -> list[str]:
    return [line for line in shell_lines() if line.startswith("governance ")]


@pytest.mark.parametrize("line", governance_lines())
def test_every_cli_example_names_real_subcommands_and_options(line: str) -> None:
    words = shlex.split(line.split(";")[0])
    subcommand = command_path(words[1:])
    text = help_text(subcommand)
    for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
        assert option in text, f"{line!r}: {option} is not an option of {subcommand}"


def test_the_readme_mentions_every_subcommand() -> None:
    for subcommand in subcommands(help_text(())):
        assert f"governance {subcommand}" in README, subcommand
