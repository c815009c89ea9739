"""ClickHouseStore: the one ClickHouse client of a process, shared by every user.

Embedded chDB opens one engine path per process, so the sidecar keeps exactly one
client: the trace exporter inserts through it, hand-off and feedback storage read
and write through it, and so do the CLI's queries and drift. Every use runs
``fn(client, database)`` under one lock (:meth:`ClickHouseStore.run`), so a query
never interleaves with an insert on the same connection.

Every method blocks (network or disk); call from a worker thread when on an
event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from clickhouse_connect.driver.client import Client

from exporters.clickhouse.config import ClickHouseConfig
from exporters.clickhouse.connection import connect
from exporters.clickhouse.migrations import apply_ttl, migrate
from exporters.errors import StorageUnavailableError

T = TypeVar("T")


class ClickHouseStore:
    """Owns the client (see the module docstring). ``__init__`` does no I/O."""

    def __init__(self, config: ClickHouseConfig) -> None:
        self.config = config
        self.database = config.effective_database
        self.lock = threading.Lock()  # held for every use of the client
        self._client: Client | None = None

    @property
    def ready(self) -> bool:
        """Connected and migrated."""
        return self._client is not None

    @property
    def store_text(self) -> bool:
        return self.config.store_text

    @property
    def client(self) -> Client | None:
        """The client, for callers that already hold :attr:`lock`."""
        return self._client

    def open(self, *, migrate_schema: bool = True) -> None:
        """Connect, and (unless told not to: readers such as the CLI) migrate and apply
        TTLs. Blocks. Raises StorageUnavailableError (no answer) or ExporterStartError
        (locked engine path, failing migrations)."""
        with self.lock:
            if self._client is not None:
                return
            cfg = self.config
            client = connect(cfg)
            if not migrate_schema:
                self._client = client
                return
            try:
                migrate(client, self.database, cluster=cfg.cluster,
                        dedup_window=cfg.dedup_window)
                apply_ttl(client, self.database, ttl_text_days=cfg.ttl_text_days,
                          ttl_days=cfg.ttl_days, cluster=cfg.cluster)
            except BaseException:
                client.close()
                raise
            self._client = client

    def run(self, fn: Callable[[Client, str], T]) -> T:
        """``fn(client, database)`` under the store's lock. Blocks. Raises
        StorageUnavailableError when not connected; ``fn``'s errors propagate."""
        with self.lock:
            if self._client is None:
                raise StorageUnavailableError("ClickHouse is not connected")
            return fn(self._client, self.database)

    def close(self) -> None:
        """Close the client. Never raises; safe to call twice."""
        with self.lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must finish
                pass
