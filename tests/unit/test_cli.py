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


# Modules of the extras, made unimportable in a child interpreter as if not installed.
EXTRAS_ONLY = ("pydantic", "pydantic_core", "rich", "cryptography", "numpy", "matplotlib")
_WITHOUT_EXTRAS = "import sys\nfor m in {mods!r}:\n    sys.modules[m] = None\n"


def _without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS.format(mods=EXTRAS_ONLY) + code],
                          capture_output=True, text=True)


def test_run_and_agent_need_no_extra() -> None:
    """The package's own dependencies are what the operator and the node agent need (the image
    installs only those): both start with every extra's module missing."""
    proc = _without_extras(
        "from stargate_operator.cli import build_parser\n"
        "build_parser('run').parse_args(['run', '--namespace', 'a'])\n"
        "build_parser('agent').parse_args(['agent', '--simulate', '--all'])\n"
        "import stargate_operator.controller.operator, stargate_operator.agent.runner\n"
        "import stargate_operator.telemetry.prometheus, stargate_operator.telemetry.overlay\n"
        "import stargate_operator.controller.discovery, stargate_operator.agent.nvml\n"
        "print('started')")
    assert proc.returncode == 0 and "started" in proc.stdout, proc.stderr


@pytest.mark.parametrize(("argv", "extra"), [(["plan", "--help"], "plan"), (["crds"], "plan"),
                                              (["demo", "--help"], "demo"), (["simulate"], "sim")])
def test_a_command_without_its_extra_says_what_to_install(argv: list[str], extra: str) -> None:
    proc = _without_extras(f"from stargate_operator.cli import main\nraise SystemExit(main({argv!r}))")
    assert proc.returncode != 0
    assert f"pip install 'stargate-operator[{extra}]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_top_level_help_works_without_the_extras() -> None:
    proc = _without_extras("from stargate_operator.cli import main\nmain(['--help'])")
    assert proc.returncode == 0, proc.stderr
    assert "(needs the 'plan' extra)" in proc.stdout and "run the operator" in proc.stdout
