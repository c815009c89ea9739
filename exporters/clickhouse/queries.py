"""Read API over the trace tables, for ``railwatch traces tail|query`` and ``railwatch report``.

Every function takes a clickhouse-connect client (see :func:`exporters.clickhouse.connect`)
and the database name, blocks on the query, and returns plain dicts. Timestamps
come back as timezone-aware UTC ``datetime`` values; latencies in milliseconds.
Driver errors (``clickhouse_connect.driver.exceptions.ClickHouseError``) propagate.

Reads use the raw tables without ``FINAL``: the writer's insert deduplication
keeps each request's row unique, so ``FINAL`` would only cost time. The report
reads the per-minute aggregate tables, so it stays fast over long windows, at
minute granularity (``since`` is rounded down to its minute).

Embedded chDB cannot be opened by a second process: a CLI beside a running sidecar
gets :class:`exporters.errors.StorageLockedError` from ``connect`` and needs the
sidecar to use a ClickHouse server instead.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from exporters.clickhouse.migrations import QUANTILES
from sidecar.semconv import ATTR_REQUEST_RESPONSE_FORMAT as _RESPONSE_FORMAT_KEY
from sidecar.timestamps import epoch_seconds

Since = datetime | timedelta | float | int | str | None

SUMMARY_COLUMNS: tuple[str, ...] = (
    "started_at", "request_id", "trace_id", "route", "model", "tenant", "status", "decision",
    "stream", "total_ms", "overhead_ms", "ttft_ms", "tpot_ms", "prompt_tokens",
    "completion_tokens", "cost_usd", "finding_count", "detectors", "retries", "error_type",
    "handoff_id",
)
TEXT_COLUMNS: tuple[str, ...] = ("prompt_text", "output_text", "text_masked")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: Since, *, now: float | None = None) -> float | None:
    """Epoch seconds for ``since``: a datetime (naive = UTC), a timedelta or a
    duration string (``"15m"``, ``"2h"``, ``"7d"``) meaning that long ago, or epoch
    seconds. ``None`` stays ``None``. Raises ``ValueError`` for anything else."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, datetime):
        return epoch_seconds(value)
    if isinstance(value, timedelta):
        return now - value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return parse_since(datetime.fromisoformat(value), now=now)
    except ValueError:
        raise ValueError(
            f"not a time: {value!r} (use 15m, 2h, 7d or an ISO-8601 timestamp)"
        ) from None


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _num(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters or {})
    names = result.column_names
    return [
        {name: _num(_utc(value)) for name, value in zip(names, row, strict=True)}
        for row in result.result_rows
    ]


def _db(database: str) -> str:
    """``database`` if it is a plain identifier (it is spliced into SQL), else ValueError."""
    if not _IDENT.match(database):
        raise ValueError(f"not a database name: {database!r}")
    return database


def _select(include_text: bool) -> str:
    cols = SUMMARY_COLUMNS + (TEXT_COLUMNS if include_text else ())
    return ", ".join(f"`{c}`" for c in cols)


def query_traces(
    client: Client,
    *,
    database: str = "railwatch",
    since: Since = None,
    until: Since = None,
    model: str | None = None,
    decision: str | None = None,
    route: str | None = None,
    tenant: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
    limit: int = 100,
    include_text: bool = False,
) -> list[dict[str, Any]]:
    """Traces matching every given filter, newest first, at most ``limit``.

    ``model`` matches the served or the requested model. Text columns only with
    ``include_text`` (they hold what the privacy setting stored).
    """
    database = _db(database)
    where: list[str] = []
    params: dict[str, Any] = {"limit": max(0, int(limit))}
    since_s, until_s = parse_since(since), parse_since(until)
    if since_s is not None:
        where.append("started_at >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
        params["since"] = int(since_s * 1_000_000)
    if until_s is not None:
        where.append("started_at < fromUnixTimestamp64Micro({until:Int64}, 'UTC')")
        params["until"] = int(until_s * 1_000_000)
    for column, value in (("decision", decision), ("route", route), ("tenant", tenant),
                          ("request_id", request_id), ("trace_id", trace_id)):
        if value is not None:
            where.append(f"{column} = {{{column}:String}}")
            params[column] = value
    if model is not None:
        where.append("(model = {model:String} OR model_requested = {model:String})")
        params["model"] = model
    sql = f"SELECT {_select(include_text)} FROM {database}.traces"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC, request_id LIMIT {limit:UInt64}"
    return _rows(client, sql, params)


_DETAIL_COLUMNS: tuple[str, ...] = (
    "model_requested", "model_served", "upstream", "finish_reasons", "usage_source",
    "upstream_ms", "client_disconnected", "decisions", "attempts", "attributes",
)


def trace_detail(
    client: Client, trace_id: str, *, database: str = "railwatch", include_text: bool = False
) -> list[dict[str, Any]]:
    """Every request of one trace (oldest first): the summary columns, decisions,
    attempts, attributes, and ``findings`` (a list per request, in order)."""
    database = _db(database)
    cols = _select(include_text) + ", " + ", ".join(f"`{c}`" for c in _DETAIL_COLUMNS)
    rows = _rows(
        client,
        f"SELECT {cols} FROM {database}.traces WHERE trace_id = {{t:String}} "
        "ORDER BY started_at, request_id LIMIT 100",
        {"t": trace_id},
    )
    if not rows:
        return []
    findings = _rows(
        client,
        f"SELECT request_id, stage, detector, label, score, `start`, `end`, action, latency_ms "
        f"FROM {database}.findings WHERE trace_id = {{t:String}} ORDER BY request_id, idx",
        {"t": trace_id},
    )
    for row in rows:
        row["findings"] = [
            {k: v for k, v in f.items() if k != "request_id"}
            for f in findings if f["request_id"] == row["request_id"]
        ]
        row["decisions"] = [_named(d, ("stage", "action", "reasons"))
                            for d in row.get("decisions") or ()]
        row["attempts"] = [
            _named(a, ("kind", "upstream", "model", "offset_ms", "duration_ms", "status",
                       "error", "decision"))
            for a in row.get("attempts") or ()
        ]
    return rows


def _named(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A ClickHouse named tuple (a tuple, or a dict with some client settings) as a dict."""
    if isinstance(value, dict):
        return dict(value)
    return dict(zip(names, value, strict=False))


def tail(
    client: Client,
    n: int = 20,
    follow: bool = False,
    *,
    database: str = "railwatch",
    poll_s: float = 1.0,
    include_text: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """The last ``n`` traces to arrive, oldest first; with ``follow``, then every new one.

    "Arrive" is by ``inserted_at`` (set by the server when the row's batch was
    written), so rows replayed late from a spill log show up too, with their
    original ``started_at``. Following polls every ``poll_s`` seconds until
    ``stop`` is set (or the consumer stops iterating).
    """
    database = _db(database)
    cols = _select(include_text)
    rows = _rows(
        client,
        f"SELECT {cols}, toUnixTimestamp64Micro(inserted_at) AS _arrived FROM {database}.traces "
        "ORDER BY inserted_at DESC, started_at DESC, request_id DESC LIMIT {n:UInt64}",
        {"n": max(0, int(n))},
    )
    rows.reverse()
    last = max((int(r["_arrived"]) for r in rows), default=0)
    for row in rows:
        yield _without_arrival(row)
    if not follow:
        return
    if not rows:
        last = int(
            client.query("SELECT toUnixTimestamp64Micro(now64(6))").result_rows[0][0]
        )
    while stop is None or not stop.is_set():
        if stop is not None:
            stop.wait(poll_s)
            if stop.is_set():
                return
        else:
            time.sleep(poll_s)
        # one insert gets one inserted_at, so "strictly after" never splits a batch
        new = _rows(
            client,
            f"SELECT {cols}, toUnixTimestamp64Micro(inserted_at) AS _arrived "
            f"FROM {database}.traces WHERE inserted_at > fromUnixTimestamp64Micro({{v:Int64}}, 'UTC') "
            "ORDER BY inserted_at, started_at, request_id",
            {"v": last},
        )
        for row in new:
            last = max(last, int(row["_arrived"]))
            yield _without_arrival(row)


def _without_arrival(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("_arrived", None)
    return row


def _window(since: Since, until: Since) -> tuple[dict[str, Any], str]:
    since_s = parse_since(since if since is not None else timedelta(hours=1))
    until_s = parse_since(until) if until is not None else time.time() + 60
    assert since_s is not None and until_s is not None
    params = {"since": int(since_s), "until": int(until_s)}
    where = ("minute >= toStartOfMinute(toDateTime({since:Int64}, 'UTC')) "
             "AND minute < toDateTime({until:Int64}, 'UTC')")
    return params, where


def _quantiles(values: Sequence[float] | None) -> dict[str, float | None]:
    values = values or [math.nan] * len(QUANTILES)
    return {
        f"p{round(q * 100)}": (None if math.isnan(v) else round(float(v), 3))
        for q, v in zip(QUANTILES, values, strict=True)
    }


def report(
    client: Client,
    *,
    database: str = "railwatch",
    since: Since = None,
    until: Since = None,
    top: int = 10,
) -> dict[str, Any]:
    """Summary of a window (default: the last hour) from the per-minute aggregates.

    Keys: ``since``/``until`` (datetimes), ``requests``, ``errors``, ``error_rate``,
    ``streams``, ``retries``, ``tokens`` (prompt/completion/total), ``cost_usd``,
    ``latency_ms`` (total/upstream/overhead/ttft/tpot -> p50/p90/p99),
    ``decisions`` (decision -> requests), ``routes`` (per route and model),
    ``detectors`` (per detector: findings, requests, rate = share of all requests),
    ``actions`` (per detector and action), ``pii_types`` (findings of detector
    ``pii`` by label), ``format`` (findings of detector ``format``: requests with
    one, ``json_requests`` (answers to requests whose ``response_format`` asked for
    JSON), ``json_invalid`` (those with a ``json_*`` finding), ``valid_rate`` = 1 -
    their share of ``json_requests`` (None without such requests), and labels),
    ``detector_latency_ms`` (per detector, most runs first: ``runs``, ``errors``,
    ``timeouts``, ``error_rate`` and ``latency_ms`` p50/p90/p99 of the caller's wait,
    failed runs included; empty on a database migrated before schema v4).
    """
    database = _db(database)
    params, where = _window(since, until)
    q = ", ".join(str(x) for x in QUANTILES)
    lat = ("total", "upstream", "overhead", "ttft", "tpot")
    lat_sql = ", ".join(f"quantilesTDigestMerge({q})({n}_ms_q) AS {n}" for n in lat)
    head = client.query(
        f"SELECT sum(requests), sum(errors), sum(streams), sum(retries), sum(with_findings), "
        f"sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), {lat_sql} "
        f"FROM {database}.traces_1m WHERE {where}",
        parameters=params,
    ).result_rows[0]
    requests = int(head[0] or 0)
    out: dict[str, Any] = {
        "since": datetime.fromtimestamp(params["since"], UTC),
        "until": datetime.fromtimestamp(params["until"], UTC),
        "requests": requests,
        "errors": int(head[1] or 0),
        "error_rate": (int(head[1] or 0) / requests) if requests else None,
        "streams": int(head[2] or 0),
        "retries": int(head[3] or 0),
        "with_findings": int(head[4] or 0),
        "tokens": {
            "prompt": int(head[5] or 0),
            "completion": int(head[6] or 0),
            "total": int(head[5] or 0) + int(head[6] or 0),
        },
        "cost_usd": float(head[7] or 0.0),
        "latency_ms": {n: _quantiles(v) for n, v in zip(lat, head[8:], strict=True)},
    }
    out["decisions"] = {
        str(r["decision"]): int(r["requests"])
        for r in _rows(client, f"SELECT decision, sum(requests) AS requests FROM "
                       f"{database}.traces_1m WHERE {where} GROUP BY decision "
                       "ORDER BY requests DESC", params)
    }
    routes = _rows(
        client,
        f"SELECT route, model, sum(requests) AS requests, sum(errors) AS errors, "
        f"quantilesTDigestMerge({q})(total_ms_q) AS total, "
        f"quantilesTDigestMerge({q})(overhead_ms_q) AS overhead "
        f"FROM {database}.traces_1m WHERE {where} GROUP BY route, model "
        "ORDER BY requests DESC LIMIT {top:UInt32}",
        {**params, "top": top},
    )
    out["routes"] = [
        {"route": r["route"], "model": r["model"], "requests": int(r["requests"]),
         "errors": int(r["errors"]), "total_ms": _quantiles(r["total"]),
         "overhead_ms": _quantiles(r["overhead"])}
        for r in routes
    ]

    def rate(n: int) -> float | None:
        return n / requests if requests else None

    detectors = _rows(
        client,
        f"SELECT detector, sum(findings) AS findings, uniqMerge(requests) AS requests "
        f"FROM {database}.findings_1m WHERE {where} GROUP BY detector ORDER BY requests DESC",
        params,
    )
    out["detectors"] = [
        {"detector": r["detector"], "findings": int(r["findings"]),
         "requests": int(r["requests"]), "rate": rate(int(r["requests"]))}
        for r in detectors
    ]
    actions = _rows(
        client,
        f"SELECT detector, action, sum(findings) AS findings, uniqMerge(requests) AS requests "
        f"FROM {database}.findings_1m WHERE {where} GROUP BY detector, action "
        "ORDER BY detector, requests DESC",
        params,
    )
    out["actions"] = [
        {"detector": r["detector"], "action": r["action"], "findings": int(r["findings"]),
         "requests": int(r["requests"]), "rate": rate(int(r["requests"]))}
        for r in actions
    ]
    out["pii_types"] = [
        {"label": r["label"], "findings": int(r["findings"]), "requests": int(r["requests"])}
        for r in _rows(
            client,
            f"SELECT label, sum(findings) AS findings, uniqMerge(requests) AS requests "
            f"FROM {database}.findings_1m WHERE {where} AND detector = 'pii' GROUP BY label "
            "ORDER BY findings DESC LIMIT {top:UInt32}",
            {**params, "top": top},
        )
    ]
    fmt = _rows(
        client,
        f"SELECT label, sum(findings) AS findings, uniqMerge(requests) AS requests "
        f"FROM {database}.findings_1m WHERE {where} AND detector = 'format' GROUP BY label "
        "ORDER BY findings DESC",
        params,
    )
    fmt_requests = int(
        client.query(
            f"SELECT uniqMerge(requests) FROM {database}.findings_1m "
            f"WHERE {where} AND detector = 'format'",
            parameters=params,
        ).result_rows[0][0]
        or 0
    )
    json_requests, json_invalid = _json_validity(client, database, params)
    out["format"] = {
        "requests_with_findings": fmt_requests,
        "json_requests": json_requests,
        "json_invalid": json_invalid,
        "valid_rate": (1 - json_invalid / json_requests) if json_requests else None,
        "labels": [{"label": r["label"], "findings": int(r["findings"]),
                    "requests": int(r["requests"])} for r in fmt],
    }
    out["detector_latency_ms"] = _detector_latency(client, database, where, params)
    return out


def _json_validity(client: Client, database: str, params: dict[str, Any]) -> tuple[int, int]:
    """(requests that asked for JSON, those of them with a ``json_*`` format finding),
    from the raw tables: the aggregates do not know what a request asked for."""
    window = ("started_at >= fromUnixTimestamp64Micro({since_us:Int64}, 'UTC') AND "
              "started_at < fromUnixTimestamp64Micro({until_us:Int64}, 'UTC')")
    p = {"since_us": int(params["since"] * 1_000_000), "until_us": int(params["until"] * 1_000_000),
         "key": _RESPONSE_FORMAT_KEY}
    row = client.query(
        f"SELECT count(), countIf(request_id IN (SELECT request_id FROM {database}.findings "
        f"WHERE {window} AND detector = 'format' AND startsWith(label, 'json_'))) "
        f"FROM {database}.traces WHERE {window} "
        "AND attributes[{key:String}] IN ('json_object', 'json_schema')",
        parameters=p,
    ).result_rows[0]
    return int(row[0] or 0), int(row[1] or 0)


def _detector_latency(
    client: Client, database: str, where: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    # a CLI newer than the sidecar that migrates the server may meet a v3 schema
    if not client.query(f"EXISTS TABLE {database}.detector_runs_1m").result_rows[0][0]:
        return []
    q = ", ".join(str(x) for x in QUANTILES)
    rows = _rows(
        client,
        f"SELECT detector, sum(runs) AS runs, sum(errors) AS errors, "
        f"sum(timeouts) AS timeouts, quantilesTDigestMerge({q})(latency_ms_q) AS latency "
        f"FROM {database}.detector_runs_1m WHERE {where} GROUP BY detector "
        "ORDER BY runs DESC, detector",
        params,
    )
    return [
        {"detector": r["detector"], "runs": int(r["runs"]), "errors": int(r["errors"]),
         "timeouts": int(r["timeouts"]),
         "error_rate": int(r["errors"]) / int(r["runs"]) if r["runs"] else None,
         "latency_ms": _quantiles(r["latency"])}
        for r in rows
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(data: dict[str, Any], *, prices: bool = True) -> str:
    """A plain-text rendering of :func:`report`'s result, for humans. ``prices``:
    whether any model price is configured (else the cost line says so)."""
    tokens = data["tokens"]
    cost = f"{data['cost_usd']:.4f}"
    if not prices:
        cost += "   (no model prices configured: options.prices of the clickhouse exporter)"
    lines = [
        f"railwatch report {data['since']:%Y-%m-%d %H:%M} .. {data['until']:%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"requests      {data['requests']:>10}   errors {data['errors']} "
            f"({_pct(data['error_rate'])})   streams {data['streams']}   "
            f"retries {data['retries']}"
        ),
        (
            f"tokens        prompt {tokens['prompt']}   completion {tokens['completion']}   "
            f"total {tokens['total']}"
        ),
        f"cost (USD)    {cost}",
        "",
        f"{'latency ms':<14}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for name, qs in data["latency_ms"].items():
        lines.append(f"{name:<14}{_ms(qs['p50']):>10}{_ms(qs['p90']):>10}{_ms(qs['p99']):>10}")
    if data["decisions"]:
        decisions = "   ".join(f"{k} {v}" for k, v in data["decisions"].items())
        lines += ["", f"decisions     {decisions}"]
    if data["routes"]:
        header = (
            f"{'route':<16}{'model':<28}{'requests':>9}{'errors':>8}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'ovh p50':>9}"
        )
        lines += ["", header]
        for r in data["routes"]:
            lines.append(
                f"{r['route'][:15]:<16}{(r['model'] or '-')[:27]:<28}{r['requests']:>9}"
                f"{r['errors']:>8}{_ms(r['total_ms']['p50']):>9}{_ms(r['total_ms']['p99']):>9}"
                f"{_ms(r['overhead_ms']['p50']):>9}"
            )
    lines += ["", f"{'detector':<16}{'action':<12}{'findings':>9}{'requests':>9}{'rate':>9}"]
    if not data["actions"]:
        lines.append("(no findings)")
    for a in data["actions"]:
        lines.append(
            f"{a['detector'][:15]:<16}{a['action'][:11]:<12}{a['findings']:>9}"
            f"{a['requests']:>9}{_pct(a['rate']):>9}"
        )
    if data["pii_types"]:
        pii = "   ".join(f"{p['label']} {p['findings']}" for p in data["pii_types"])
        lines += ["", f"top PII types {pii}"]
    fmt = data["format"]
    asked = fmt.get("json_requests", 0)
    valid = (f"JSON answers valid {_pct(fmt['valid_rate'])} of {asked} that asked for JSON"
             if asked else "no request asked for JSON")
    lines += [
        "",
        f"JSON/format   requests with format findings {fmt['requests_with_findings']}   {valid}",
    ]
    for label in fmt["labels"]:
        lines.append(f"              {label['label']}: {label['findings']}")
    runs = data.get("detector_latency_ms") or []
    if runs:
        lines += ["", (f"{'detector ms':<16}{'runs':>9}{'errors':>8}{'p50':>10}{'p90':>10}"
                       f"{'p99':>10}")]
        for r in runs:
            qs = r["latency_ms"]
            lines.append(
                f"{r['detector'][:15]:<16}{r['runs']:>9}{r['errors']:>8}{_ms(qs['p50']):>10}"
                f"{_ms(qs['p90']):>10}{_ms(qs['p99']):>10}"
            )
    return "\n".join(lines) + "\n"
