"""Server-side charts as inline SVG: no script, no external asset, safe under the page's CSP.

:func:`line_chart` draws long-format rows ``(time, series, value)`` as one polyline per
series with a legend and the value range; a series with one point is drawn as a dot.
Every text that reaches the SVG is escaped. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from sidecar.timestamps import epoch_seconds

PALETTE = ("#2f6fdf", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#1098ad", "#c2255c",
           "#5c940d", "#495057", "#f59f00")
MAX_SERIES = len(PALETTE)


def format_number(value: float, unit: str = "") -> str:
    """A short human reading of ``value`` in a Grafana unit (``ms``, ``percentunit``...)."""
    if math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    suffix = {"ms": " ms", "s": " s", "currencyUSD": " $"}.get(unit, "")
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        text = f"{value / 1_000_000:.1f}M"
    elif magnitude >= 10_000:
        text = f"{value / 1000:.1f}k"
    elif magnitude >= 100 or value == int(value):
        text = f"{value:.0f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return text + suffix


def group_series(rows: Sequence[Sequence[Any]]) -> dict[str, list[tuple[float, float]]]:
    """``{series: [(epoch s, value), ...]}`` from ``(time, series, value)`` rows, sorted by
    time; non-finite values are dropped; at most :data:`MAX_SERIES` series (the largest)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for time_value, name, value in rows:
        number = float(value) if value is not None else math.nan
        if math.isfinite(number):
            series.setdefault(str(name), []).append((epoch_seconds(time_value), number))
    ranked = sorted(series.items(), key=lambda kv: -sum(v for _, v in kv[1]))[:MAX_SERIES]
    return {name: sorted(points) for name, points in sorted(ranked)}


def line_chart(rows: Sequence[Sequence[Any]], *, unit: str = "", width: int = 560,
               height: int = 170, title: str = "") -> Markup:
    """An SVG line chart of ``(time, series, value)`` rows; a "no data" box when empty."""
    series = group_series(rows)
    label = escape(title)
    if not series:
        return Markup(
            f'<svg class="chart empty" role="img" aria-label="{label}: no data" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><text x="{width // 2}" '
            f'y="{height // 2}" text-anchor="middle" fill="#868e96">no data</text></svg>')
    left, right, top, bottom = 56, 8, 8, 40
    points = [p for pts in series.values() for p in pts]
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    lo, hi = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    if hi <= lo:
        hi = lo + 1.0
    span_t = (t1 - t0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(t: float, v: float) -> tuple[float, float]:
        x = left + (plot_w / 2 if t1 == t0 else (t - t0) / span_t * plot_w)
        return x, top + plot_h - (v - lo) / (hi - lo) * plot_h

    parts = [
        f'<svg class="chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f8f9fa" '
        'stroke="#dee2e6"/>',
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="10">'
        f'{escape(format_number(hi, unit))}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="10">'
        f'{escape(format_number(lo, unit))}</text>',
        f'<text x="{left}" y="{top + plot_h + 12}" font-size="10">'
        f'{escape(datetime.fromtimestamp(t0, UTC).strftime("%H:%M UTC"))}</text>',
        f'<text x="{left + plot_w}" y="{top + plot_h + 12}" text-anchor="end" font-size="10">'
        f'{escape(datetime.fromtimestamp(t1, UTC).strftime("%H:%M UTC"))}</text>',
    ]
    legend_x = left
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = [xy(t, v) for t, v in pts]
        if len(coords) == 1:
            x, y = coords[0]
            parts.append(f'<circle class="series" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
        else:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" '
                         f'stroke-width="2" points="{path}"/>')
        text = f"{name} {format_number(pts[-1][1], unit)}"
        parts.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" '
                     f'fill="{color}"/><text x="{legend_x + 13}" y="{height - 5}" '
                     f'font-size="11">{escape(text)}</text>')
        legend_x += 22 + 6 * len(text)
    parts.append("</svg>")
    return Markup("".join(parts))
