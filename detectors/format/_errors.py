"""Text-free violations from jsonschema-rs errors: a path, a rule and a reason.

jsonschema-rs' messages and its error ``kind`` can quote the document (the value
that failed, ``unexpected`` property names). None of that is used: the rule is
the failing keyword, the reason is built from the schema's side of it (a limit, a
type list, a format name), and the path keeps array indexes and only those object
keys that the schema itself names (in ``properties``, ``required`` or
``dependencies``) and that look like identifiers (``[A-Za-z_][\\w-]*``, up to 64
characters). Any other key, one that only the document has, is written ``['?']``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Violation", "safe_name", "violation"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_KNOWN_FORMATS = frozenset(
    {
        "date-time", "date", "time", "duration", "email", "hostname", "idn-hostname",
        "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "regex",
        "json-pointer", "relative-json-pointer", "uri-template", "idn-email",
    }
)  # fmt: skip


def safe_name(value: object) -> str | None:
    """``value`` if it looks like an identifier (a tool or schema name), else None."""
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return value
    return None


@dataclass(frozen=True, slots=True)
class Violation:
    """One schema error: a JSONPath-like ``path``, a text-free ``reason``, the ``rule``."""

    path: str
    reason: str
    rule: str


def json_path(segments: Sequence[Any], known: frozenset[str]) -> str:
    """``["items", 2, "price"]`` as ``$.items[2].price``; unknown keys as ``['?']``."""
    parts = ["$"]
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif segment in known and safe_name(segment):
            parts.append(f".{segment}")
        else:
            parts.append("['?']")
    return "".join(parts)


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _types(value: Any) -> str:
    names = [t for t in (value if isinstance(value, list) else [value]) if t in _JSON_TYPES]
    return " or ".join(names) or "of the schema's type"


def _format(value: Any) -> str:
    if isinstance(value, str) and value in _KNOWN_FORMATS:
        return f"must be a valid {value}"
    return "must match the schema's format"


# keyword -> (reason template, the error kind's attribute holding the schema's value)
_REASONS: dict[str, tuple[str, str | None]] = {
    "enum": ("must be one of the allowed values", None),
    "const": ("must equal the schema's const value", None),
    "additionalProperties": ("must not have additional properties", None),
    "unevaluatedProperties": ("must not have properties the schema does not evaluate", None),
    "minimum": ("must be >= {}", "limit"),
    "maximum": ("must be <= {}", "limit"),
    "exclusiveMinimum": ("must be > {}", "limit"),
    "exclusiveMaximum": ("must be < {}", "limit"),
    "multipleOf": ("must be a multiple of {}", "multiple_of"),
    "minLength": ("must be at least {} characters long", "limit"),
    "maxLength": ("must be at most {} characters long", "limit"),
    "pattern": ("must match the schema's pattern", None),
    "minItems": ("must have at least {} items", "limit"),
    "maxItems": ("must have at most {} items", "limit"),
    "uniqueItems": ("must have unique items", None),
    "items": ("must not have items beyond those the schema lists", None),
    "additionalItems": ("must not have items beyond those the schema lists", None),
    "unevaluatedItems": ("must not have items the schema does not evaluate", None),
    "contains": ("must contain an item matching the schema's contains", None),
    "minProperties": ("must have at least {} properties", "limit"),
    "maxProperties": ("must have at most {} properties", "limit"),
    "propertyNames": ("has a property name the schema does not allow", None),
    "dependentRequired": ("is missing a property another property depends on", None),
    "dependencies": ("is missing a property another property depends on", None),
    "anyOf": ("must match at least one schema in anyOf", None),
    "oneOf": ("must match exactly one schema in oneOf", None),
    "not": ("must not match the schema in not", None),
    "falseSchema": ("is not allowed by the schema", None),
}


def violation(error: Any, known: frozenset[str]) -> Violation:
    """A text-free :class:`Violation` for one ``jsonschema_rs.ValidationError``."""
    kind = error.kind
    rule = str(getattr(kind, "name", ""))
    path = json_path(error.instance_path, known)
    kind_name = type(kind).__name__
    if kind_name == "BacktrackLimitExceeded":
        return Violation(path, "could not be checked against the schema's pattern", "pattern")
    if rule == "required":
        prop = getattr(kind, "property", None)
        name = prop if isinstance(prop, str) and prop in known and safe_name(prop) else None
        return Violation(f"{path}.{name}" if name else f"{path}['?']", "is required", rule)
    if rule == "type":
        return Violation(path, f"must be {_types(getattr(kind, 'types', None))}", rule)
    if rule == "format":
        return Violation(path, _format(getattr(kind, "format", None)), rule)
    template, attribute = _REASONS.get(rule, ("does not match the schema", None))
    if rule not in _REASONS:
        rule = "schema"
    if attribute is not None:
        template = template.format(_number(getattr(kind, attribute, None)))
    return Violation(path, template, rule)
