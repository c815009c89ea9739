"""Detector kinds, found through entry points, and creation from validated options.

A detector kind is an entry point in the ``railwatch.detectors`` group whose object is
a detector class. railwatch declares its own kinds in ``pyproject.toml``; a third-party
package adds one by declaring an entry point in the same group, with no change here::

    [project.entry-points."railwatch.detectors"]
    acme = "acme_guard.detector:AcmeDetector"

A detector class follows the contract of :mod:`detectors.base` and, for options, has a
nested ``Options`` pydantic model (``extra="forbid"``) and an ``__init__(options=None,
*, name=None)`` that does no heavy work. A class without ``Options`` takes no options.

Nothing here is cached at module level: every call reads the installed entry points
afresh (a few milliseconds), which is fine because detectors are created once, at
start-up, and it means a package installed or put on ``sys.path`` later is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pydantic

from detectors.base import Detector
from detectors.errors import DetectorConfigError, DetectorLoadError, UnknownDetectorError

__all__ = ["ENTRY_POINT_GROUP", "available", "create", "kinds", "load"]

ENTRY_POINT_GROUP = "railwatch.detectors"
_OWN_DISTRIBUTION = "railwatch"

logger = logging.getLogger(__name__)


def _dist_name(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def _entry_points() -> dict[str, EntryPoint]:
    """Name -> entry point.

    On a duplicate name railwatch's own declaration wins (a plug-in cannot silently
    replace a built-in detector), otherwise the first distribution found on
    ``sys.path``; either way a warning names both.
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        first = found.get(ep.name)
        if first is None:
            found[ep.name] = ep
            continue
        if first.value == ep.value:
            continue
        own = _dist_name(ep) == _OWN_DISTRIBUTION and _dist_name(first) != _OWN_DISTRIBUTION
        kept = ep if own else first
        found[ep.name] = kept
        logger.warning(
            "detector kind %s is declared twice (%s and %s); using %s",
            ep.name,
            first.value,
            ep.value,
            kept.value,
        )
    return found


def kinds() -> list[str]:
    """The installed detector kinds, sorted, without importing any of them."""
    return sorted(_entry_points())


def _load(ep: EntryPoint) -> type[Any]:
    try:
        obj = ep.load()
    except Exception as exc:  # an import error in a plug-in must name the plug-in
        raise DetectorLoadError(
            f"detector kind {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, type):
        raise DetectorLoadError(
            f"detector kind {ep.name!r} ({ep.value}) is not a class but {type(obj).__name__}"
        )
    return obj


def load(kind: str) -> type[Any]:
    """The detector class of ``kind``.

    Raises :class:`UnknownDetectorError` when no entry point has that name and
    :class:`DetectorLoadError` when importing it fails.
    """
    eps = _entry_points()
    ep = eps.get(kind)
    if ep is None:
        raise UnknownDetectorError(
            f"unknown detector kind {kind!r}; installed kinds: {', '.join(sorted(eps)) or 'none'}",
            detector=kind,
            key="kind",
        )
    return _load(ep)


def available() -> dict[str, type[Any]]:
    """Every installed kind that imports cleanly, name -> class.

    A kind whose import fails is logged and left out, so one broken plug-in does not
    hide the others; :func:`create` with that kind raises :class:`DetectorLoadError`.
    """
    classes: dict[str, type[Any]] = {}
    for name, ep in _entry_points().items():
        try:
            classes[name] = _load(ep)
        except DetectorLoadError as exc:
            logger.warning("%s", exc)
    return classes


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<options>"


def _validate_options(
    cls: type[Any], kind: str, name: str, options: Mapping[str, Any] | pydantic.BaseModel | None
) -> pydantic.BaseModel | None:
    options_model: type[pydantic.BaseModel] | None = getattr(cls, "Options", None)
    if options_model is None:
        if options:
            key = next(iter(options)) if isinstance(options, Mapping) else "<options>"
            raise DetectorConfigError(
                f"detector {name!r} (kind {kind!r}) takes no options, got {key!r}",
                detector=name,
                key=str(key),
            )
        return None
    if isinstance(options, options_model):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise DetectorConfigError(
            f"detector {name!r} (kind {kind!r}): options must be a mapping, "
            f"not {type(options).__name__}",
            detector=name,
        )
    try:
        validated: pydantic.BaseModel = options_model.model_validate(dict(options or {}))
    except pydantic.ValidationError as exc:
        # err["msg"] never repeats the input value, unlike str(exc); options are
        # configuration, but the rule is the same everywhere: name the key, not the value.
        first = exc.errors()[0]
        key = _format_loc(first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DetectorConfigError(
            f"detector {name!r} (kind {kind!r}): option {key!r}: {first['msg']}{more}",
            detector=name,
            key=key,
        ) from None
    return validated


def create(
    kind: str,
    options: Mapping[str, Any] | pydantic.BaseModel | None = None,
    name: str | None = None,
) -> Detector:
    """Create a detector of ``kind`` named ``name`` (default: the class's ``name``).

    ``options`` is validated through the class's ``Options`` model. Does no heavy work
    (the detector's ``start()`` does). Raises :class:`UnknownDetectorError`,
    :class:`DetectorLoadError`, or :class:`DetectorConfigError` naming the detector and
    the option key.
    """
    cls = load(kind)
    instance_name = name or getattr(cls, "name", None) or kind
    validated = _validate_options(cls, kind, instance_name, options)
    try:
        if validated is None:
            detector = cls(name=instance_name)
        else:
            detector = cls(validated, name=instance_name)
    except (DetectorConfigError, DetectorLoadError):
        raise
    except Exception as exc:
        raise DetectorConfigError(
            f"detector {instance_name!r} (kind {kind!r}) could not be created: "
            f"{type(exc).__name__}: {exc}",
            detector=instance_name,
        ) from exc
    if not isinstance(detector, Detector):
        raise DetectorLoadError(
            f"detector kind {kind!r}: {cls.__qualname__} does not implement the Detector "
            "protocol (name, blocking, start, detect, close)"
        )
    return detector
