"""`make help` lists every target of the Makefile with its description, and every command of the
console script has help text: a newcomer finds what to run without reading the sources."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stargate_operator.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _phony() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert m, "the Makefile declares its targets .PHONY"
    return m.group(1).split()


def test_make_help_lists_every_target_with_a_description() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed: apt-get install make")
    out = subprocess.run([make, "-s", "help"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    listed = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    missing = [t for t in _phony() if t not in listed]
    assert not missing, f"make help does not list {missing}: give each a '## description' on its rule line"
    empty = [t for t, text in listed.items() if not text.strip()]
    assert not empty, f"targets without a description in make help: {empty}"


def test_every_command_and_option_has_help() -> None:
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "stargate-operator")
    assert not missing, f"without help text: {missing}"
