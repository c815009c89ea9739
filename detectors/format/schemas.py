"""JSON Schemas from requests: preparation, compiled-validator cache, safe errors.

Schemas arrive with requests (``response_format.json_schema.schema``, each tool's
``function.parameters``), so they are untrusted input and they repeat: compile each
distinct one once (fastjsonschema generates Python code, about 2.5 ms; validating a
1 KB document with 20 properties then takes about 5-8 µs here) and keep the
validators in a bounded LRU keyed by the schema's canonical JSON (sorted keys) and
its strictness.

What is enforced
----------------

- JSON Schema as fastjsonschema implements it (drafts 4, 6, 7 and 2019-09's
  formats; a schema without ``$schema`` is read as draft 7 plus those formats).
  Draft 2020-12-only keywords (``prefixItems``, ``unevaluatedProperties``,
  ``dependentRequired``...) are ignored; ``$defs`` with ``#/$defs/...`` references
  works. Unknown ``format`` names are ignored, as the specification says.
- ``strict: true`` (OpenAI structured outputs): OpenAI only accepts a strict schema
  in which every object lists all its properties in ``required`` and sets
  ``additionalProperties: false`` ("optional" is spelled as a union with ``null``),
  and then guarantees the answer matches. Servers behind this sidecar may not check
  the schema, so the detector enforces what strict promises: every subschema that
  has ``properties`` is read as closed (``additionalProperties: false``) with all
  of them required, whatever the schema says. Subschemas without ``properties``
  are left as written. ``strict`` absent or false: the schema is used as written.
- Only local references (``#...``) are allowed. A schema with any other ``$ref``
  is not compiled (``unsupported``), and the resolver is given handlers that refuse
  every URL scheme, so no schema can make the sidecar fetch a URL or read a file.

Errors
------

fastjsonschema's messages and paths can quote the document (``must not contain
{'password'} properties``, keys from ``additionalProperties``). Only the keyword
(``rule``) and the schema's own side of it are used to build a reason; a path keeps
array indexes, and object keys that the schema itself names (in ``properties``,
``required`` or ``dependencies``) and that look like identifiers
(``[A-Za-z_][\\w-]*``, up to 64 characters); any other key, one that only the document
has, is written ``['?']``. fastjsonschema joins the path
with dots, so a key that itself contains ``.`` or ``[`` shows as several segments.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

__all__ = ["CompiledSchema", "SchemaCache", "UnsupportedSchema", "Violation", "safe_name"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_NAME_PART = re.compile(r"\.([^.\[\]]*)|\[([^\]]*)\]")
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_KNOWN_FORMATS = frozenset(
    {
        "date-time", "date", "time", "duration", "email", "hostname", "idn-hostname",
        "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "regex",
        "json-pointer", "relative-json-pointer", "uri-template",
    }
)  # fmt: skip

# Keywords whose value is a schema, a list of schemas, or a name -> schema mapping.
_ONE_SCHEMA = (
    "additionalItems", "additionalProperties", "contains", "else", "if", "items", "not",
    "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")


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


class UnsupportedSchema(Exception):
    """The schema cannot be used (remote ``$ref``, not a schema, fails to compile)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse_remote(uri: str) -> Any:
    raise UnsupportedSchema("remote $ref")


# Every scheme urllib would open; anything else makes urllib fail without I/O.
_HANDLERS: dict[str, Callable[[str], Any]] = {
    scheme: _refuse_remote for scheme in ("", "http", "https", "ftp", "file", "data")
}


def _prepare(schema: Any, strict: bool, names: set[str], depth: int = 0) -> Any:
    """A copy of ``schema`` with strict semantics applied; raises UnsupportedSchema.

    Adds every property name the schema mentions to ``names``.
    """
    if depth > 64:
        raise UnsupportedSchema("schema nested too deeply")
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema("a schema must be an object or a boolean")
    out: dict[str, Any] = dict(schema)
    # Regexes in a request's schema come from the client and would run with Python's
    # backtracking engine on text the model wrote: one `^(a+)+b$` holds the event loop
    # for seconds (ReDoS). They are not evaluated: `pattern` is dropped, and
    # `patternProperties` with it (its keys are regexes too), relaxing a sibling
    # `additionalProperties: false` that relied on them.
    out.pop("pattern", None)
    if out.pop("patternProperties", None) is not None and out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    ref = out.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
        raise UnsupportedSchema("only local $ref (#...) is allowed")
    for key in _ONE_SCHEMA:
        if key in out and not (key == "items" and isinstance(out[key], list)):
            out[key] = _prepare(out[key], strict, names, depth + 1)
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_prepare(item, strict, names, depth + 1) for item in out[key]]
    for key in _SCHEMA_MAPS:
        value = out.get(key)
        if isinstance(value, Mapping):
            out[key] = {
                name: _prepare(sub, strict, names, depth + 1) for name, sub in value.items()
            }
    dependencies = out.get("dependencies")
    if isinstance(dependencies, Mapping):
        out["dependencies"] = {
            name: sub if isinstance(sub, list) else _prepare(sub, strict, names, depth + 1)
            for name, sub in dependencies.items()
        }
        names.update(k for k in dependencies if isinstance(k, str))
    properties = out.get("properties")
    if isinstance(properties, Mapping):
        names.update(k for k in properties if isinstance(k, str))
    required = out.get("required")
    if isinstance(required, list):
        names.update(k for k in required if isinstance(k, str))
    if strict and isinstance(out.get("properties"), Mapping):
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


def _path(name: str | None, known: frozenset[str]) -> str:
    """fastjsonschema's ``data.items[2].price`` as ``$.items[2].price``.

    A key is kept only when the schema names it and it looks like an identifier.
    """
    if not name or not name.startswith("data"):
        return "$"
    parts = ["$"]
    for match in _NAME_PART.finditer(name, 4):
        key, index = match.group(1), match.group(2)
        if index is not None and index.isdigit():
            parts.append(f"[{index}]")
        else:
            segment = key if key is not None else index
            keep = segment in known and safe_name(segment)
            parts.append(f".{segment}" if keep else "['?']")
    return "".join(parts)


def _type_phrase(definition: Any) -> str:
    types = definition if isinstance(definition, list) else [definition]
    names = [t for t in types if isinstance(t, str) and t in _JSON_TYPES]
    return " or ".join(names) or "of the schema's type"


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _violations(
    exc: fastjsonschema.JsonSchemaValueException, known: frozenset[str]
) -> list[Violation]:
    """Text-free violations for one fastjsonschema error (``required`` may give several)."""
    rule = exc.rule if isinstance(exc.rule, str) else ""
    definition = exc.rule_definition
    path = _path(exc.name, known)
    if rule == "required":
        present = exc.value if isinstance(exc.value, dict) else {}
        missing = [k for k in definition or () if isinstance(k, str) and k not in present]
        return [
            Violation(f"{path}.{k}" if safe_name(k) else f"{path}['?']", "is required", rule)
            for k in missing
        ] or [Violation(path, "is missing a required property", rule)]
    reasons: dict[str, str] = {
        "type": f"must be {_type_phrase(definition)}",
        "enum": "must be one of the allowed values",
        "const": "must equal the schema's const value",
        "additionalProperties": "must not have additional properties",
        "minimum": f"must be >= {_number(definition)}",
        "maximum": f"must be <= {_number(definition)}",
        "exclusiveMinimum": f"must be > {_number(definition)}",
        "exclusiveMaximum": f"must be < {_number(definition)}",
        "multipleOf": f"must be a multiple of {_number(definition)}",
        "minLength": f"must be at least {_number(definition)} characters long",
        "maxLength": f"must be at most {_number(definition)} characters long",
        "pattern": "must match the schema's pattern",
        "format": (
            f"must be a valid {definition}"
            if isinstance(definition, str) and definition in _KNOWN_FORMATS
            else "must match the schema's format"
        ),
        "minItems": f"must have at least {_number(definition)} items",
        "maxItems": f"must have at most {_number(definition)} items",
        "uniqueItems": "must have unique items",
        "items": "must not have items beyond those the schema lists",
        "additionalItems": "must not have items beyond those the schema lists",
        "contains": "must contain an item matching the schema's contains",
        "minProperties": f"must have at least {_number(definition)} properties",
        "maxProperties": f"must have at most {_number(definition)} properties",
        "propertyNames": "has a property name the schema does not allow",
        "dependencies": "is missing a property another property depends on",
        "anyOf": "must match at least one schema in anyOf",
        "oneOf": "must match exactly one schema in oneOf",
        "not": "must not match the schema in not",
    }
    reason = reasons.get(rule, "does not match the schema")
    return [Violation(path, reason, rule if rule in reasons else "schema")]


class CompiledSchema:
    """A compiled validator; :meth:`errors` lists up to ``limit`` violations.

    Violations come in the order the generated code meets them: ``required`` before
    the properties, properties in sorted key order (the schema is compiled from its
    canonical, key-sorted form), ``additionalProperties`` last.
    """

    __slots__ = ("_known", "_validate")

    def __init__(self, validate: Callable[[Any], Any], known: frozenset[str]) -> None:
        self._validate = validate
        self._known = known  # property names the schema itself mentions

    def errors(self, document: Any, limit: int) -> list[Violation]:
        """Violations of ``document`` (empty when valid); never raises."""
        try:
            self._validate(document)
        except fastjsonschema.JsonSchemaValuesException as exc:
            found: list[Violation] = []
            for error in exc.errors:
                found.extend(_violations(error, self._known))
                if len(found) >= limit:
                    break
            return found[:limit]
        except fastjsonschema.JsonSchemaValueException as exc:
            return _violations(exc, self._known)[:limit]
        except RecursionError:
            return [Violation("$", "nested too deeply to validate", "schema")]
        except Exception:  # noqa: BLE001 - generated code on odd input; report, never raise
            return [Violation("$", "could not be validated against the schema", "schema")]
        return []


def _canonical_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(type(value).__name__)


class SchemaCache:
    """Bounded LRU of compiled schemas (and of schemas found unusable).

    Thread-safe; :meth:`get` compiles on a miss, in the caller's thread (a few ms).
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        # an unusable schema is cached as its reason, and raised afresh each time
        self._entries: OrderedDict[bytes, CompiledSchema | str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, schema: Any, strict: bool) -> CompiledSchema:
        """The validator for ``schema``; raises :class:`UnsupportedSchema`."""
        try:
            canonical = orjson.dumps(
                schema, default=_canonical_default, option=orjson.OPT_SORT_KEYS
            )
        except (TypeError, orjson.JSONEncodeError):
            raise UnsupportedSchema("schema is not JSON") from None
        key = (b"S" if strict else b"L") + canonical
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if entry is None:
            entry = self._compile(orjson.loads(canonical), strict)
            with self._lock:
                self.misses += 1
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        if isinstance(entry, str):
            raise UnsupportedSchema(entry)
        return entry

    @staticmethod
    def _compile(schema: Any, strict: bool) -> CompiledSchema | str:
        try:
            names: set[str] = set()
            prepared = _prepare(schema, strict, names)
            validate = fastjsonschema.compile(
                prepared,
                handlers=_HANDLERS,
                use_default=False,  # never fill defaults into the checked document
                fast_fail=False,  # every violation, not only the first
            )
        except UnsupportedSchema as exc:
            return exc.reason
        except RecursionError:
            return "schema nested too deeply"
        except Exception as exc:  # noqa: BLE001 - a bad request schema is reported, not raised
            if isinstance(exc, fastjsonschema.JsonSchemaException):
                return "invalid schema"
            return f"schema failed to compile ({type(exc).__name__})"
        return CompiledSchema(validate, frozenset(names))
