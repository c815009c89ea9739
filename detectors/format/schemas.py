"""JSON Schemas from requests: preparation, compiled-validator cache, safe errors.

Schemas arrive with requests (``response_format.json_schema.schema``, each tool's
``function.parameters``), so they are untrusted input and they repeat: compile each
distinct one once and keep the validators in a bounded LRU keyed by the schema's
canonical JSON (sorted keys) and its strictness.

The validator is jsonschema-rs (Rust; Draft 4, 6, 7, 2019-09 and 2020-12, the
latter the default without ``$schema``, recursive ``$ref`` and ``$dynamicRef``).
A schema without ``$schema`` that writes ``items`` as a list (draft 7's tuple
form) is read as draft 7. ``format`` is asserted for the formats the
specification names; unknown formats are ignored.

Regexes (``pattern``, ``patternProperties``) come from the client and run on text
the model wrote, so they must not backtrack: they run on Rust's ``regex`` engine,
which is linear in the input (``^(a+)+$`` against any string costs microseconds).
A pattern that engine cannot compile (lookaround, backreferences) falls back to
``fancy-regex`` with a backtrack limit of ``BACKTRACK_LIMIT`` steps; a string it
cannot decide within the limit is a violation (``pattern``): fail closed.

Strict mode
-----------

``strict: true`` (OpenAI structured outputs) implies OpenAI's strict rules even
where the schema does not spell them out: every subschema with ``properties`` is
read as closed (``additionalProperties: false``) with all of them required,
whatever the schema says. OpenAI accepts only such schemas and then guarantees
the answer matches; a server behind this sidecar may not check the schema, so the
detector holds the answer to what strict promises the client ("optional" is a
union with ``null``, still present). Subschemas without ``properties`` are left
as written, and so are the members of an ``allOf``: each is a fragment of one
object, and closing each would reject every document that has the others'
properties. ``strict`` absent or false: the schema is used as written.

References and safety
---------------------

Only local references (``#...``) are allowed. A schema with any other ``$ref`` or
``$dynamicRef`` is not compiled (``unsupported``), and the validator's retriever
refuses every URI, so no schema can make the sidecar fetch a URL or read a file.
Errors are reported without document content: see :mod:`._errors`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson

from detectors.format._errors import Violation, safe_name, violation

__all__ = ["CompiledSchema", "SchemaCache", "UnsupportedSchema", "Violation", "safe_name"]

BACKTRACK_LIMIT = 10_000
"""Steps fancy-regex may backtrack per match, for patterns the linear engine lacks."""
# Rust regex's own limits on compiled program size (bytes): a request's pattern
# may not make a huge automaton either.
_REGEX_SIZE_LIMIT = 1 << 20
_LINEAR = jsonschema_rs.RegexOptions(size_limit=_REGEX_SIZE_LIMIT, dfa_size_limit=_REGEX_SIZE_LIMIT)
_BOUNDED = jsonschema_rs.FancyRegexOptions(
    backtrack_limit=BACKTRACK_LIMIT, size_limit=_REGEX_SIZE_LIMIT, dfa_size_limit=_REGEX_SIZE_LIMIT
)

# Keywords whose value is a schema, a list of schemas, or a name -> schema mapping.
_ONE_SCHEMA = (
    "additionalItems", "additionalProperties", "contains", "else", "if", "items", "not",
    "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")


class UnsupportedSchema(Exception):
    """The schema cannot be used (remote ``$ref``, not a schema, fails to compile)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse_remote(uri: str) -> Any:
    """The validator's retriever: no schema is ever fetched."""
    raise ValueError("remote references are not retrieved")


@dataclass(slots=True)
class _Seen:
    """What :func:`_prepare` noticed on its walk."""

    names: set[str] = field(default_factory=set)  # property names the schema mentions
    patterns: bool = False  # any pattern / patternProperties
    tuple_items: bool = False  # ``items`` as a list (draft 7's tuple form)


def _prepare(schema: Any, strict: bool, seen: _Seen, depth: int = 0, fragment: bool = False) -> Any:
    """A copy of ``schema`` with strict semantics applied; raises UnsupportedSchema.

    ``fragment``: the subschema is an ``allOf`` member (strict does not close it).
    Records property names, patterns and tuple-form ``items`` in ``seen``.
    """
    if depth > 64:
        raise UnsupportedSchema("schema nested too deeply")
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema("a schema must be an object or a boolean")
    out: dict[str, Any] = dict(schema)
    for key in ("$ref", "$dynamicRef", "$recursiveRef"):
        ref = out.get(key)
        if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
            raise UnsupportedSchema("only local $ref (#...) is allowed")
    if "pattern" in out or "patternProperties" in out:
        seen.patterns = True
    if isinstance(out.get("items"), list):
        seen.tuple_items = True
    for key in _ONE_SCHEMA:
        if key in out and not (key == "items" and isinstance(out[key], list)):
            out[key] = _prepare(out[key], strict, seen, depth + 1)
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            member = key == "allOf"
            out[key] = [_prepare(item, strict, seen, depth + 1, member) for item in out[key]]
    for key in _SCHEMA_MAPS:
        value = out.get(key)
        if isinstance(value, Mapping):
            out[key] = {name: _prepare(sub, strict, seen, depth + 1) for name, sub in value.items()}
    names = seen.names
    for key in ("dependencies", "dependentRequired"):
        value = out.get(key)
        if isinstance(value, Mapping):
            names.update(k for k in value if isinstance(k, str))
            if key == "dependencies":
                out[key] = {
                    name: sub if isinstance(sub, list) else _prepare(sub, strict, seen, depth + 1)
                    for name, sub in value.items()
                }
    properties = out.get("properties")
    if isinstance(properties, Mapping):
        names.update(k for k in properties if isinstance(k, str))
    required = out.get("required")
    if isinstance(required, list):
        names.update(k for k in required if isinstance(k, str))
    if strict and not fragment and isinstance(properties, Mapping):
        out["additionalProperties"] = False
        out["required"] = list(properties)
    return out


class CompiledSchema:
    """A compiled validator; :meth:`errors` lists up to ``limit`` violations."""

    __slots__ = ("_known", "_validator")

    def __init__(self, validator: Any, known: frozenset[str]) -> None:
        self._validator = validator
        self._known = known  # property names the schema itself mentions

    def errors(self, document: Any, limit: int) -> list[Violation]:
        """Violations of ``document`` (empty when valid); never raises.

        Linear in the document for every schema this module compiles (regexes
        included); a ``BACKTRACK_LIMIT``-bounded pattern is the only exception.
        """
        found: list[Violation] = []
        try:
            if self._validator.is_valid(document):
                return found
            for error in self._validator.iter_errors(document):
                found.append(violation(error, self._known))
                if len(found) >= limit:
                    break
        except RecursionError:
            return [Violation("$", "nested too deeply to validate", "schema")]
        except Exception:  # noqa: BLE001 - odd input (non-JSON types); report, never raise
            return [Violation("$", "could not be validated against the schema", "schema")]
        return found


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
            seen = _Seen()
            prepared = _prepare(schema, strict, seen)
        except UnsupportedSchema as exc:
            return exc.reason
        except RecursionError:
            return "schema nested too deeply"
        draft7 = seen.tuple_items and "$schema" not in prepared
        make = jsonschema_rs.Draft7Validator if draft7 else jsonschema_rs.validator_for
        options: dict[str, Any] = {
            "validate_formats": True,
            "ignore_unknown_formats": True,
            "retriever": _refuse_remote,
        }
        try:
            validator = make(prepared, pattern_options=_LINEAR, **options)
        except jsonschema_rs.ValidationError:
            if not seen.patterns:
                return "invalid schema"
            try:  # lookaround or backreferences: the backtrack-bounded engine
                validator = make(prepared, pattern_options=_BOUNDED, **options)
            except jsonschema_rs.ValidationError:
                return "invalid schema"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                return f"schema failed to compile ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - a bad request schema is reported, not raised
            return f"schema failed to compile ({type(exc).__name__})"
        return CompiledSchema(validator, frozenset(seen.names))
