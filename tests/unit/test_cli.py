"""The command line: every subcommand reachable, and `run` starting without the others' imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stargate_operator.cli import COMMANDS, build_parser


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_run_imports_neither_the_models_nor_the_demo() -> None:
    # pydantic's models (plan) and the demo cost about 0.15 s of the operator's start-up.
    mods = _imported_after("from stargate_operator.cli import build_parser\n"
                           "build_parser('run').parse_args(['run', '--namespace', 'a'])")
    assert "stargate_operator.commands.run" in mods
    assert "stargate_operator.api.load" not in mods
    assert "stargate_operator.demo.runner" not in mods
    assert "pydantic" not in mods


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_parses_with_only_its_module(command: str) -> None:
    required = {"plan": ["-f", "site.yaml"]}  # the one subcommand with a required option
    args = build_parser(command).parse_args([command, *required.get(command, [])])
    assert args.command == command
    assert args._module.__name__ == f"stargate_operator.commands.{COMMANDS[command][0]}"


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert name in out and help_text.split()[0] in out


def test_demo_help_documents_every_option() -> None:
    proc = subprocess.run([sys.executable, "-m", "stargate_operator.cli", "demo", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--curtail", "--curtail-site", "--curtail-after", "--duration", "--once", "--timeout",
                   "--no-agents", "--agent-interval", "--stale-after", "--seed", "--metrics-port",
                   "--kubeconfig-out", "--state-dir", "--samples", "--refresh", "--color"):
        assert option in proc.stdout, option
