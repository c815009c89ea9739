"""``railwatch traces tail|query|show`` and ``railwatch report``: reading stored traces.

Everything here reads the ClickHouse storage named by the settings (embedded chDB
in ``data_dir`` by default, which one process at a time can open). Tables go to
stdout; ``--json`` prints JSON lines instead. ``--text`` adds the stored prompt and
output text (what the privacy setting kept) below each row of a table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from typing import Any

from sidecar.errors import StartupError

__all__ = ["add_parsers"]

_COLUMNS = ["started_at", "route", "model", "status", "decision", "total_ms", "overhead_ms",
            "prompt_tokens", "completion_tokens", "error_type", "trace_id"]
# tail prints rows as they come: fixed widths, one header
_TAIL_WIDTHS = [25, 15, 24, 6, 8, 9, 11, 13, 17, 22, 32]
_TEXT_CHARS = 400  # of each text shown in a table (--json prints it whole)


def _storage(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """A ClickHouse client, its database, and the exporter's config (or defaults), through
    the same ClickHouseStore the sidecar uses (connected, not migrated: a reader)."""
    from exporters.clickhouse import ClickHouseExporter
    from exporters.errors import ExporterError
    from sidecar.settings import load_settings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.config)
    options: dict[str, Any] = {}
    for spec in settings.exporters:
        if spec.kind == "clickhouse":
            options = dict(spec.options)
            break
    exporter = ClickHouseExporter.from_options(options, data_dir=settings.data_path())
    try:
        exporter.store.open(migrate_schema=False)
    except ExporterError as exc:
        raise StartupError(str(exc)) from None
    return exporter.store.client, exporter.store.database, exporter.config


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    return str(value)


def _texts(row: dict[str, Any]) -> list[str]:
    out = []
    for key in ("prompt_text", "output_text"):
        if key in row:
            text = row[key]
            if text is None:
                shown = "(not stored)"
            else:
                shown = text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS] + "..."
                shown = shown.replace("\n", " ")
            masked = " (masked)" if row.get("text_masked") and text is not None else ""
            out.append(f"    {key.split('_')[0]}{masked}: {shown}")
    return out


def _print_json(rows: Iterable[dict[str, Any]]) -> None:
    import orjson

    for row in rows:
        sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = [[_cell(row.get(c)) for c in _COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(_COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)))
    for row, cells in zip(rows, table, strict=True):
        print("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
        for line in _texts(row):
            print(line)


def _traces(args: argparse.Namespace) -> int:
    from exporters.clickhouse import queries

    client, database, _ = _storage(args)
    if args.traces_command == "tail":
        rows = queries.tail(client, args.n, args.follow, database=database, include_text=args.text)
        try:
            if args.json:
                for row in rows:
                    _print_json([row])
                    sys.stdout.flush()
                return 0
            print("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, _TAIL_WIDTHS, strict=True)))
            for row in rows:
                cells = [_cell(row.get(c)) for c in _COLUMNS]
                print("  ".join(v.ljust(w) for v, w in zip(cells, _TAIL_WIDTHS, strict=True)))
                for line in _texts(row):
                    print(line)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        return 0
    if args.traces_command == "show":
        return _show(client, database, args)
    found = queries.query_traces(
        client, database=database, since=args.since, model=args.model, decision=args.decision,
        route=args.route, tenant=args.tenant, trace_id=args.trace_id, limit=args.limit,
        include_text=args.text,
    )
    if args.json:
        _print_json(found)
    else:
        _print_table(found)
    return 0


def _show(client: Any, database: str, args: argparse.Namespace) -> int:
    """One trace: each request's summary, decisions, attempts and findings. Exit 1
    when no request has that trace id."""
    from exporters.clickhouse import queries

    rows = queries.trace_detail(client, args.trace_id, database=database, include_text=args.text)
    if args.json:
        _print_json(rows)
        return 0 if rows else 1
    if not rows:
        print(f"no trace {args.trace_id} in {database}", file=sys.stderr)
        return 1
    for row in rows:
        model = row.get("model_served") or row.get("model") or "-"
        print(f"request {row['request_id']}  {_cell(row['started_at'])}  route {row['route']}  "
              f"model {model}  status {row['status']}  decision {row['decision']}")
        print(f"  total {_cell(row['total_ms'])} ms  overhead {_cell(row['overhead_ms'])} ms  "
              f"ttft {_cell(row.get('ttft_ms'))} ms  tokens {_cell(row.get('prompt_tokens'))}/"
              f"{_cell(row.get('completion_tokens'))} ({row.get('usage_source') or '-'})  "
              f"error {_cell(row.get('error_type'))}")
        for d in row["decisions"]:
            reasons = ", ".join(d.get("reasons") or ()) or "-"
            print(f"  decision  {d['stage']:<7} {d['action']:<9} {reasons}")
        for a in row["attempts"]:
            print(f"  attempt   {a['kind']:<9} {a['upstream']:<10} {a.get('model') or '-':<20} "
                  f"status {a['status']}  {_cell(a['duration_ms'])} ms  "
                  f"error {a.get('error') or '-'}  decision {a['decision']}")
        for f in row["findings"]:
            print(f"  finding   {f['stage']:<7} {f['detector']:<10} {f['label']:<22} "
                  f"score {f['score']:.3f}  span {f['start']}-{f['end']}  -> {f['action']}")
        if not row["findings"]:
            print("  (no findings)")
        for line in _texts(row):
            print(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from exporters.clickhouse import queries

    client, database, config = _storage(args)
    data = queries.report(client, database=database, since=args.since)
    if args.json:
        _print_json([data])
    else:
        print(queries.format_report(data, prices=bool(config.prices)))
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``traces`` (tail, query, show) and ``report`` to the ``railwatch`` parser."""
    storage_note = (" Reads the ClickHouse storage of the settings (default: embedded chDB in "
                    "data_dir, which only one process can open: stop the sidecar first, or "
                    "point the clickhouse exporter at a server).")
    traces = sub.add_parser("traces", help="read stored traces",
                            description="Read stored traces." + storage_note)
    tsub = traces.add_subparsers(dest="traces_command", metavar="ACTION")
    for name, helptext in (("tail", "the latest traces (and new ones with --follow)"),
                           ("query", "traces matching filters"),
                           ("show", "one trace: its findings, decisions and attempts")):
        t = tsub.add_parser(name, help=helptext, description=helptext + "." + storage_note)
        if name == "show":
            t.add_argument("trace_id", metavar="TRACE_ID")
        t.add_argument("--config", metavar="FILE", help="YAML settings file")
        t.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        t.add_argument("--text", action="store_true", help="include prompt and output text")
        if name == "tail":
            t.add_argument("-n", type=int, default=20, help="how many (default 20)")
            t.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
        elif name == "query":
            t.add_argument("--since", default="1h", help="e.g. 15m, 1h, 7d or an ISO time")
            t.add_argument("--model")
            t.add_argument("--decision", help="pass, flag, mask, block, ...")
            t.add_argument("--route", help="chat, text_completion, embeddings, ...")
            t.add_argument("--tenant")
            t.add_argument("--trace-id")
            t.add_argument("--limit", type=int, default=100)
        t.set_defaults(func=_traces)
    traces.set_defaults(func=_help_of(traces))

    report = sub.add_parser("report", help="a summary of traffic and guardrails",
                            description="Request volume, latency percentiles, TTFT/TPOT, "
                            "tokens, trigger rates, PII types, JSON validity." + storage_note)
    report.add_argument("--since", default="24h", help="e.g. 1h, 24h, 7d")
    report.add_argument("--config", metavar="FILE", help="YAML settings file")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=_report)


def _help_of(parser: argparse.ArgumentParser) -> Any:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show
