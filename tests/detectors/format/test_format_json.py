"""FormatDetector: JSON validity, extraction from fences and prose, when it checks."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.base import TextContext
from detectors.format import FormatDetector
from detectors.format.parsing import extract, parse_strict

JSON_OBJECT = {"type": "json_object"}


def out(response_format: Any = None, **kw: Any) -> TextContext:
    return TextContext(stage="output", response_format=response_format, **kw)


def check(text: str, context: TextContext | None, **options: Any) -> list[tuple]:
    detector = FormatDetector(FormatDetector.Options(**options))
    contexts = None if context is None else [context]
    (findings,) = detector.detect_sync([text], contexts)
    assert all(f.detector == "format" and f.score == 1.0 for f in findings)
    return [(f.label, f.start, f.end, dict(f.metadata)) for f in findings]


FENCED = 'Sure!\n```json\n{"a": 1}\n```\nAnything else?'
FENCED_START = FENCED.index("{")
PROSE = 'The answer is {"a": [1, 2]} as requested.'
PROSE_START = PROSE.index("{")
TWO_FENCES = '```\nnot json\n```\nthen\n```\n{"k": true}\n```'
SECOND_FENCE = TWO_FENCES.index("{")


@pytest.mark.parametrize(
    ("text", "context", "expected"),
    [
        # strict JSON: nothing to report
        ('{"a": 1}', out(JSON_OBJECT), []),
        ('  \n{"a": 1}\n\t', out(JSON_OBJECT), []),
        ('{"n": 123456789012345678901234567890}', out(JSON_OBJECT), []),  # > 64-bit int
        ('{"s": "caf\\u00e9 \\"q\\" {not json}"}', out(JSON_OBJECT), []),
        # nothing parses
        (
            "I cannot do that.",
            out(JSON_OBJECT),
            [("json_invalid", 0, 17, {"reason": "Expecting value", "offset": 0})],
        ),
        (
            "",
            out(JSON_OBJECT),
            [("json_invalid", 0, 0, {"reason": "Expecting value", "offset": 0})],
        ),
        (
            '{"a": 1,}',
            out(JSON_OBJECT),
            [
                (
                    "json_invalid",
                    0,
                    9,
                    {"reason": "Expecting property name enclosed in double quotes", "offset": 8},
                )
            ],
        ),
        (
            '{"a": NaN}',
            out(JSON_OBJECT),
            [("json_invalid", 0, 10, {"reason": "NaN and Infinity are not JSON", "offset": 0})],
        ),
        (
            '{"a": 1} {"b": 2}',
            out(JSON_OBJECT),
            # two documents are not one: the first is extracted
            [
                (
                    "json_not_strict",
                    0,
                    8,
                    {"source": "prose", "reason": "Extra data", "offset": 9},
                )
            ],
        ),
        # extraction: fenced, prose
        (
            FENCED,
            out(JSON_OBJECT),
            [
                (
                    "json_not_strict",
                    FENCED_START,
                    FENCED_START + 8,
                    {"source": "code_fence", "reason": "Expecting value", "offset": 0},
                )
            ],
        ),
        (
            PROSE,
            out(JSON_OBJECT),
            [
                (
                    "json_not_strict",
                    PROSE_START,
                    PROSE_START + 13,
                    {"source": "prose", "reason": "Expecting value", "offset": 0},
                )
            ],
        ),
        (
            TWO_FENCES,
            out(JSON_OBJECT),
            [
                (
                    "json_not_strict",
                    SECOND_FENCE,
                    SECOND_FENCE + 11,
                    {"source": "code_fence", "reason": "Expecting value", "offset": 0},
                )
            ],
        ),
        # json_object wants an object: the array in the prose is skipped
        (
            'See [1] and {"a": 1}',
            out(JSON_OBJECT),
            [
                (
                    "json_not_strict",
                    12,
                    20,
                    {"source": "prose", "reason": "Expecting value", "offset": 0},
                )
            ],
        ),
        # a lone brace or a scalar is not "JSON found"
        (
            "Price: 42 {",
            out(JSON_OBJECT),
            [("json_invalid", 0, 11, {"reason": "Expecting value", "offset": 0})],
        ),
        # strict JSON that is not an object
        (
            "[1, 2]",
            out(JSON_OBJECT),
            [
                (
                    "json_schema_violation",
                    0,
                    6,
                    {
                        "path": "$",
                        "reason": "must be object",
                        "rule": "type",
                        "schema": "json_object",
                    },
                )
            ],
        ),
    ],
)
def test_json_validity(text: str, context: TextContext, expected: list[tuple]) -> None:
    assert check(text, context) == expected


def test_extracted_span_is_the_json() -> None:
    (finding,) = check(FENCED, out(JSON_OBJECT))
    assert FENCED[finding[1] : finding[2]] == '{"a": 1}'
    (finding,) = check(PROSE, out(JSON_OBJECT))
    assert PROSE[finding[1] : finding[2]] == '{"a": [1, 2]}'


def test_extract_disabled() -> None:
    assert [f[0] for f in check(FENCED, out(JSON_OBJECT), extract=False)] == ["json_invalid"]


def test_too_deep_is_invalid_not_a_crash() -> None:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    (finding,) = check(deep, out(JSON_OBJECT))
    assert finding[0] == "json_invalid"
    assert finding[3]["reason"] == "nested too deeply"


@pytest.mark.parametrize(
    ("context", "options", "expected_labels"),
    [
        # nothing asked: nothing checked
        (None, {}, []),
        (out(None), {}, []),
        (out({"type": "text"}), {}, []),
        (out("json_object"), {}, []),  # not a mapping: ignored
        (TextContext(stage="input", response_format=JSON_OBJECT), {}, []),  # prompts: no
        # require_json checks whatever the context says
        (None, {"require_json": True}, ["json_invalid"]),
        (out({"type": "text"}), {"require_json": True}, ["json_invalid"]),
        (TextContext(stage="input"), {"require_json": True}, ["json_invalid"]),
        # asked for
        (out(JSON_OBJECT), {}, ["json_invalid"]),
        (out({"type": "json_schema", "json_schema": {"name": "x"}}), {}, ["json_invalid"]),
    ],
)
def test_when_it_checks(context: TextContext | None, options: dict, expected_labels: list) -> None:
    assert [f[0] for f in check("plain words", context, **options)] == expected_labels


def test_require_json_accepts_arrays_in_prose() -> None:
    text = "values: [1, 2]"
    assert check(text, None, require_json=True) == [
        ("json_not_strict", 8, 14, {"source": "prose", "reason": "Expecting value", "offset": 0})
    ]


def test_tool_call_answer_without_content_skips_content_check() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    ctx = out(JSON_OBJECT, tools=tools, tool_calls=[{"name": "f", "arguments": "{}"}])
    assert check("", ctx) == []
    assert [f[0] for f in check("not json", ctx)] == ["json_invalid"]


async def test_batch_and_async_detect_agree() -> None:
    detector = FormatDetector()
    await detector.start()
    texts = ['{"a": 1}', "nope", FENCED]
    contexts = [out(JSON_OBJECT), out(JSON_OBJECT), out(JSON_OBJECT)]
    sync = detector.detect_sync(texts, contexts)
    assert await detector.detect(texts, contexts) == sync
    assert [[f.label for f in found] for found in sync] == [
        [],
        ["json_invalid"],
        ["json_not_strict"],
    ]
    assert detector.detect_sync(texts) == [[], [], []]  # no contexts: nothing asked
    assert detector.state()["started"] is True
    await detector.close()


@pytest.mark.parametrize(
    ("text", "ok", "reason"),
    [
        ("1", True, ""),
        ('"s"', True, ""),
        ("null", True, ""),
        ("Infinity", False, "NaN and Infinity are not JSON"),
        ("{'a': 1}", False, "Expecting property name enclosed in double quotes"),
        ("[1] x", False, "Extra data"),
    ],
)
def test_parse_strict(text: str, ok: bool, reason: str) -> None:
    result = parse_strict(text)
    assert (result.ok, result.reason) == (ok, reason)


def test_extract_bounds_attempts() -> None:
    # Many unparseable openers before the JSON: extraction gives up (bounded work).
    text = "{ " * 100 + '{"a": 1}'
    assert extract(text, want_object=True) is None
    text = "{ " * 3 + '{"a": 1}'
    found = extract(text, want_object=True)
    assert found is not None and found.value == {"a": 1} and found.source == "prose"
