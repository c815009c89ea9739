"""Every exception the exporters package raises.

Tree::

    ExporterError                   base
    ├── ExporterConfigError         unknown kind, bad options (start-up)
    ├── ExporterStartError          the backend could not be opened at start-up
    │   ├── StorageUnavailableError     a ClickHouse server did not answer / refused us
    │   ├── StorageLockedError          an embedded chDB path is held by another process,
    │   │                               or this process already runs chDB at another path
    │   └── MigrationError              applying the schema migrations failed
    └── SpillError                  the durable spill log cannot be opened or used
                                    (directory locked by another process, I/O error)

``export()`` never raises: delivery failures are results and counters, not exceptions.
Messages name paths, hosts, databases and keys, never request text or passwords.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every exporter exception."""


class ExporterConfigError(ExporterError):
    """An exporter's kind or options are invalid."""


class ExporterStartError(ExporterError):
    """An exporter's backend could not be opened at start-up."""


class StorageUnavailableError(ExporterStartError):
    """A ClickHouse server could not be reached, or refused the credentials."""


class StorageLockedError(ExporterStartError):
    """An embedded chDB data path cannot be opened by this process.

    chDB runs one engine path per process, and a second process cannot open a path
    another process holds. Several workers, or a dashboard/CLI process next to a
    running sidecar, need a ClickHouse server (an ``http(s)://`` DSN).
    """


class MigrationError(ExporterStartError):
    """A schema migration failed to apply."""


class SpillError(ExporterError):
    """The spill log's directory cannot be opened, locked or read."""
