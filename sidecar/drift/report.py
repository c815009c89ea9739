"""``railwatch drift report``: the current state per model and route, events, a PNG.

:func:`build_report` reads stored window results, events and system prompts (through
:class:`DriftStore`; blocks). :func:`format_report` renders it for a terminal.
:func:`plot_png` draws each statistic's p-value over time against its threshold
(log scale: lower is stronger evidence; a red dot marks a drifted window); it needs
matplotlib (the ``report`` extra) and raises ``RuntimeError`` without it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporters.clickhouse.drift_store import DriftStore

MAX_PANELS = 24


def build_report(store: DriftStore, since: float, model: str | None = None) -> dict[str, Any]:
    history = store.window_history(since, model)
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in history:  # oldest first: the last one wins
        latest[(row["model"], row["route"], row["metric"], row["statistic"])] = row
    state: dict[str, dict[str, Any]] = {}
    for (m, route, _metric, _stat), row in sorted(latest.items()):
        entry = state.setdefault(f"{m} / {route}", {"model": m, "route": route, "metrics": [],
                                                      "drifted": []})
        entry["metrics"].append(row)
        if row["drifted"]:
            entry["drifted"].append(row["metric"])
    return {
        "since": datetime.fromtimestamp(since, UTC),
        "model": model,
        "groups": list(state.values()),
        "history": history,
        "events": store.events(since, model),
        "system_prompts": store.system_prompts(since, model),
        "baselines": {k or "*": v for k, v in store.baselines().items()},
    }


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


def format_report(data: dict[str, Any]) -> str:
    lines = [f"drift since {_when(data['since'])}" + (f" (model {data['model']})"
                                                       if data["model"] else "")]
    if data["baselines"]:
        for m, (a, b) in data["baselines"].items():
            lines.append(f"pinned baseline {m}: {_when(datetime.fromtimestamp(a, UTC))} .. "
                         f"{_when(datetime.fromtimestamp(b, UTC))}")
    if not data["groups"]:
        lines.append("no window results yet (need drift.min_window_size rows per window)")
    for g in data["groups"]:
        status = ("DRIFTED: " + ", ".join(g["drifted"])) if g["drifted"] else "no drift"
        lines.append("")
        lines.append(f"{g['model']} / {g['route']}: {status}")
        lines.append(f"  {'metric':<28} {'stat':<5} {'value':>9} {'p':>10} {'thresh':>10} "
                     f"{'n ref/cur':>11}  window end        explanation")
        for r in g["metrics"]:
            p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "-"
            mark = "*" if r["drifted"] else " "
            lines.append(f"{mark} {r['metric']:<28} {r['statistic']:<5} {r['value']:>9.4f} "
                         f"{p:>10} {r['threshold']:>10.3g} "
                         f"{str(r['n_reference']) + '/' + str(r['n_current']):>11}  "
                         f"{_when(r['window_end'])}  {r['explanation'][:100]}")
    lines.append("")
    lines.append(f"events ({len(data['events'])}):")
    for e in data["events"][:50]:
        lines.append(f"  {_when(e['ts'])}  {e['kind']:<20} {e['model']}/{e['route']} "
                     f"{e['subject']}: {e['old_value'][:24]!r} -> {e['new_value'][:24]!r} "
                     f"{e['detail'][:80]}")
    lines.append("")
    lines.append("system prompts (hash, chars, share of sampled traffic, first/last seen):")
    for s in data["system_prompts"][:30]:
        lines.append(f"  {s['model']}/{s['route']}  {s['hash'] or '(none)':<16} {s['chars']:>6} "
                     f"{100 * float(s['share']):5.1f}%  {_when(s['first_seen'])} .. "
                     f"{_when(s['last_seen'])}")
    return "\n".join(lines)


def plot_png(history: list[dict[str, Any]], path: str | Path) -> int:
    """Write the PNG; returns the number of panels drawn. Blocks; see the module doc."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--png needs matplotlib (pip install 'railwatch[report]')") from exc
    series: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in history:
        if row["p_value"] is not None:
            series[f"{row['metric']} ({row['statistic']})"][f"{row['model']}/{row['route']}"].append(row)
    names = sorted(series, key=lambda n: (not any(r["drifted"] for rows in series[n].values()
                                                   for r in rows), n))[:MAX_PANELS]
    cols = 3 if len(names) > 4 else max(1, len(names))
    rows_n = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3 * rows_n), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, rows in series[name].items():
            xs = [r["window_end"] for r in rows]
            ps = [max(float(r["p_value"]), 1e-300) for r in rows]
            ax.plot(xs, ps, marker=".", label=label)
            ax.step(xs, [r["threshold"] for r in rows], where="mid", linestyle="--",
                    color="grey", linewidth=1)
            hits = [(x, p) for x, p, r in zip(xs, ps, rows, strict=True) if r["drifted"]]
            if hits:
                ax.scatter([h[0] for h in hits], [h[1] for h in hits], color="red", zorder=3)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("p-value (dashed: threshold)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    if not names:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no window results", ha="center")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return len(names)
