"""`stargate-operator`: one console script, one module per subcommand under commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from stargate_operator import __version__

# name -> (module under stargate_operator.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the operator against the current kubeconfig (in-cluster when deployed)"),
    "plan": ("plan", "compute every status from YAML manifests, no cluster needed"),
    "demo": ("demo", "local control plane, operator, simulated site and a live summary"),
    "agent": ("agent", "the node agent: GPU telemetry in, power limits out"),
    "crds": ("crds", "print the generated CustomResourceDefinitions"),
    "simulate": ("simulate", "trace-driven oversubscription: nodes hosted per policy, no cluster needed"),
}
# The extra each command needs beyond the package's own dependencies (which are what `run` and
# `agent` need), and the third-party modules that come only with an extra.
EXTRAS = {"plan": "plan", "crds": "plan", "demo": "demo", "simulate": "sim"}
OPTIONAL_MODULES = frozenset({"pydantic", "pydantic_core", "rich", "cryptography", "numpy", "matplotlib"})


def missing_extra(command: str, error: ModuleNotFoundError) -> str | None:
    """What to install, when `error` is a module of an extra that `command` needs; None otherwise."""
    top = (error.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    extra = EXTRAS.get(command, "demo")
    return (f"stargate-operator {command} needs {top}, which comes with the {extra!r} extra: "
            f"pip install 'stargate-operator[{extra}]'")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, that subcommand's module alone is imported (the others
    get their one-line help): `run` then starts without loading pydantic's models or the demo,
    about 0.15 s of the operator's start-up."""
    parser = argparse.ArgumentParser(
        prog="stargate-operator",
        description="Control plane of an AI data centre: capacity, power budgets, memory pools, metrics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(f"stargate_operator.commands.{module}")
        except ModuleNotFoundError as e:
            hint = missing_extra(name, e)
            if hint is None:
                raise
            if only is not None:
                raise SystemExit(hint) from None
            sub.add_parser(name, help=f"{help_text} (needs the {EXTRAS.get(name, 'demo')!r} extra)")
            continue
        p = sub.add_parser(name, help=help_text, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        code: int = args._module.main(args)
    except BrokenPipeError:
        # The reader went away (`plan ... | head`): not our error. Point stdout at /dev/null so
        # that the interpreter's final flush does not raise again, and exit as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
