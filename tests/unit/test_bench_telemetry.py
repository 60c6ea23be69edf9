"""The benchmarks' telemetry mode, and the agent's scrape benchmark end to end (a small fleet)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def benchlib() -> Any:
    sys.path.insert(0, str(ROOT / "hack"))
    try:
        import benchlib

        return benchlib
    finally:
        sys.path.remove(str(ROOT / "hack"))


def test_auto_is_the_mode_the_docs_recommend(benchlib: Any) -> None:
    above = benchlib.PROMETHEUS_ABOVE_NODES
    mode = benchlib.telemetry_mode
    assert mode("auto", above) == "agents" and mode("auto", above + 1) == "prometheus"
    assert mode("agents", 100_000) == "agents" and mode("prometheus", 10) == "prometheus"
    # The size the docs' table names, so that the benchmarks and the docs do not drift apart.
    table = (ROOT / "docs" / "concepts" / "telemetry.md").read_text()
    assert f"| up to about {above:,} nodes | `none`" in table
    assert f"| {above:,} to 10,000 nodes | `prometheus` recommended" in table


def test_the_scrape_benchmark_runs() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "hack" / "bench-exposition.py"), "--nodes", "20",
                          "--requests", "200", "--connections", "4", "--rounds", "1", "--json"],
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["now_requests_per_s"] > 0 and got["now_cpu_us_per_request"] >= 0
