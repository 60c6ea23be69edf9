"""The demo's live summary, without a server: the sample site as the core plans it, drawn by rich.

The integration test (tests/integration/test_demo.py) reads the same frame from a running demo; here
the figures are known in advance, so each can be checked to the digit, and so can what a
demand-response event changes and how the frame highlights it.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from stargate_operator import kinds
from stargate_operator.api.load import load_manifests
from stargate_operator.commands.plan import with_status
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.demo.runner import CURTAIL_EVENT, CURTAIL_REASON, CURTAIL_SOURCE, grid_event
from stargate_operator.demo.summary import Glyphs, Renderer, Snapshot, Tracker

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T0 = 1000.0  # the demo's start, monotonic


def _planned(curtail: int | None = None, event: int | None = None) -> Snapshot:
    """The samples with the statuses the operator would write (optionally north-sea curtailed by its
    spec, or asked to shed `event` % by the GridEvent `demo --curtail` creates)."""
    bodies = [o.body for o in load_manifests([str(REPO / "crds" / "samples")])]
    if curtail is not None:
        for b in bodies:
            if b["kind"] == "StargateCluster" and b["metadata"]["name"] == "north-sea":
                b["spec"]["power"]["curtailment"] = {"percent": curtail, "reason": "demand response"}
    if event is not None:
        bodies.append(grid_event("stargate-north-sea", "north-sea", CURTAIL_EVENT, event,
                                 NOW.timestamp() - 60, CURTAIL_REASON, CURTAIL_SOURCE))
    items = with_status(bodies, plan_namespace(bodies, NOW, CoreSettings()))
    lists: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        lists.setdefault(kinds.plural_of(item["kind"]), []).append(item)
    return Snapshot.from_lists(lists, taken=0.0)


def _render(renderable: RenderableType, *, color: bool = False) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=color, color_system="standard" if color else None,
                      markup=False, highlight=False)
    console.print(renderable)
    return buf.getvalue()


def test_frame_shows_every_site_rack_pool_and_claim() -> None:
    snap = _planned()
    text = _render(Renderer(Glyphs(unicode=False), T0).frame(snap, Tracker(), now=T0))
    assert "\x1b[" not in text, "no escape codes without colour"
    # Per site: budget, allocated, demand and floors, as the samples' power says.
    assert re.search(r"budget 380\.0 kW\s+allocated 302\.4 kW\s+demand 302\.4 kW\s+floors 172\.0 kW", text)
    # north-sea's seawater loop binds on a warm-sea day: 232 kW allocated under a 247 kW budget.
    assert re.search(r"budget 247\.0 kW\s+allocated 232\.0 kW\s+demand 278\.4 kW\s+floors 147\.2 kW", text)
    assert "GPUs 204/208 healthy | 44 nodes, 0 reporting telemetry" in text
    # Racks by priority, highest first, with budget, demand and their nodes' GPU power limit.
    row = r"^\s+(gb200-f0\d|h200-f01)\s+(\d+)\s+(\d+/\d+)\s+([\d.]+ kW)\s+([\d.]+ kW)"
    rows = re.findall(row, text, re.M)
    assert rows == [("gb200-f01", "800", "72/72", "118.8 kW", "118.8 kW"),
                    ("gb200-f02", "400", "72/72", "88.4 kW", "118.8 kW"),
                    ("h200-f01", "100", "32/32", "24.8 kW", "40.8 kW")]
    assert re.search(r"gb200-f02\s.*\d+ W\s+capped", text), "a capped rack says so"
    # Pools with capacity, allocated and their claims, pending ones by name.
    assert re.search(r"cxl-pond\s+CXL\s+4\.4 TB\s+3\.3 TB\s+1 bound, 1 pending \(nightly-eval\)", text)
    assert "hbm-inference" in text
    bound = sum(1 for c in snap.claims if c["status"]["phase"] == "Bound")
    assert f"claims: {bound} bound, {len(snap.claims) - bound} pending" in text
    assert "recent changes" not in text


def test_a_curtailment_is_reported_once_and_highlighted() -> None:
    before, after = _planned(), _planned(curtail=20)
    tracker = Tracker()
    assert tracker.update(before, now=T0 + 10) == []  # not armed: before convergence nothing is news
    tracker.armed = True
    assert tracker.update(before, now=T0 + 20) == []
    changes = {c.label: (c.old, c.new) for c in tracker.update(after, now=T0 + 30)}
    assert changes["north-sea budget"] == ("247.0 kW", "197.6 kW")
    assert changes["north-sea curtailment"] == ("none", "20%")
    assert changes["gb200-f02 GPU power limit"][0] != changes["gb200-f02 GPU power limit"][1]
    assert not any(label.startswith("abilene") for label in changes), "the other site is untouched"
    assert tracker.update(after, now=T0 + 32) == [], "a change is reported once"

    renderer = Renderer(Glyphs(unicode=False), T0)
    line = _render(renderer.change(tracker.history[0])).strip()
    assert re.fullmatch(r"\+\s*30\.0s  north-sea \S+: \S+ -> \S+", line.replace(" kW", "kW")), line
    frame = _render(renderer.frame(after, tracker, now=T0 + 35))
    assert "budget 197.6 kW (was 247.0 kW)" in frame
    assert "CURTAILED 20% (demand response)" in frame
    assert "north-sea budget: 247.0 kW -> 197.6 kW" in frame
    # Past HIGHLIGHT_SECONDS the figure is plain again; the change stays in the list.
    later = _render(renderer.frame(after, tracker, now=T0 + 60))
    assert "(was 247.0 kW)" not in later and "north-sea budget: 247.0 kW -> 197.6 kW" in later


def test_the_demos_grid_event_is_reported_and_highlighted_with_what_it_does() -> None:
    """`demo --curtail 20` creates a GridEvent, not a patch of the site: the same budget (247 kW less
    20 %), the event named in the site's title while in effect, and its arrival as a change."""
    before, after = _planned(), _planned(event=20)
    tracker = Tracker()
    tracker.armed = True
    tracker.update(before, now=T0 + 20)
    changes = {c.label: (c.old, c.new) for c in tracker.update(after, now=T0 + 30)}
    assert changes["north-sea budget"] == ("247.0 kW", "197.6 kW")
    assert changes["north-sea grid events"] == ("none", "demo-curtail -20%")
    assert "north-sea curtailment" not in changes  # the site's spec is untouched
    frame = _render(Renderer(Glyphs(unicode=False), T0).frame(after, tracker, now=T0 + 35))
    assert "GRID EVENT demo-curtail -20%" in frame and "NOT MET" not in frame
    assert "CURTAILED" not in frame
    # the same effect as the site's own curtailment: one more event on the site
    curtailed = _planned(curtail=20)
    assert [r["status"]["power"] for r in after.racks] == [r["status"]["power"] for r in curtailed.racks]


def test_colour_and_unicode_where_the_output_has_them() -> None:
    before, after = _planned(), _planned(curtail=20)
    tracker = Tracker()
    tracker.armed = True
    tracker.update(before, now=T0)
    tracker.update(after, now=T0 + 1)
    renderer = Renderer(Glyphs(unicode=True), T0)
    plain = _render(renderer.frame(after, tracker, now=T0 + 2))
    assert "north-sea budget: 247.0 kW → 197.6 kW" in plain and "·" in plain
    coloured = _render(renderer.frame(after, tracker, now=T0 + 2), color=True)
    # The new figure in bold yellow, what it was dimmed.
    assert re.search(r"\x1b\[1;33m197\.6 kW\x1b\[0m\x1b\[2m \(was 247\.0 kW\)", coloured), coloured[:3000]
