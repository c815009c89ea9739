"""ClickHouse storage for railwatch traces: schema, writer, spill-and-replay, queries.

- :class:`ClickHouseExporter` (entry point ``clickhouse``) writes finished
  :class:`~sidecar.record.TraceRecord` values in batches, spilling to a durable
  local log when ClickHouse is down and replaying it in order when it is back.
- :class:`ClickHouseStore` owns the one client of a process; the exporter, hand-off
  and feedback storage, the CLI and drift share it.
- :class:`ClickHouseConfig` is its validated configuration.
- :func:`connect` opens a clickhouse-connect client for a config (used by the CLI
  with :mod:`exporters.clickhouse.queries`).
- :mod:`.migrations` holds the versioned schema, :mod:`.review` the feedback and
  hand-off tables' read/write helpers.

The default DSN is embedded chDB (``chdb:///<data_dir>/clickhouse``): one engine
path per process, one process per path. Several workers, or a CLI/dashboard next
to a running sidecar, need a ClickHouse server DSN (``http(s)://``).
"""

from __future__ import annotations

from exporters.clickhouse.config import ClickHouseConfig, ModelPrice
from exporters.clickhouse.connection import connect
from exporters.clickhouse.exporter import ClickHouseExporter
from exporters.clickhouse.migrations import SCHEMA_VERSION, migrate
from exporters.clickhouse.store import ClickHouseStore

__all__ = [
    "SCHEMA_VERSION",
    "ClickHouseConfig",
    "ClickHouseExporter",
    "ClickHouseStore",
    "ModelPrice",
    "connect",
    "migrate",
]
