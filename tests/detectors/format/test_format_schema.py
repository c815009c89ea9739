"""FormatDetector: response_format schemas, strict mode, tool calls, no leaked content."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import jsonschema_rs
import pytest

from detectors.base import Finding, TextContext
from detectors.format import FormatDetector, schemas

LEAK = "LEAKMARK"  # in document values and keys; must never reach a finding

ORDER = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "price": {"type": "number", "minimum": 0},
                    "name": {"type": "string", "maxLength": 5},
                },
                "required": ["price"],
            },
        },
        "status": {"enum": ["open", "closed"]},
    },
    "required": ["items"],
}

LOOSE = {  # as a strict schema must not be written: no required, no additionalProperties
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
    },
}


def schema_format(schema: Any, *, strict: bool | None = None, name: str = "order") -> dict:
    spec: dict[str, Any] = {"name": name, "schema": schema}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def run(detector: FormatDetector, text: str, context: TextContext) -> list[Finding]:
    (findings,) = detector.detect_sync([text], [context])
    return findings


def violations(document: Any, schema: Any, *, strict: bool | None = None) -> list[tuple]:
    text = json.dumps(document)
    ctx = TextContext(response_format=schema_format(schema, strict=strict))
    found = run(FormatDetector(), text, ctx)
    assert all(f.label == "json_schema_violation" for f in found), found
    assert all((f.start, f.end) == (0, len(text)) for f in found)
    assert all(f.metadata["schema"] == "order" for f in found)
    return [(f.metadata["path"], f.metadata["reason"], f.metadata["rule"]) for f in found]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"items": [{"price": 1, "name": "a"}], "status": "open"}, []),
        (
            {"items": [{"price": 1}, {"price": 2}, {"price": LEAK, "name": LEAK + "-long"}]},
            [  # in the validator's order: the schema's keywords as it walks them
                ("$.items[2].price", "must be number", "type"),
                ("$.items[2].name", "must be at most 5 characters long", "maxLength"),
            ],
        ),
        ({"items": [{"price": -1}]}, [("$.items[0].price", "must be >= 0", "minimum")]),
        ({"items": [{"name": "a"}]}, [("$.items[0].price", "is required", "required")]),
        ({}, [("$.items", "is required", "required")]),
        (
            {"items": [], "status": LEAK},
            [("$.status", "must be one of the allowed values", "enum")],
        ),
        ({"items": LEAK}, [("$.items", "must be array", "type")]),
        # not strict: extra properties are allowed
        ({"items": [{"price": 1, LEAK: 1}], LEAK: True}, []),
    ],
)
def test_schema_violations(document: Any, expected: list[tuple]) -> None:
    assert violations(document, ORDER) == expected


@pytest.mark.parametrize(
    ("document", "strict", "expected"),
    [
        ({"city": "Oslo", "where": {"lat": 1.5}}, True, []),
        # strict: every listed property is required ...
        (
            {"city": "Oslo"},
            True,
            [("$.where", "is required", "required")],
        ),
        (
            {"city": "Oslo", "where": {}},
            True,
            [("$.where.lat", "is required", "required")],
        ),
        # ... and objects are closed, nested ones too
        (
            {"city": "Oslo", "where": {"lat": 1.0, "secret_" + LEAK: 2}},
            True,
            [("$.where", "must not have additional properties", "additionalProperties")],
        ),
        # not strict (false or absent): the schema as written
        ({"city": "Oslo"}, False, []),
        ({"where": {"lat": 1.0, LEAK: 2}}, None, []),
    ],
)
def test_strict_mode(document: Any, strict: bool | None, expected: list[tuple]) -> None:
    assert violations(document, LOOSE, strict=strict) == expected


def test_strict_overrides_what_the_schema_says() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": True,
    }
    assert violations({"a": "x", "c": 1}, schema, strict=False) == []
    assert violations({"a": "x", "c": 1}, schema, strict=True) == [
        ("$.b", "is required", "required"),
        ("$", "must not have additional properties", "additionalProperties"),
    ]


def test_strict_applies_inside_defs_and_anyof() -> None:
    schema = {
        "type": "object",
        "properties": {
            "step": {"$ref": "#/$defs/step"},
            "value": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    assert violations({"step": {"n": 1}, "value": None}, schema, strict=True) == []
    assert violations({"step": {"n": 1, "x": 2}, "value": "v"}, schema, strict=True) == [
        ("$.step", "must not have additional properties", "additionalProperties")
    ]
    assert violations({"step": {"n": 1}, "value": 3}, schema, strict=True) == [
        ("$.value", "must match at least one schema in anyOf", "anyOf")
    ]


@pytest.mark.parametrize(
    ("schema", "document", "expected"),
    [
        ({"const": 3}, LEAK, [("$", "must equal the schema's const value", "const")]),
        # request regexes are enforced, on a linear-time engine (see the ReDoS tests)
        (
            {"type": "string", "pattern": "^[0-9]+$"},
            LEAK,
            [("$", "must match the schema's pattern", "pattern")],
        ),
        ({"type": "string", "pattern": "^[A-Z]+$"}, LEAK, []),
        ({"type": "string", "format": "email"}, LEAK, [("$", "must be a valid email", "format")]),
        (
            {"type": "string", "format": "no-such-format"},
            LEAK,
            [],  # unknown formats are ignored, as the specification says
        ),
        (
            {"type": "object", "additionalProperties": {"type": "number"}},
            {"my " + LEAK + " key": "v", "apiKey": LEAK},
            [("$['?']", "must be number", "type"), ("$['?']", "must be number", "type")],
        ),
        (
            {"type": "array", "uniqueItems": True},
            [LEAK, LEAK],
            [("$", "must have unique items", "uniqueItems")],
        ),
        (
            {"type": ["string", "null"]},
            5,
            [("$", "must be null or string", "type")],
        ),
        (
            {"type": "integer", "multipleOf": 3},
            4,
            [("$", "must be a multiple of 3", "multipleOf")],
        ),
        (
            {"type": "object", "propertyNames": {"maxLength": 3}},
            {LEAK: 1},
            [("$", "has a property name the schema does not allow", "propertyNames")],
        ),
    ],
)
def test_reasons_are_built_from_the_schema(schema: Any, document: Any, expected: list) -> None:
    assert violations(document, schema) == expected


def test_max_errors() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "number"} for i in range(20)}}
    document = {f"p{i}": LEAK for i in range(20)}
    text = json.dumps(document)
    ctx = TextContext(response_format=schema_format(schema))
    assert len(run(FormatDetector(), text, ctx)) == 8
    limited = FormatDetector(FormatDetector.Options(max_errors=2))
    assert [f.metadata["path"] for f in run(limited, text, ctx)] == ["$.p0", "$.p1"]


def test_extracted_document_is_validated_on_its_span() -> None:
    text = 'Here you go:\n```json\n{"items": [{"price": "' + LEAK + '"}]}\n```'
    found = run(FormatDetector(), text, TextContext(response_format=schema_format(ORDER)))
    assert [f.label for f in found] == ["json_not_strict", "json_schema_violation"]
    assert found[1].metadata["path"] == "$.items[0].price"
    assert (found[1].start, found[1].end) == (found[0].start, found[0].end)
    assert text[found[1].start : found[1].end].startswith('{"items"')


def test_json_schema_without_schema_checks_validity_only() -> None:
    ctx = TextContext(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert run(FormatDetector(), "[1]", ctx) == []
    assert [f.label for f in run(FormatDetector(), "nope", ctx)] == ["json_invalid"]


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"$ref": "http://127.0.0.1:9/schema.json"}, "only local $ref (#...) is allowed"),
        (
            {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
            "only local $ref (#...) is allowed",
        ),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "only local $ref (#...) is allowed"),
        ({"type": "nonsense"}, "invalid schema"),
        (["not", "a", "schema"], "a schema must be an object or a boolean"),
        ({"type": "object", "properties": {"a": 5}}, "a schema must be an object or a boolean"),
    ],
)
def test_unusable_schemas_are_reported_never_fetched(
    schema: Any, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a schema made the detector open a URL")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    ctx = TextContext(response_format=schema_format(schema))
    for _ in range(2):  # the second time from the cache
        (finding,) = run(FormatDetector(), '{"a": 1}', ctx)
        assert finding.label == "json_schema_unsupported"
        assert dict(finding.metadata) == {"reason": reason, "schema": "order"}


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:9/s.json",
        "https://x.invalid/s",
        "file:///etc/passwd",
        "ftp://x/s",
        "data:application/json,{}",
        "relative.json",
    ],
)
def test_resolver_handlers_refuse_every_scheme(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Second line of defence, under the local-$ref check: even a remote $ref reaching
    # the validator is refused by its retriever; nothing is opened.
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the validator opened a URL")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    asked: list[str] = []

    def retriever(requested: str) -> Any:
        asked.append(requested)
        return schemas._refuse_remote(requested)

    with pytest.raises(jsonschema_rs.ValidationError):
        jsonschema_rs.validator_for({"$ref": uri}, retriever=retriever)
    assert len(asked) <= 1  # refused at once (or not even a URI the validator would ask for)


INJECTIONS = [
    '"); __import__("os").environ.__setitem__("RW_PWNED", "1")  #',
    "'); __import__('os').environ.__setitem__('RW_PWNED', '1')  #",
    '\\"); __import__("os").environ.__setitem__("RW_PWNED", "1")  #',
    '{__import__("os").environ.__setitem__("RW_PWNED", "1")}',
    '\n__import__("os").environ.__setitem__("RW_PWNED", "1")\n',
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_hostile_schemas_do_not_run_code(payload: str) -> None:
    schemas = [
        {"type": "object", "properties": {payload: {"type": "string"}}, "required": [payload]},
        {"enum": [payload]},
        {"const": payload},
        {"type": "string", "pattern": payload},
        {"type": "string", "format": payload},
        {"type": "object", "patternProperties": {payload: {"type": "number"}}},
        {"definitions": {payload: {"type": "number"}}, "$ref": "#/definitions/" + payload},
        {"type": "object", "additionalProperties": False, "properties": {payload: {}}},
    ]
    detector = FormatDetector()
    for schema in schemas:
        for document in ({payload: 1}, payload, {"x": payload}):
            ctx = TextContext(response_format=schema_format(schema, strict=True))
            found = run(detector, json.dumps(document), ctx)
            assert all(
                f.label in ("json_schema_violation", "json_schema_unsupported") for f in found
            )
    assert "RW_PWNED" not in os.environ


def test_schema_cache_is_canonical_and_bounded() -> None:
    detector = FormatDetector(FormatDetector.Options(schema_cache_size=2))
    a = {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "string"}}}
    a_reordered = {
        "properties": {"y": {"type": "string"}, "x": {"type": "number"}},
        "type": "object",
    }
    for schema in (a, a_reordered, a):
        run(detector, '{"x": 1}', TextContext(response_format=schema_format(schema)))
    state = detector.state()
    assert (state["schemas_cached"], state["schema_cache_misses"], state["schema_cache_hits"]) == (
        1,
        1,
        2,
    )
    # strictness is part of the key
    run(detector, '{"x": 1}', TextContext(response_format=schema_format(a, strict=True)))
    assert detector.state()["schema_cache_misses"] == 2
    for i in range(5):
        schema = {"type": "object", "properties": {f"k{i}": {"type": "number"}}}
        run(detector, "{}", TextContext(response_format=schema_format(schema)))
    assert detector.state()["schemas_cached"] == 2


# -- tool calls ----------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
STRICT_SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "strict": True,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
NO_PARAMS = {"type": "function", "function": {"name": "now"}}
TOOLS = [WEATHER, STRICT_SEARCH, NO_PARAMS]


def tool_findings(calls: list[Any], tools: Any = TOOLS, **options: Any) -> list[tuple]:
    ctx = TextContext(tools=tools, tool_calls=calls)
    found = run(FormatDetector(FormatDetector.Options(**options)), "", ctx)
    assert all((f.start, f.end) == (0, 0) for f in found)
    return [(f.label, dict(f.metadata)) for f in found]


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([{"name": "get_weather", "arguments": '{"city": "Oslo", "days": 3}'}], []),
        ([{"name": "now", "arguments": '{"anything": true}'}], []),
        ([{"name": "now", "arguments": ""}], []),  # empty reads as {}
        ([{"name": "search", "arguments": '{"q": "x"}'}], []),
        (
            [{"name": "get_wether", "arguments": "{}"}],
            [("tool_call_unknown", {"index": 0, "tool": "get_wether"})],
        ),
        (
            [{"name": f"drop table {LEAK}", "arguments": "{}"}],
            [("tool_call_unknown", {"index": 0})],  # not an identifier: not repeated
        ),
        (
            [
                {"name": "now", "arguments": "{}"},
                {"name": "get_weather", "arguments": '{"city": ' + LEAK},
            ],
            [
                (
                    "tool_call_json_invalid",
                    {"index": 1, "tool": "get_weather", "reason": "Expecting value", "offset": 9},
                )
            ],
        ),
        (
            [{"name": "get_weather", "arguments": "[1]"}],
            [
                (
                    "tool_call_schema_violation",
                    {
                        "index": 0,
                        "tool": "get_weather",
                        "path": "$",
                        "reason": "must be object",
                        "rule": "type",
                    },
                )
            ],
        ),
        (
            [{"name": "get_weather", "arguments": '{"city": 5, "days": "' + LEAK + '"}'}],
            [
                (
                    "tool_call_schema_violation",
                    {
                        "index": 0,
                        "tool": "get_weather",
                        "path": "$.city",
                        "reason": "must be string",
                        "rule": "type",
                    },
                ),
                (
                    "tool_call_schema_violation",
                    {
                        "index": 0,
                        "tool": "get_weather",
                        "path": "$.days",
                        "reason": "must be integer",
                        "rule": "type",
                    },
                ),
            ],
        ),
        (
            [{"name": "get_weather", "arguments": ""}],
            [
                (
                    "tool_call_schema_violation",
                    {
                        "index": 0,
                        "tool": "get_weather",
                        "path": "$.city",
                        "reason": "is required",
                        "rule": "required",
                    },
                )
            ],
        ),
        (
            [{"name": "search", "arguments": '{"q": "x", "' + LEAK + '": 1}'}],
            [
                (
                    "tool_call_schema_violation",
                    {
                        "index": 0,
                        "tool": "search",
                        "path": "$",
                        "reason": "must not have additional properties",
                        "rule": "additionalProperties",
                    },
                )
            ],
        ),
        # the OpenAI wire shape is accepted too
        (
            [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
            [],
        ),
        (
            [{"name": "get_weather", "arguments": 5}],
            [
                (
                    "tool_call_json_invalid",
                    {
                        "index": 0,
                        "tool": "get_weather",
                        "reason": "arguments must be a JSON string",
                        "offset": 0,
                    },
                )
            ],
        ),
    ],
)
def test_tool_calls(calls: list[Any], expected: list[tuple]) -> None:
    assert tool_findings(calls) == expected


@pytest.mark.parametrize("tools", [None, []])
def test_tool_calls_without_declared_tools_are_unknown(tools: Any) -> None:
    assert tool_findings([{"name": "now", "arguments": "{}"}], tools=tools) == [
        ("tool_call_unknown", {"index": 0, "tool": "now"})
    ]


def test_tool_calls_can_be_switched_off() -> None:
    assert tool_findings([{"name": "nope", "arguments": "x"}], check_tool_calls=False) == []


def test_tool_calls_on_input_stage_are_not_checked() -> None:
    ctx = TextContext(stage="input", tools=TOOLS, tool_calls=[{"name": "nope"}])
    assert run(FormatDetector(), "", ctx) == []


def test_no_finding_ever_contains_document_content() -> None:
    detector = FormatDetector(FormatDetector.Options(require_json=True))
    texts_and_contexts: list[tuple[str, TextContext]] = []
    documents = [
        {"items": [{"price": LEAK, "name": LEAK * 3, LEAK: LEAK}], "status": LEAK, LEAK: 1},
        {LEAK: [LEAK], "my " + LEAK: {"nested " + LEAK: LEAK}},
        [LEAK, LEAK],
        LEAK,
    ]
    schemas = [
        ORDER,
        LOOSE,
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object", "patternProperties": {"^L": {"type": "integer"}}},
        {"type": "object", "propertyNames": {"maxLength": 2}, "dependencies": {LEAK: ["z"]}},
        {"enum": ["a"], "not": {"type": "object"}},
        {"oneOf": [{"type": "object"}, {"type": "object"}]},
    ]
    for document in documents:
        text = json.dumps(document)
        for schema in schemas:
            for strict in (True, False):
                ctx = TextContext(response_format=schema_format(schema, strict=strict))
                texts_and_contexts.append((text, ctx))
                texts_and_contexts.append((f"Sure: ```json\n{text}\n``` ({LEAK})", ctx))
    texts_and_contexts.append((f"{LEAK} is not JSON", TextContext()))
    texts_and_contexts.append(
        (
            "",
            TextContext(
                tools=TOOLS,
                tool_calls=[
                    {"name": LEAK + " tool", "arguments": "{}"},
                    {"name": "get_weather", "arguments": '{"' + LEAK + '": "' + LEAK + '"}'},
                    {"name": "search", "arguments": '{"q": 1, "' + LEAK + '": 2}'},
                    {"name": "get_weather", "arguments": LEAK},
                ],
            ),
        )
    )
    texts = [t for t, _ in texts_and_contexts]
    found = detector.detect_sync(texts, [c for _, c in texts_and_contexts])
    labels = {f.label for findings in found for f in findings}
    assert labels >= {
        "json_schema_violation",
        "json_not_strict",
        "json_invalid",
        "tool_call_unknown",
        "tool_call_schema_violation",
        "tool_call_json_invalid",
    }
    for findings in found:
        for finding in findings:
            dumped = json.dumps(dict(finding.metadata))
            assert LEAK.lower() not in dumped.lower(), (finding.label, dumped)


CATASTROPHIC = "^(a+)+$"  # exponential on a backtracking engine for "aaaa...a!"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("length", [41, 5_000, 200_000])
def test_catastrophic_patterns_are_enforced_in_linear_time(length: int) -> None:
    """On Python's `re` this would backtrack for longer than the universe has existed
    (2**41 steps at 41 characters); pytest-timeout fails the test if it hangs."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": CATASTROPHIC}}}
    ctx = TextContext(response_format=schema_format(schema, strict=True))
    bad = json.dumps({"a": "a" * length + "!"})
    assert [(f.metadata["path"], f.metadata["rule"]) for f in run(FormatDetector(), bad, ctx)] == [
        ("$.a", "pattern")
    ]
    assert run(FormatDetector(), json.dumps({"a": "a" * length}), ctx) == []


@pytest.mark.timeout(20)
def test_catastrophic_pattern_properties_are_enforced_in_linear_time() -> None:
    schema = {
        "type": "object",
        "patternProperties": {CATASTROPHIC: {"type": "integer"}},
        "additionalProperties": False,
    }
    ctx = TextContext(response_format=schema_format(schema, strict=False))
    key = "a" * 5_000
    assert run(FormatDetector(), json.dumps({key: 1}), ctx) == []
    found = run(FormatDetector(), json.dumps({key: "x", key + "!": 1}), ctx)
    # the path never names a key only the document has; the rule says what broke
    assert [(f.metadata["path"], f.metadata["rule"]) for f in found] == [
        ("$['?']", "type"),
        ("$", "additionalProperties"),
    ]


@pytest.mark.timeout(20)
def test_patterns_the_linear_engine_lacks_are_backtrack_bounded() -> None:
    """Lookaround and backreferences run on fancy-regex with a backtrack limit."""
    schema = {"type": "string", "pattern": r"^(?=x)(x+)+\1$"}
    ctx = TextContext(response_format=schema_format(schema))
    assert run(FormatDetector(), json.dumps("xxxx"), ctx) == []
    found = run(FormatDetector(), json.dumps("x" * 5_000 + "!"), ctx)
    assert [(f.metadata["path"], f.metadata["rule"]) for f in found] == [("$", "pattern")]


def test_pattern_violation_metadata_names_path_and_rule_never_the_value() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "required": ["code"],
    }
    ctx = TextContext(response_format=schema_format(schema))
    (finding,) = run(FormatDetector(), json.dumps({"code": LEAK.lower()}), ctx)
    assert dict(finding.metadata) == {
        "path": "$.code",
        "reason": "must match the schema's pattern",
        "rule": "pattern",
        "schema": "order",
    }
