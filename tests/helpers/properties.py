"""Random sites (hypothesis) for the core's property tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from helpers.core_objects import NOW, claim, cluster, node, pool, rack, ts

# Moderate counts: the unit suite runs on a small shared machine.
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PRIORITIES = (0, 100, 500, 1000)


@st.composite
def sites(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One or two sites with racks, nodes, pools and claims; some references dangle."""
    objs: list[dict[str, Any]] = []
    clusters = draw(st.lists(st.sampled_from(["s1", "s2"]), min_size=1, max_size=2, unique=True))
    for name in clusters:
        curtail = draw(st.none() | st.integers(0, 100))
        objs.append(cluster(name, it=draw(st.integers(1, 60_000)), reserve=draw(st.integers(0, 50)),
                            curtail=curtail, pue=draw(st.sampled_from([1.0, 1.15, 1.3])),
                            intensity=draw(st.none() | st.just(380.0))))
    rack_names = [f"r{i}" for i in range(draw(st.integers(0, 6)))]
    for r in rack_names:
        objs.append(rack(r, cluster_ref=draw(st.sampled_from([*clusters, "gone"])),
                         max_w=draw(st.integers(100, 30_000)), priority=draw(st.sampled_from(PRIORITIES))))
    for i in range(draw(st.integers(0, 20))):
        min_w = draw(st.integers(1, 300))
        telemetry = draw(st.none() | st.fixed_dictionaries({
            "powerWatts": st.integers(0, 8000),
            "healthyGPUs": st.integers(-1, 20),
            "observedAt": st.sampled_from([ts(NOW - timedelta(seconds=s)) for s in (0, 60, 119, 120, 600, -30,
                                                                                   -3600)] + ["garbage"]),
        }))
        objs.append(node(
            f"n{i}", draw(st.sampled_from([*rack_names, "missing"])), count=draw(st.integers(1, 8)),
            min_w=min_w, max_w=min_w + draw(st.integers(0, 700)),
            req=draw(st.none() | st.integers(1, 1200)), base=draw(st.integers(0, 2000)),
            mem=draw(st.integers(1, 100)), host=draw(st.integers(0, 500)),
            maintenance=draw(st.booleans()), telemetry=telemetry,
        ))
    pool_names = [f"p{i}" for i in range(draw(st.integers(0, 3)))]
    for p in pool_names:
        tier = draw(st.sampled_from(["HBM", "DRAM", "CXL"]))
        objs.append(pool(p, cluster_ref=draw(st.sampled_from([*clusters, "gone"])), tier=tier,
                         capacity=draw(st.none() | st.integers(1, 3000)),
                         rack_ref=draw(st.none() | st.sampled_from([*rack_names, "gone"])),
                         share=draw(st.integers(1, 100))))
    for i in range(draw(st.integers(0, 12))):
        objs.append(claim(f"c{i}", draw(st.sampled_from([*pool_names, "gone"])), draw(st.integers(1, 900)),
                          priority=draw(st.integers(0, 3)), age_s=draw(st.integers(0, 3)),
                          bound=draw(st.booleans())))
    return objs


def with_versions(objs: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The objects as the API server serves them: with a uid and a resourceVersion."""
    return [{**o, "metadata": {**o["metadata"], "resourceVersion": tag}} for o in objs]
