"""hack/kind-e2e.sh on a machine with a Docker engine and kind: the image, a kind cluster, the chart,
the samples, every status written. The one test in the suite that may skip: without Docker there is
no cluster to run it on."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kind-e2e.sh"

pytestmark = pytest.mark.e2e


def _docker_engine() -> str | None:
    """None when a Docker engine and kind are usable, else why not."""
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "the Docker engine is not reachable (docker info failed)"
    return None


def test_script_is_executable_and_valid_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_kind_e2e() -> None:
    missing = _docker_engine()
    if missing:
        pytest.skip(f"kind e2e needs a Docker engine and kind: {missing}")
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "e2e: OK" in proc.stderr
