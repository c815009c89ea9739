"""A small, deterministic JSON-Schema example generator for the demo upstream.

:func:`example_for_schema` builds one JSON value meant to validate against a schema:
the ``response_format`` ``json_schema`` answer and the arguments of scripted tool
calls. It covers what structured-output and tool schemas use in practice: ``type``
(single or a list), ``properties`` / ``required`` / ``additionalProperties``,
``items`` / ``prefixItems`` / ``minItems`` / ``maxItems`` / ``uniqueItems``, ``enum``,
``const``, ``anyOf`` / ``oneOf`` (first non-null option), ``allOf`` (merged),
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``), numeric bounds and
``multipleOf``, string lengths and common ``format`` values. It does not satisfy
``pattern`` or ``not``; unconstrained strings carry the answer text so that echoed
text (masked placeholders, scripted PII) shows up in structured answers too.

Pure and non-blocking; never raises on odd schemas (it returns its best guess).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["example_for_schema"]

_MAX_DEPTH = 24
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "demo@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


def example_for_schema(schema: Any, text: str) -> Any:
    """Return a JSON value for ``schema``; plain strings in it are ``text``."""
    return _Generator(schema, text).value(schema, 0, 0)


class _Generator:
    __slots__ = ("_root", "_text")

    def __init__(self, root: Any, text: str) -> None:
        self._root = root
        self._text = text

    def value(self, schema: Any, depth: int, salt: int) -> Any:
        if depth > _MAX_DEPTH or schema is False:
            return None
        if not isinstance(schema, dict) or not schema:
            return self._string({}, salt)  # `true` / `{}`: anything goes
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[salt % len(enum)]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.value(_first_non_null(options), depth + 1, salt)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if not isinstance(kind, str):
            kind = _infer_type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return _integer(schema, salt)
        if kind == "number":
            return _number(schema, salt)
        if kind == "boolean":
            return salt % 2 == 0
        if kind == "null":
            return None
        return self._string(schema, salt)

    def _resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Follow a local ``$ref`` and merge ``allOf`` into one schema."""
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and depth < _MAX_DEPTH:
            target: Any = self._root
            for part in ref[1:].split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict):
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = {**self._resolve(target, depth + 1), **rest}
        parts = schema.get("allOf")
        if isinstance(parts, list):
            merged: dict[str, Any] = {}
            for part in parts:
                if isinstance(part, dict):
                    for key, val in self._resolve(part, depth + 1).items():
                        if key in ("properties", "$defs") and isinstance(val, dict):
                            merged[key] = {**merged.get(key, {}), **val}
                        elif key == "required" and isinstance(val, list):
                            merged[key] = [*merged.get(key, []), *val]
                        else:
                            merged[key] = val
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            schema = merged
        return schema

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        out = {name: self.value(sub, depth + 1, 0) for name, sub in props.items()}
        extra = schema.get("additionalProperties", True)
        required = schema.get("required")
        for name in required if isinstance(required, list) else ():
            if isinstance(name, str) and name not in out:
                out[name] = self.value(extra if isinstance(extra, dict) else {}, depth + 1, 0)
        want = schema.get("minProperties")
        if isinstance(want, int) and extra is not False:
            while len(out) < want:
                out[f"extra_{len(out)}"] = self.value(
                    extra if isinstance(extra, dict) else {}, depth + 1, len(out)
                )
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04..2019 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        count = max(_int_or(schema.get("minItems"), 0), len(prefix), 1)
        high = schema.get("maxItems")
        if isinstance(high, int):
            count = min(count, high)
        if items is False:
            count = min(count, len(prefix))
        return [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1, i)
            for i in range(count)
        ]

    def _string(self, schema: dict[str, Any], salt: int) -> str:
        fmt = schema.get("format")
        base = _FORMATS.get(fmt, self._text) if isinstance(fmt, str) else self._text
        if salt and base is self._text:
            base = f"{base} #{salt + 1}"
        low = _int_or(schema.get("minLength"), 0)
        if len(base) < low:
            base = base + "." * (low - len(base))
        high = schema.get("maxLength")
        if isinstance(high, int) and len(base) > high:
            base = base[:high]
        return base


def _first_non_null(options: list[Any]) -> Any:
    for option in options:
        if not (isinstance(option, dict) and option.get("type") == "null"):
            return option
    return options[0]


def _infer_type(schema: dict[str, Any]) -> str:
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
        return "number"
    return "string"


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive), draft-04 boolean form included."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x = high_x = False
    xmin, xmax = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xmin, bool):
        low_x = xmin
    elif isinstance(xmin, (int, float)) and (low is None or xmin >= low):
        low, low_x = xmin, True
    if isinstance(xmax, bool):
        high_x = xmax
    elif isinstance(xmax, (int, float)) and (high is None or xmax <= high):
        high, high_x = xmax, True
    low = low if isinstance(low, (int, float)) and not isinstance(low, bool) else None
    high = high if isinstance(high, (int, float)) and not isinstance(high, bool) else None
    return low, low_x, high, high_x


def _integer(schema: dict[str, Any], salt: int) -> int:
    low, low_x, high, high_x = _bounds(schema)
    lo = None if low is None else (math.floor(low) + 1 if low_x else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if high_x else math.floor(high))
    step = schema.get("multipleOf")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
    value = 1 + salt if lo is None else lo + salt
    if hi is not None and value > hi:
        value = hi if lo is None else max(lo, hi - salt)
    value = -(-value // step) * step  # round up to a multiple
    if hi is not None and value > hi:
        value -= step
    return value


def _number(schema: dict[str, Any], salt: int) -> float | int:
    low, low_x, high, high_x = _bounds(schema)
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        start = 0.0 if low is None else low
        value: float = math.ceil(start / step) * step
        if low_x and value <= start:
            value += step
        return int(value) if float(value).is_integer() else value
    value = 1.5 + salt
    if low is not None and high is not None:
        return low if low == high else low + (high - low) * (salt + 1) / (salt + 2)
    if low is not None and (value < low or (low_x and value <= low)):
        value = low + 1.5 + salt
    if high is not None and (value > high or (high_x and value >= high)):
        value = high - 1.5 - salt
    return value
