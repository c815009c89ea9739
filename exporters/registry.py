"""Exporter registry: a dict filled from the ``railwatch.exporters`` entry points.

A third-party package adds an exporter by declaring an entry point in that
group; nothing here changes. An exporter class is built with
``cls.from_options(options, data_dir=...)`` when it defines that classmethod,
else with ``cls(**options)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from exporters.base import Exporter
from exporters.errors import ExporterConfigError

GROUP = "railwatch.exporters"


def available() -> dict[str, Any]:
    """Exporter kind -> class, loaded from entry points (a broken plug-in is skipped)."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep
    return found


def create(kind: str, options: Mapping[str, Any] | None, *, data_dir: Path) -> Exporter:
    eps = available()
    if kind not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ExporterConfigError(f"unknown exporter kind '{kind}' (known: {known})")
    try:
        cls = eps[kind].load()
    except Exception as exc:
        raise ExporterConfigError(
            f"exporter '{kind}' could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    opts = dict(options or {})
    try:
        if hasattr(cls, "from_options"):
            exporter = cls.from_options(opts, data_dir=data_dir)
        else:
            exporter = cls(**opts)
    except ExporterConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ExporterConfigError(f"invalid options for exporter '{kind}': {exc}") from exc
    return exporter  # type: ignore[no-any-return]
