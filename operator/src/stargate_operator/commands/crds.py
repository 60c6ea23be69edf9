"""Print the CustomResourceDefinitions generated from the API models, as multi-document YAML.

  stargate-operator crds | kubectl apply --server-side -f -
"""

from __future__ import annotations

import argparse

from stargate_operator.api.crdgen import render_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def main(args: argparse.Namespace) -> int:
    del args
    print("---\n".join(render_all().values()), end="")
    return 0
