"""Trace ingest into embedded chDB: rows/s through the exporter vs the raw engine.

For each insert size it measures, side by side in one process and one chDB path:

- ``raw``: ``client.insert`` of prebuilt rows straight into ``traces`` (the engine's
  rate at that insert size, the ceiling);
- ``exporter``: records submitted to a ``BatchProcessor`` feeding a
  ``ClickHouseExporter`` with ``insert_max_rows`` = the size (row building,
  dedup tokens, findings table, materialized views included);
- ``spill``: the same with the ``traces`` table renamed away, so every unit goes
  to the spill log (the outage path), then the replay rate once it is back.

Each row carries about 4 KB of text (3 KB prompt, 1 KB output) and two findings.
CPU is this process's CPU time (the engine runs in-process, so it is included).
Numbers from a shared machine are noisy: compare rows in one run, not across runs.

    python bench/bench_clickhouse_ingest.py [--rows 20000] [--sizes 100,1000,5000,10000]
"""

from __future__ import annotations

import argparse
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporters.batch import BatchProcessor
from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter, connect
from exporters.clickhouse.migrations import migrate
from exporters.clickhouse.rows import TRACE_NAMES, TRACE_TYPES, build_rows
from sidecar.record import DecisionRecord, FindingRecord, TraceRecord


def _text(rng: random.Random, n: int) -> str:
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(n // 5)
    ]
    return " ".join(words)[:n]


def make_records(count: int, seed: int = 7) -> list[TraceRecord]:
    rng = random.Random(seed)
    prompts = [_text(rng, 3072) for _ in range(64)]
    outputs = [_text(rng, 1024) for _ in range(64)]
    now = time.time()
    findings = (
        FindingRecord("input", "pii", "EMAIL_ADDRESS", 0.97, 10, 30, "mask", 0.2),
        FindingRecord("output", "toxicity", "toxic", 0.12, 0, 1024, "flag", 3.1),
    )
    out = []
    for i in range(count):
        start = now - rng.random() * 300
        out.append(
            TraceRecord(
                request_id=os.urandom(16).hex(),
                trace_id=os.urandom(16).hex(),
                span_id=os.urandom(8).hex(),
                parent_span_id=None,
                started_at=start,
                ended_at=start + 0.4,
                method="POST",
                path="/v1/chat/completions",
                route="chat",
                upstream="http://127.0.0.1:8000",
                tenant=f"t{i % 5}",
                model_requested="m",
                model_served=f"m-{i % 3}",
                status=200,
                total_ms=400 + rng.random() * 100,
                upstream_ms=390.0,
                overhead_ms=1 + rng.random(),
                prompt_tokens=700,
                completion_tokens=250,
                total_tokens=950,
                prompt_text=prompts[i % 64],
                output_text=outputs[i % 64],
                findings=findings,
                decisions=(DecisionRecord("input", "mask", ("pii",)),),
                decision="mask",
                attributes={"k": "v"},
            )
        )
    return out


def _measure(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_raw(client, database: str, records: list[TraceRecord], size: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    rows, _ = build_rows(records, version=1, store_text=True, prices={})

    def run() -> None:
        for i in range(0, len(rows), size):
            client.insert(
                f"{database}.traces",
                rows[i : i + size],
                column_names=TRACE_NAMES,
                column_type_names=TRACE_TYPES,
            )

    return _measure(run)


def bench_exporter(
    path: Path,
    database: str,
    spill: Path,
    records: list[TraceRecord],
    size: int,
    *,
    broken: bool = False,
) -> tuple[float, float, float, float]:
    cfg = ClickHouseConfig(
        dsn=f"chdb://{path}",
        database=database,
        spill_dir=spill,
        insert_max_rows=size,
        insert_max_age_s=0.5,
        ttl_text_days=None,
        retry_initial_s=3600,
        retry_max_s=3600,
    )
    exporter = ClickHouseExporter(cfg)
    exporter.start()
    client = exporter.store.client
    assert client is not None
    if broken:
        client.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
    processor = BatchProcessor(
        exporter, max_queue=len(records) + 1, max_batch=min(size, 1000), schedule_delay_s=0.02
    )

    def run() -> None:
        for r in records:
            processor.submit(r)
        processor.force_flush(600)

    wall, cpu = _measure(run)
    replay_wall = replay_cpu = 0.0
    if broken:
        assert exporter.backlog_rows == len(records), exporter.state()
        client.command(f"RENAME TABLE {database}.traces_away TO {database}.traces")
        replay_wall, replay_cpu = _measure(lambda: exporter.force_flush(600))
        assert exporter.backlog_rows == 0, exporter.state()
    n = client.query(f"SELECT count() FROM {database}.traces").result_rows[0][0]
    assert n == len(records), (n, exporter.state())
    processor.shutdown(60)
    return wall, cpu, replay_wall, replay_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    records = make_records(args.rows)
    text_kb = (
        sum(len(r.prompt_text or "") + len(r.output_text or "") for r in records[:64]) / 64 / 1024
    )

    with tempfile.TemporaryDirectory(prefix="rw-bench-ch-") as tmp:
        path = Path(tmp) / "chdb"
        admin = connect(ClickHouseConfig(dsn=f"chdb://{path}"))
        print(f"{args.rows} rows per run, {text_kb:.1f} KB text per row, chDB at {path}")
        print(f"{'mode':<18}{'rows/insert':>12}{'wall s':>9}{'rows/s':>10}{'CPU ms/1k rows':>16}")

        def line(mode: str, size: int, wall: float, cpu: float) -> None:
            print(
                f"{mode:<18}{size:>12}{wall:>9.2f}{args.rows / wall:>10.0f}"
                f"{cpu * 1000 / (args.rows / 1000):>16.1f}",
                flush=True,
            )

        for k, size in enumerate(sizes):
            raw_db, exp_db = f"bench_raw_{k}", f"bench_exp_{k}"
            migrate(admin, raw_db)
            line("raw insert", size, *bench_raw(admin, raw_db, records, size))
            wall, cpu, _, _ = bench_exporter(path, exp_db, Path(tmp) / f"spill{k}", records, size)
            line("exporter", size, wall, cpu)
            for db in (raw_db, exp_db):
                admin.command(f"DROP DATABASE {db} SYNC")
        size = 1000 if 1000 in sizes else sizes[0]
        wall, cpu, rwall, rcpu = bench_exporter(
            path, "bench_spill", Path(tmp) / "spill-out", records, size, broken=True
        )
        line("spill (outage)", size, wall, cpu)
        line("replay", size, rwall, rcpu)
        admin.close()


if __name__ == "__main__":
    main()
