"""The simulation's report: one HTML page with its plots, for a person to open in a browser.

The only module of the project that imports matplotlib (the `sim` extra). Plots, as PNG files
beside the page:
- load.png: for each policy at the most nodes it hosts, the load of the site and of the domains
  that came closest to their limit, as a share of their usable power, over the run (the breaker's
  rating is the dashed line above: 125 % of usable at 80 % derating);
- search.png: every run of the searches, nodes against the share of energy lost to capping, the
  bound, trips marked;
- capped.png: GPU power lost to capping over the run, per policy.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from stargate_operator.sim.run import RunResult
from stargate_operator.sim.simulate import Outcome

COLORS = {"static": "#1f77b4", "measured": "#d62728"}
SHOWN_DOMAINS = 5


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _closest(result: RunResult) -> list[int]:
    """The site, then the constraints whose load came closest to (or went furthest over) usable."""
    s = result.series
    assert s is not None
    usable = np.maximum(np.array(s.usable_w, dtype=np.float64), 1.0)
    peak = s.load_w.max(axis=1) / usable if s.load_w.size else np.zeros(len(s.names))
    order = [int(i) for i in np.argsort(-peak) if i != 0]
    return [0, *order[:SHOWN_DOMAINS - 1]]


def _load_plot(outcome: Outcome, path: Path) -> None:
    policies = [p for p in ("static", "measured") if p in outcome.finals]
    fig, axes = plt.subplots(len(policies), 1, figsize=(11, 3.6 * len(policies)), squeeze=False,
                             sharex=True)
    for ax, policy in zip(axes[:, 0], policies, strict=True):
        result = outcome.finals[policy]
        s = result.series
        assert s is not None
        minutes = np.arange(s.load_w.shape[1]) / 60.0
        for i in _closest(result):
            share = s.load_w[i] / max(s.usable_w[i], 1)
            label = s.names[i] + (" (site budget)" if i == 0 else "")
            ax.plot(minutes, 100 * share, linewidth=0.9, label=label)
        ax.axhline(100, color="black", linewidth=1.2, label="usable")
        ratings = [r / u for r, u in zip(s.rating_w, s.usable_w, strict=True) if r > 0 and u > 0]
        if ratings:
            ax.axhline(100 * min(ratings), color="black", linestyle="--", linewidth=1,
                       label="breaker rating")
        ax.set_ylabel("load, % of usable")
        ax.set_title(f"{policy}: {result.nodes} nodes, {len(result.trips)} trips, "
                     f"{result.energy_capped_percent:.2f} % of GPU energy capped")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("minutes")
    _save(fig, path)


def _search_plot(outcome: Outcome, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for policy, search in outcome.searches.items():
        runs = sorted(search.tried, key=lambda r: r.nodes)
        xs = [r.nodes for r in runs]
        ys = [r.energy_capped_percent for r in runs]
        ax.plot(xs, ys, marker="o", color=COLORS.get(policy), label=policy, linewidth=1)
        tripped = [r for r in runs if r.trips]
        if tripped:
            ax.scatter([r.nodes for r in tripped], [r.energy_capped_percent for r in tripped], marker="x",
                       s=80, color="black", zorder=3, label=f"{policy}: a breaker tripped")
        if search.best is not None:
            ax.axvline(search.best.nodes, color=COLORS.get(policy), linestyle=":", linewidth=1)
    ax.axhline(outcome.settings.max_capped_percent, color="gray", linestyle="--",
               label=f"bound: {outcome.settings.max_capped_percent:g} % capped")
    ax.axvline(outcome.template.nameplate_nodes, color="black", linewidth=0.8, label="nameplate")
    ax.set_xlabel("nodes under the same tree")
    ax.set_ylabel("GPU energy lost to capping, %")
    ax.set_title("The search: runs stopped early once past the bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _capped_plot(outcome: Outcome, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    for policy, result in outcome.finals.items():
        s = result.series
        assert s is not None
        minutes = np.arange(s.capped_w.size) / 60.0
        ax.plot(minutes, s.capped_w / 1000.0, color=COLORS.get(policy), linewidth=0.8,
                label=f"{policy} ({result.nodes} nodes)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("GPU power capped, kW")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def write_report(outcome: Outcome, directory: str | Path) -> Path:
    """index.html and its PNGs in `directory` (made if needed); returns the page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, str]] = []
    if outcome.finals:
        _load_plot(outcome, out / "load.png")
        plots.append(("load.png", "Load of the site and of the domains closest to their limit, as a "
                                  "share of usable power, at the most nodes each policy hosts"))
        _capped_plot(outcome, out / "capped.png")
        plots.append(("capped.png", "GPU power the limits took away, second by second"))
    _search_plot(outcome, out / "search.png")
    plots.append(("search.png", "Every run of the searches"))
    summary = outcome.summary()
    s, t = outcome.settings, outcome.template
    rows = []
    for name, p in summary["policies"].items():
        over = ", ".join(f"{k} {v} s" for k, v in p["seconds_over_usable"].items()) or "none"
        rows.append(f"<tr><td>{name}</td><td>{p['nodes']}</td><td>{p['nodes_per_mw']}</td>"
                    f"<td>{p['trips']}</td><td>{p['energy_capped_percent']}</td><td>{html.escape(over)}</td></tr>")
    kinds = outcome.rack_kinds
    mix = ", ".join(f"{k} {kinds.count(k)}" for k in ("training", "inference", "idle"))
    runs = "".join(
        f"<tr><td>{r.policy}</td><td>{r.nodes}</td>"
        f"<td>{'hosts' if r.hosts(s.max_capped_percent) else 'fails'}</td>"
        f"<td>{len(r.trips)}</td><td>{r.energy_capped_percent}</td><td>{r.seconds}</td><td>{r.plans}</td></tr>"
        for search in outcome.searches.values() for r in search.tried)
    figures = "".join(f'<figure><img src="{src}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}'
                      f"</figcaption></figure>" for src, cap in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stargate-operator simulate</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 90%; }}
.gain {{ font-size: 140%; }}
</style></head><body>
<h1>Oversubscription on measured draw: nodes hosted under the same feed</h1>
<p class="gain">measured / static = <b>{summary["gain"]}</b></p>
<table><tr><th>policy</th><th>nodes</th><th>nodes per MW of feed</th><th>trips</th>
<th>GPU energy capped, %</th><th>seconds over usable</th></tr>{"".join(rows)}</table>
<p>A policy <em>hosts</em> a number of nodes when a run of that many has no breaker trip and loses at
most {s.max_capped_percent:g} % of its GPUs' wanted energy to capping. Feed: {t.feed_w / 1e6:.3f} MW,
sized for {t.nameplate_nodes} nodes at nameplate. Runs of {s.duration_s} s from {s.start_hour:g}:00 at
1 s steps, the operator's core every {s.control_interval_s} s, limits enforced {s.enforcement_lag_s:g} s
after each plan; measured: oversubscription {s.over.percent} %, cap at {s.over.cap_at} %, uncap at
{s.over.uncap_at} %, hold {s.over.hold_s} s where the site sets none. Racks: {mix} (seed {outcome.seed}).
Breakers: thermal pickup {s.curve.pickup:g} x rating, time constant {s.curve.tau_s:.2f} s, instantaneous at
{s.curve.instantaneous:g} x rating.</p>
{figures}
<h2>Runs</h2>
<table><tr><th>policy</th><th>nodes</th><th>verdict</th><th>trips</th><th>energy capped, %</th>
<th>seconds run</th><th>plans</th></tr>{runs}</table>
</body></html>
"""
    page_path = out / "index.html"
    page_path.write_text(page)
    return page_path
