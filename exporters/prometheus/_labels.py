"""Bounded label values: what keeps the exporter's series count finite.

Every label value the exporter writes goes through one of these. Values that come
from clients (model names) are the dangerous ones; values from the sidecar or its
configuration (routes, detector names, labels) are bounded by construction but are
capped anyway, so a bug or a strange plug-in cannot explode the series count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sidecar.semconv import LABEL_OTHER

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}")
_MAX_VALUE_CHARS = 64

# Status codes that get their own label value; any other code becomes its class ("4xx").
KNOWN_STATUS = frozenset(
    (200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 499, 500, 501,
     502, 503, 504)
)
_STATUS_TEXT = {code: str(code) for code in KNOWN_STATUS}


def status_label(status: int) -> str:
    """``"200"`` for a known code, ``"4xx"`` for another valid one, else ``"other"``."""
    text = _STATUS_TEXT.get(status)
    if text is not None:
        return text
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return LABEL_OTHER


class BoundedLabel:
    """Passes the first ``limit`` distinct values, then maps new ones to ``other``.

    With ``allowed`` set, only those values pass (and the limit still applies). With
    ``pattern`` set, values that do not fully match become ``other`` without using up
    a slot; this keeps free text (anything with spaces) out of model labels. Values
    longer than 64 characters are cut. Not locked: the exporter calls it from its one
    worker thread; a race could only let one extra value through.
    """

    __slots__ = ("_reserved", "_seen", "allowed", "limit", "pattern")

    def __init__(
        self,
        limit: int,
        *,
        allowed: Iterable[str] | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("a label limit must be at least 1")
        self.limit = limit
        self.allowed = frozenset(allowed) if allowed is not None else None
        self.pattern = pattern
        self._seen: set[str] = set()
        self._reserved = 0

    def reserve(self, values: Iterable[str]) -> None:
        """Values that always pass and take no slot of ``limit`` (an upstream's own model
        list): junk seen first cannot push them to ``other``. Thread-safe enough: a
        set insert under the GIL."""
        for value in values:
            if value and value not in self._seen and (
                    self.pattern is None or self.pattern.fullmatch(value) is not None):
                self._seen.add(value[:_MAX_VALUE_CHARS])
                self._reserved += 1

    def known(self, value: str | None) -> str:
        """``value`` if it already has a slot (passed before or reserved), else ``other``
        (``""`` for no value); never takes a new slot."""
        if not value:
            return ""
        return value if value in self._seen else LABEL_OTHER

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self._seen:
            return value
        if self.allowed is not None and value not in self.allowed:
            return LABEL_OTHER
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            return LABEL_OTHER
        if len(value) > _MAX_VALUE_CHARS:
            value = value[:_MAX_VALUE_CHARS]
            if value in self._seen:
                return value
        if len(self._seen) - self._reserved >= self.limit:
            return LABEL_OTHER
        self._seen.add(value)
        return value

    @property
    def distinct(self) -> int:
        """Values with a slot, reserved ones included."""
        return len(self._seen)


def model_label(limit: int, allowed: Iterable[str] | None = None) -> BoundedLabel:
    """The bounded ``model`` label: model-name characters only, first ``limit`` names."""
    return BoundedLabel(limit, allowed=allowed, pattern=_MODEL_NAME)
