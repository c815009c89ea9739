"""``railwatch drift run|baseline|report``: the drift command group.

Hooked into :mod:`sidecar.cli` with one call to :func:`register`, which receives the
CLI's storage opener (``storage(args) -> (client, database, ...)``), so these commands read
the same ClickHouse the settings name. ``run`` is what a Kubernetes CronJob runs when
``drift.run_in_sidecar`` is off. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

Storage = Callable[[argparse.Namespace], tuple[Any, ...]]  # (client, database, ...)


def _store(args: argparse.Namespace, storage: Storage) -> Any:
    from exporters.clickhouse.drift_store import DriftStore
    from exporters.clickhouse.migrations import migrate

    client, database = storage(args)[:2]
    migrate(client, database)  # idempotent: a CronJob may run before any sidecar did
    return DriftStore.for_client(client, database)


def _time(value: str) -> float:
    from exporters.clickhouse.queries import parse_since

    parsed = parse_since(value)
    assert parsed is not None
    return parsed


def _run(args: argparse.Namespace, storage: Storage) -> int:
    import dataclasses

    import orjson

    from sidecar.drift.analysis import Windows, current_windows
    from sidecar.drift.assembly import pod_name
    from sidecar.drift.service import run_job
    from sidecar.drift.state import DriftState
    from sidecar.settings import load_settings

    settings = load_settings(args.config)
    store = _store(args, storage)
    cfg = settings.drift
    windows: Windows = current_windows(_time(args.at) if args.at else _now(), cfg.window_s)
    ch = next((e.options for e in settings.exporters if e.kind == "clickhouse"), {})
    store_text = settings.privacy.capture != "none" and bool(ch.get("store_text", True))
    results = run_job(store, cfg, DriftState(), pod=pod_name(settings), store_text=store_text,
                      windows=windows)
    if args.json:
        for r in results:
            sys.stdout.write(orjson.dumps(dataclasses.asdict(r)).decode() + "\n")
        return 0
    drifted = [r for r in results if r.drifted]
    print(f"{len(results)} tests over {len({(r.model, r.route) for r in results})} model/route "
          f"groups; {len(drifted)} drifted")
    for r in drifted:
        print(f"  {r.model}/{r.route} {r.metric} {r.statistic}={r.value:.4g} p={r.p_value:.3g} "
              f"{r.explanation}")
    return 0


def _now() -> float:
    import time

    return time.time()


def _baseline(args: argparse.Namespace, storage: Storage) -> int:
    store = _store(args, storage)
    if args.clear:
        store.clear_baseline(args.model or "")
        print(f"baseline cleared for {args.model or 'every model'}: window against window again")
        return 0
    if not args.from_ or not args.to:
        print("railwatch: drift baseline needs --from and --to (or --clear)", file=sys.stderr)
        return 2
    start, end = _time(args.from_), _time(args.to)
    if end <= start:
        print("railwatch: --to must be after --from", file=sys.stderr)
        return 2
    store.set_baseline(start, end, args.model or "")
    print(f"baseline pinned for {args.model or 'every model'}")
    return 0


def _report(args: argparse.Namespace, storage: Storage) -> int:
    import orjson

    from sidecar.drift.report import build_report, format_report, plot_png

    store = _store(args, storage)
    data = build_report(store, _time(args.since), args.model)
    if args.png:
        try:
            panels = plot_png(data["history"], args.png)
        except RuntimeError as exc:
            print(f"railwatch: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.png} ({panels} panels)", file=sys.stderr)
    if args.json:
        data.pop("history")
        sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")
    else:
        print(format_report(data))
    return 0


def _guarded(fn: Callable[[argparse.Namespace, Storage], int],
             storage: Storage) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        try:
            return fn(args, storage)
        except ValueError as exc:  # a bad --since/--from/--to
            print(f"railwatch: {exc}", file=sys.stderr)
            return 2

    return call


def register(sub: Any, storage: Storage) -> None:
    """Add ``drift`` to the CLI's subparsers (``sub``)."""
    note = (" Reads the ClickHouse storage of the settings (embedded chDB: stop the sidecar "
            "first, or use a server).")
    drift = sub.add_parser("drift", help="prompt and model drift",
                           description="Prompt and model drift." + note)
    dsub = drift.add_subparsers(dest="drift_command", metavar="ACTION")

    run = dsub.add_parser("run", help="compute the last complete window (a CronJob)",
                          description="Compare the last complete window with its reference "
                          "for every model and route, over every pod's rows." + note)
    run.add_argument("--at", help="as if now were this time (ISO-8601 or 2h = two hours ago)")
    run.add_argument("--json", action="store_true")

    base = dsub.add_parser("baseline", help="pin (or clear) the reference window",
                           description="Pin [--from, --to) as the reference window." + note)
    base.add_argument("--from", dest="from_", metavar="T", help="ISO-8601 time or 7d (ago)")
    base.add_argument("--to", metavar="T")
    base.add_argument("--model", help="only this model (default: every model)")
    base.add_argument("--clear", action="store_true", help="back to window against window")

    rep = dsub.add_parser("report", help="the drift state, events and system prompts",
                          description="Current drift state per model and route, events, "
                          "system prompts; --png draws each statistic over time." + note)
    rep.add_argument("--since", default="7d", help="e.g. 1h, 24h, 7d (default 7d)")
    rep.add_argument("--model")
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--png", metavar="FILE", help="write a PNG of each statistic over time")

    for parser, fn in ((run, _run), (base, _baseline), (rep, _report)):
        parser.add_argument("--config", metavar="FILE", help="YAML settings file")
        parser.set_defaults(func=_guarded(fn, storage))

    def show(_args: argparse.Namespace) -> int:
        drift.print_help()
        return 2

    drift.set_defaults(func=show)
