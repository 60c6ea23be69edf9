"""hack/bench-slice-writes.py end to end on its own local control plane (a few small slices)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "hack" / "bench-slice-writes.py")


def test_every_verb_rewrites_the_slices_and_is_measured() -> None:
    res = subprocess.run([sys.executable, SCRIPT, "--slices", "4", "--entries", "20", "--rounds", "1",
                          "--json"], capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert (got["slices"], got["entries"]) == (4, 20)
    for verb in ("apply", "merge", "put"):
        assert got[f"{verb}_writes_per_s"] > 0 and got[f"{verb}_apiserver_ms"] >= 0


def test_bad_input_names_the_flag() -> None:
    for args, flag in ((["--entries", "0"], "--entries"), (["--verbs", "apply,post"], "--verbs")):
        res = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                             check=False, timeout=60)
        assert res.returncode == 2 and flag in res.stderr, res.stderr
