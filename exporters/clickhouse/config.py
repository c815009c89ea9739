"""Typed configuration of the ClickHouse exporter (validated once, at start-up).

Units: ``*_s`` seconds, ``*_bytes`` bytes, ``*_days`` days, prices USD per one
million tokens. The password is a ``SecretStr``: it never appears in ``repr``,
logs, ``state()`` or error messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_CLUSTER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
SCHEMES = ("chdb", "http", "https")


class ModelPrice(BaseModel):
    """Price of one model, USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ClickHouseConfig(BaseModel):
    """Where traces go and how the writer behaves.

    ``dsn``: ``chdb:///abs/path`` (embedded engine, the default at
    ``<data_dir>/clickhouse``) or ``http(s)://[user[:password]@]host:port[/database]``.
    chDB is single-process: one engine path per process, and no second process can
    open a path in use, so run several sidecar workers, or a CLI/dashboard beside a
    running sidecar, against a ClickHouse server instead.

    ``username`` / ``password`` / ``database`` override what the DSN says.
    ``cluster``: create tables ``ON CLUSTER`` with Replicated engines.
    ``store_text``: ``False`` stores no prompt/output text at all, whatever the
    privacy setting let the record hold. ``ttl_text_days`` expires the text
    columns (column TTL), ``ttl_days`` whole rows of the trace/finding/aggregate
    tables; ``None`` keeps forever.
    ``insert_max_rows`` / ``insert_max_age_s``: the writer accumulates batches to
    this many rows or this age before one INSERT (chDB takes 1,000-10,000 rows per
    insert far better than small ones). Rows become visible to queries that much later
    (the crash journal covers them meanwhile). Each INSERT has a fixed cost (two tables,
    three materialized views, a part each, then merges): at 400 requests/s the sidecar's
    ClickHouse threads cost about 135 us per request with 1 s and 37 us with 5 s.
    ``spill_*``: the durable log that takes batches ClickHouse refused (see
    :mod:`exporters.spill`); ``spill=False`` drops them instead (counted).
    ``prices``: model name -> USD per 1M input/output tokens, for ``cost_usd``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path(".railwatch")
    dsn: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    database: str = "railwatch"
    cluster: str | None = None

    store_text: bool = True
    ttl_text_days: int | None = Field(default=30, gt=0)
    ttl_days: int | None = Field(default=None, gt=0)

    insert_max_rows: int = Field(default=5000, gt=0)
    insert_max_age_s: float = Field(default=5.0, gt=0)
    dedup_window: int = Field(default=1000, gt=0)  # recent insert blocks remembered per table

    spill: bool = True
    spill_dir: Path | None = None
    spill_max_bytes: int = Field(default=1 << 30, gt=1024)
    spill_segment_bytes: int = Field(default=64 << 20, gt=1024)
    spill_fsync_every_s: float = Field(default=1.0, ge=0)
    spill_fsync_every_n: int = Field(default=0, ge=0)

    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    query_timeout_s: float = Field(default=30.0, gt=0)  # every query, chDB too (max_execution_time)
    verify: bool = True
    ca_cert: str | None = None
    require_at_start: bool = False  # a server DSN that does not answer fails start()

    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    @field_validator("dsn")
    @classmethod
    def _valid_dsn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if scheme == "chdb" and not chdb_path(value):
            raise ValueError("a chdb DSN needs a path: chdb:///abs/path")
        return value

    @field_validator("database")
    @classmethod
    def _valid_database(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError("must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @field_validator("cluster")
    @classmethod
    def _valid_cluster(cls, value: str | None) -> str | None:
        if value is not None and not _CLUSTER.match(value):
            raise ValueError("must be a cluster name ([A-Za-z0-9_.-])")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClickHouseConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        if self.cluster and self.is_embedded:
            raise ValueError("cluster needs a ClickHouse server DSN, not embedded chDB")
        return self

    @property
    def effective_dsn(self) -> str:
        if self.dsn is not None:
            return self.dsn
        return f"chdb://{(Path(self.data_dir) / 'clickhouse').resolve()}"

    @property
    def effective_database(self) -> str:
        """``database`` when set explicitly, else the DSN's path (server DSNs), else the default."""
        if "database" not in self.model_fields_set and not self.is_embedded:
            from_dsn = urlsplit(self.effective_dsn).path.strip("/")
            if from_dsn:
                if not _IDENT.match(from_dsn):
                    raise ValueError(f"the DSN's database {from_dsn!r} is not a plain identifier")
                return from_dsn
        return self.database

    @property
    def is_embedded(self) -> bool:
        return self.effective_dsn.startswith("chdb:")

    @property
    def embedded_path(self) -> Path | None:
        """The chDB data directory (absolute), or ``None`` for a server DSN."""
        path = chdb_path(self.effective_dsn)
        return Path(path).resolve() if path else None

    @property
    def effective_spill_dir(self) -> Path:
        if self.spill_dir is not None:
            return Path(self.spill_dir)
        return Path(self.data_dir) / "spill" / "clickhouse"

    def redacted_dsn(self) -> str:
        """The DSN without any password, safe for logs and ``state()``."""
        return redact_dsn(self.effective_dsn)

    def price_of(self, model: str | None) -> ModelPrice | None:
        return self.prices.get(model) if model else None

    def with_options(self, **changes: Any) -> ClickHouseConfig:
        """A validated copy with ``changes`` applied."""
        return type(self).model_validate({**self.model_dump(), **changes})


def chdb_path(dsn: str) -> str | None:
    """``chdb:///abs/path`` -> ``/abs/path``; ``chdb://rel/path`` -> ``rel/path``."""
    parts = urlsplit(dsn)
    if parts.scheme != "chdb":
        return None
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    return path or None


def redact_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
