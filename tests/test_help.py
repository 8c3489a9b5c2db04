"""Every command's --help reads as plain words: no `<bool>` or `<list[str]>` type noise, no
escaped markup, and a two-sided switch (`--joint/--separate`) shown as one choice."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from cli import app


def _commands(cmd, path=()):
    """(path, command) for the app, every group and every command under it."""
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_visited():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"", "recommend", "fit", "runs", "runs list", "runs import", "sweep shape", "coord-check"} <= names
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) or "cp-plan" for p, _ in COMMANDS])
def test_help_has_no_type_noise(path, cmd):
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "Usage:" in text
    assert "<bool>" not in text and "BOOLEAN" not in text
    assert not re.search(r"<list\[|list\[str\]|List\[", text), text
    assert "\\[" not in text  # rich-markup escapes shown literally
    if not path:
        return
    for param in cmd.params:
        for second in getattr(param, "secondary_opts", None) or []:
            first = [o for o in param.opts if o.startswith("--")][0]
            assert f"{first} / {second}" in text, (first, second)  # one choice, not two options


def test_short_help_of_each_command_is_a_whole_phrase():
    text = CliRunner().invoke(app, ["--help"]).output
    for line in text.split("Commands:")[1].splitlines():
        # a short help cut at an abbreviation ("Dey et al.") ends in a bare period
        assert not re.search(r"\b(al|e\.g|i\.e)\.$", line.strip()), line
