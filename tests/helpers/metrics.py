"""Reading the operator's metrics in tests: a scrape of a registry, one sample's value, promtool's
check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stargate_operator import metrics

HINT = "install Debian's prometheus package with hack/install-prometheus.sh"


def promtool() -> str:
    import shutil

    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not on PATH: {HINT}", pytrace=False)
    return path


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(objects: Iterable[Mapping[str, Any]], per_node: bool = False) -> Samples:
    text = generate_latest(metrics.make_registry(metrics.StaticSource(objects), per_node=per_node)).decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels}; have {[k for k in samples if k[0] == name]}"
    return samples[key]
