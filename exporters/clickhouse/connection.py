"""Opening a clickhouse-connect client for a :class:`ClickHouseConfig`.

Both kinds of DSN give the same ``clickhouse_connect.driver.client.Client``:

- ``chdb:///path``: the embedded engine in this process. Connecting costs 0.3-0.9 s.
  chDB runs **one engine path per process** and **no second process can open a path
  in use**; both failures become :class:`StorageLockedError` naming the path. There
  is no async client; queries release the GIL, so call them from worker threads.
- ``http(s)://``: a ClickHouse server or cluster. Username, password and TLS options
  (``verify``, ``ca_cert``) come from the config, falling back to the DSN.

The database named in the config is *not* made the client's default: it may not
exist yet (the migrations create it), so every statement railwatch sends names
``database.table`` explicitly.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from exporters.clickhouse.config import ClickHouseConfig
from exporters.errors import ExporterStartError, StorageLockedError, StorageUnavailableError

_OTHER_PATH = re.compile(r"already initialized with path '([^']*)'")
_AUTH_CODES = {192, 193, 194, 195, 516}  # UNKNOWN_USER, WRONG_PASSWORD, ..., AUTHENTICATION_FAILED

__all__ = [
    "UNBOUNDED",
    "check_embedded_free",
    "connect",
    "describe_error",
    "embedded_lock_holder",
    "query_settings",
]


def connect(config: ClickHouseConfig) -> Client:
    """A new client for ``config``'s DSN. Blocks (network or engine start-up).

    Raises :class:`StorageLockedError` (chDB path held elsewhere),
    :class:`StorageUnavailableError` (server unreachable or credentials refused) or
    :class:`ExporterStartError` (anything else); messages never hold the password.
    """
    if config.is_embedded:
        path = config.embedded_path
        assert path is not None
        return _connect_embedded(path, query_settings(config))
    return _connect_server(config)


def query_settings(config: ClickHouseConfig) -> dict[str, Any]:
    """ClickHouse settings sent with every query of a client: ``max_execution_time``
    (``query_timeout_s``, in whole seconds) makes the engine itself stop a query that
    runs longer (``TIMEOUT_EXCEEDED``). Embedded chDB has no other bound (no socket to
    time out), and a server is freed too, not only the client's socket.

    Writes whose interruption would leave a half-done state pass :data:`UNBOUNDED`:
    trace and finding inserts (a materialized view still being fed when the insert is
    stopped keeps the base rows but misses the aggregate ones, and the retry is then
    deduplicated) and migrations (DDL, possibly ``ON CLUSTER``)."""
    return {"max_execution_time": max(1, math.ceil(config.query_timeout_s))}


UNBOUNDED: dict[str, Any] = {"max_execution_time": 0}
"""Settings of a write that must not be stopped half-way (see :func:`query_settings`)."""


def describe_error(exc: BaseException) -> str:
    """A log-safe summary of a driver error: type, ClickHouse code and name, no text.

    Server messages can quote the data of a failed insert, so they are left out.
    """
    code = getattr(exc, "code", None)
    name = getattr(exc, "name", None)
    parts = [type(exc).__name__]
    if code is not None:
        parts.append(f"code={code}")
    if name:
        parts.append(str(name))
    return " ".join(parts)


def embedded_lock_holder(path: Path) -> int | None:
    """PID of the process holding the chDB data directory ``path``, else ``None``.

    ClickHouse ``flock``s ``<path>/status`` (which names the PID) for as long as
    its engine runs. Returns ``-1`` when it is locked but the PID is unreadable.
    """
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        except OSError:
            return -1
        match = re.search(r"PID:\s*(\d+)", text)
        return int(match.group(1)) if match else -1
    finally:
        os.close(fd)


def check_embedded_free(path: Path) -> None:
    """Raise :class:`StorageLockedError` naming ``path`` when another process holds it."""
    holder = embedded_lock_holder(path)
    if holder is not None and holder != os.getpid():
        raise StorageLockedError(_locked_message(path, holder))


def _locked_message(path: Path, pid: int) -> str:
    who = f" (pid {pid})" if pid > 0 else ""
    return (
        f"the embedded ClickHouse data directory {path} is in use by another process{who}; "
        "chDB lets one process at a time open a path. Stop that process, or run a ClickHouse "
        "server and point every process (sidecar workers, CLI, dashboards) at it with an "
        "http(s):// DSN"
    )


def _connect_embedded(path: Path, settings: dict[str, Any]) -> Client:
    # checked first: chDB itself would only say "Error initializing EmbeddedServer"
    check_embedded_free(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExporterStartError(f"cannot create the chDB data directory {path}: {exc}") from exc
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}", settings=settings)
    except (ClickHouseError, RuntimeError) as exc:
        other = _OTHER_PATH.search(str(exc))
        if other:
            raise StorageLockedError(
                f"this process already runs embedded chDB at {other.group(1)} and cannot also "
                f"open {path}: chDB allows one engine path per process. Use one data path "
                "for every exporter and query in the process, or a ClickHouse server DSN"
            ) from None
        holder = embedded_lock_holder(path)
        if holder is not None and holder != os.getpid():
            raise StorageLockedError(_locked_message(path, holder)) from None
        raise ExporterStartError(
            f"cannot open embedded ClickHouse at {path}: {describe_error(exc)}"
        ) from exc


def _connect_server(config: ClickHouseConfig) -> Client:
    parts = urlsplit(config.effective_dsn)
    # the database travels separately (it may not exist before the migrations run)
    dsn = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    kwargs: dict[str, Any] = {
        "dsn": dsn,
        "connect_timeout": config.connect_timeout_s,
        "send_receive_timeout": config.query_timeout_s,
        "verify": config.verify,
        # one client is shared by the writer and replay threads: no HTTP session
        # state, so concurrent calls cannot trip "session is locked"
        "autogenerate_session_id": False,
        "query_retries": 0,
        "settings": query_settings(config),
    }
    if config.username is not None:
        kwargs["username"] = config.username
    if config.password is not None:
        kwargs["password"] = config.password.get_secret_value()
    if config.ca_cert is not None:
        kwargs["ca_cert"] = config.ca_cert
    where = config.redacted_dsn()
    try:
        return clickhouse_connect.get_client(**kwargs)
    except OperationalError as exc:
        raise StorageUnavailableError(
            f"ClickHouse at {where} did not answer ({describe_error(exc)})"
        ) from None
    except DatabaseError as exc:
        if getattr(exc, "code", None) in _AUTH_CODES:
            user = config.username or parts.username or "default"
            raise StorageUnavailableError(
                f"ClickHouse at {where} refused the credentials of user {user!r}"
            ) from None
        raise StorageUnavailableError(
            f"ClickHouse at {where} failed the handshake ({describe_error(exc)})"
        ) from None
    except ClickHouseError as exc:
        raise ExporterStartError(f"cannot connect to {where}: {describe_error(exc)}") from None
