"""FormatDetector: recursive $ref, oneOf branches, drafts, and strict mode's reading of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detectors.base import TextContext
from detectors.format import FormatDetector

TREE = {  # a recursive schema: a node's children are nodes
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}
SELF_REF = {  # recursion through the root itself, the draft 7 way
    "type": "object",
    "properties": {
        "value": {"type": "integer"},
        "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    },
    "required": ["value", "next"],
    "additionalProperties": False,
}
SHAPES = {  # oneOf branches told apart by a const tag
    "type": "object",
    "properties": {
        "shape": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                    "required": ["kind", "r"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {
                        "kind": {"const": "rect"},
                        "w": {"type": "number"},
                        "h": {"type": "number"},
                    },
                    "required": ["kind", "w", "h"],
                    "additionalProperties": False,
                },
            ]
        }
    },
    "required": ["shape"],
    "additionalProperties": False,
}
MERGED = {  # allOf merges two fragments of one object
    "allOf": [
        {"type": "object", "properties": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"b": {"type": "integer"}}},
    ]
}


def rules(schema: Any, document: Any, strict: bool | None) -> list[tuple[str, str]]:
    spec: dict[str, Any] = {"name": "s", "schema": schema}
    if strict is not None:
        spec["strict"] = strict
    ctx = TextContext(response_format={"type": "json_schema", "json_schema": spec})
    (found,) = FormatDetector().detect_sync([json.dumps(document)], [ctx])
    assert all(f.label == "json_schema_violation" for f in found), found
    return [(f.metadata["path"], f.metadata["rule"]) for f in found]


def _deep_tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "leaf", "children": []}
    for i in range(depth):
        node = {"name": f"n{i}", "children": [node, {"name": "x", "children": []}]}
    return node


def _chain(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"value": 0, "next": None}
    for i in range(depth):
        node = {"value": i, "next": node}
    return node


VALID = [
    ("tree, one node", TREE, {"name": "root", "children": []}),
    ("tree, 50 levels", TREE, _deep_tree(50)),
    ("self-ref chain, 100 links", SELF_REF, _chain(100)),
    ("oneOf, first branch", SHAPES, {"shape": {"kind": "circle", "r": 1.5}}),
    ("oneOf, second branch", SHAPES, {"shape": {"kind": "rect", "w": 2, "h": 3}}),
    ("draft 2020-12 prefixItems", {"type": "array", "prefixItems": [{"type": "string"}]}, ["a", 1]),
    ("draft 7 tuple items", {"type": "array", "items": [{"type": "string"}]}, ["a", 1]),
]
INVALID = [
    (
        "tree, a bad node deep down",
        TREE,
        {"name": "r", "children": [{"name": "c", "children": [{"name": 5, "children": []}]}]},
        [("$.children[0].children[0].name", "type")],
    ),
    ("tree, missing children", TREE, {"name": "r"}, [("$.children", "required")]),
    (
        "self-ref chain, wrong type at depth 2",
        SELF_REF,
        {"value": 1, "next": {"value": "two", "next": None}},
        [("$.next", "anyOf")],
    ),
    ("oneOf, no branch", SHAPES, {"shape": {"kind": "circle", "w": 1}}, [("$.shape", "oneOf")]),
    (
        "oneOf, a mix of both",
        SHAPES,
        {"shape": {"kind": "rect", "r": 1, "w": 2, "h": 3}},
        [("$.shape", "oneOf")],
    ),
    (
        "draft 2020-12 prefixItems",
        {"type": "array", "prefixItems": [{"type": "string"}]},
        [1],
        [("$[0]", "type")],
    ),
    (
        "draft 7 tuple items",
        {"type": "array", "items": [{"type": "string"}]},
        [1],
        [("$[0]", "type")],
    ),
]


@pytest.mark.parametrize("strict", [None, False, True])
@pytest.mark.parametrize(("case", "schema", "document"), VALID, ids=[c[0] for c in VALID])
def test_valid_documents_pass(case: str, schema: Any, document: Any, strict: bool | None) -> None:
    assert rules(schema, document, strict) == []


@pytest.mark.parametrize("strict", [None, True])
@pytest.mark.parametrize(
    ("case", "schema", "document", "expected"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_documents_fail(
    case: str, schema: Any, document: Any, expected: list[tuple[str, str]], strict: bool | None
) -> None:
    assert rules(schema, document, strict) == expected


def test_strict_implies_openai_rules_where_the_schema_is_silent() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    # as written: nothing required, extra properties allowed
    assert rules(loose, {"a": "x", "extra": 1}, None) == []
    assert rules(loose, {"a": "x", "extra": 1}, False) == []
    # strict: every listed property required, nothing else allowed
    assert rules(loose, {"a": "x", "extra": 1}, True) == [
        ("$.b", "required"),
        ("$", "additionalProperties"),
    ]
    assert rules(loose, {"a": "x", "b": 1}, True) == []


def test_strict_leaves_allof_fragments_open() -> None:
    """Each allOf member describes part of one object: closing each would reject all."""
    assert rules(MERGED, {"a": "x", "b": 1}, True) == []
    assert rules(MERGED, {"a": "x", "b": "y"}, True) == [("$.b", "type")]


def test_strict_closes_recursive_definitions() -> None:
    open_tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    document = {"children": [{"children": [], "extra": 1}]}
    assert rules(open_tree, document, False) == []
    assert rules(open_tree, document, True) == [("$.children[0]", "additionalProperties")]
