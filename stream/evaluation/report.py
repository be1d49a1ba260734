"""The evaluation's outputs: a short table, a plot of live lead times, JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["feed_table", "plot_leads", "table"]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.0f}%"


def _num(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: Mapping[str, Mapping[str, Any]], min_lead_s: float) -> str:
    """One line per warner, then recall per conflict kind."""
    head = (f"{'warner':<12} {'collisions':>10} {f'recall>={min_lead_s:g}s':>12} "
            f"{'recall@req':>10} {'lead p10/p50 s':>15} {'precision':>9} "
            f"{'crit/veh-h':>10} {'warn/veh-h':>10} {'safe crit':>9}")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lead = r["live_lead_s"]
        safe = r.get("safe_scenarios")
        lines.append(
            f"{name:<12} {r['eligible']:>10} {_pct(r['recall_min_lead']):>12} "
            f"{_pct(r['recall_required_lead']):>10} "
            f"{_num(lead['p10']) + '/' + _num(lead['p50']):>15} {_pct(r['precision']):>9} "
            f"{_num(r['critical_per_vehicle_hour'], '.2f'):>10} "
            f"{_num(r['warning_per_vehicle_hour'], '.2f'):>10} "
            f"{_pct(safe['critical_fraction']) if safe else '-':>9}")
    kinds = sorted({k for r in rows.values() for k in r["per_kind"]})
    if kinds:
        lines.append("")
        lines.append(f"{'recall by kind':<24} " + " ".join(f"{n:>22}" for n in rows))
        for k in kinds:
            cells = []
            for r in rows.values():
                pk = r["per_kind"].get(k)
                cells.append("-" if pk is None else
                             f"{pk['collisions']}: {_pct(pk['recall_min_lead'])} / "
                             f"{_pct(pk['recall_required_lead'])}")
            lines.append(f"{k:<24} " + " ".join(f"{c:>22}" for c in cells))
        lines.append(f"{'':<24} (collisions: recall >= {min_lead_s:g} s / at the required lead)")
    feeds = feed_table(rows)
    if feeds:
        lines += ["", feeds]
    return "\n".join(lines)


def feed_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A library's recall at the required lead and safe scenarios with a critical alert, by
    what its vehicles report (empty for traffic that is not a library)."""
    feeds = [r.get("per_feed") for r in rows.values()]
    if not any(feeds):
        return ""
    names = next(f for f in feeds if f)
    lines = [f"{'by feed':<24} " + " ".join(f"{n:>22}" for n in rows)]
    for feed in names:
        cells = []
        for f in feeds:
            c = f.get(feed) if f else None
            cells.append("-" if c is None else
                         f"{c['collisions']}: {_pct(c['recall_required_lead'])}; "
                         f"{c['safe_with_critical']}/{c['safe']}")
        lines.append(f"{feed:<24} " + " ".join(f"{c:>22}" for c in cells))
    lines.append(f"{'':<24} (collisions: recall at the required lead; "
                 "safe scenarios with a critical alert)")
    return "\n".join(lines)


def plot_leads(rows: Mapping[str, Mapping[str, Any]], path: str | Path, min_lead_s: float,
               title: str = "") -> None:
    """Cumulative share of collisions alerted with at least each live lead, per warner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, r in rows.items():
        n = r["eligible"]
        leads: Sequence[float] = r["live_leads_s"]
        if not n:
            continue
        grid = np.linspace(-1.0, 6.0, 281)
        share = [(np.asarray(leads) >= g).sum() / n for g in grid]
        ax.plot(grid, share, label=f"{name} ({n} collisions)")
    ax.axvline(min_lead_s, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("live lead time (s): alert received to contact")
    ax.set_ylabel("share of collisions alerted at least this early")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no collisions, no curve: no empty legend warning
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
