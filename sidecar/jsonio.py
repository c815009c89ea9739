"""JSON as the official clients read it: strict and fast first, lenient when needed.

orjson refuses ``NaN``, ``Infinity`` and ``-Infinity``, which Python servers emit
(``json.dumps`` does by default, e.g. ``-Infinity`` log-probabilities) and which the
official ``openai`` client accepts. An answer the sidecar cannot parse cannot be
checked, so :func:`loads` falls back to the standard library for exactly those
documents, and :func:`dumps` writes them back the same way (orjson would turn the
non-finite numbers into ``null``). Neither function logs or echoes the content.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _no_constant(name: str) -> Any:  # pragma: no cover - only reached with a bad token
    raise ValueError("unsupported JSON constant")


def loads(data: bytes | str) -> tuple[Any, bool]:
    """``(document, lenient)``; ``lenient`` is True when non-finite numbers needed the
    fallback. Raises ``ValueError`` for anything that is not JSON either way."""
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if "NaN" not in text and "Infinity" not in text:
        raise ValueError("not valid JSON")
    try:
        return json.loads(text), True
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError("not valid JSON") from exc


def dumps(doc: Any, lenient: bool = False) -> bytes:
    """Serialise ``doc``; ``lenient`` keeps non-finite numbers as the upstream wrote them."""
    if lenient:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return orjson.dumps(doc)
