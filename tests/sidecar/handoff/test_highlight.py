"""Findings marked in text: escaped segments joined with <mark>; masked-text offsets."""

from __future__ import annotations

import pytest

from sidecar.handoff.content import ContentPolicy, mask_with_spans
from sidecar.handoff.highlight import highlight
from sidecar.handoff.model import ConversationPart, Span
from sidecar.masking import Masker


def test_hostile_text_is_escaped_and_spans_marked() -> None:
    text = "<script>alert(1)</script> call me at a@b.co & bye"
    start = text.index("a@b.co")
    html = highlight(text, [Span(start, start + 6, "EMAIL", "pii")])
    assert "<script>" not in html
    assert html.startswith("&lt;script&gt;alert(1)&lt;/script&gt; call me at ")
    assert '<mark title="pii/EMAIL">a@b.co</mark>' in html
    assert html.endswith(" &amp; bye")


def test_marked_span_content_and_labels_are_escaped() -> None:
    html = highlight("x<b>y", [Span(1, 4, 'L"><script>', "d")])
    assert html == 'x<mark title="d/L&#34;&gt;&lt;script&gt;">&lt;b&gt;</mark>y'


def test_overlapping_spans_merge_and_bad_offsets_clip() -> None:
    text = "abcdefghij"
    spans = [Span(2, 5, "A"), Span(4, 7, "B"), Span(8, 99, "C"), Span(-3, 0, "D"),
             Span(6, 6, "E")]
    assert highlight(text, spans) == (
        'ab<mark title="A, B">cdefg</mark>h<mark title="C">ij</mark>')


def test_no_spans() -> None:
    assert highlight("a & b", []) == "a &amp; b"


@pytest.mark.parametrize(("span", "marked"), [
    ((0, 4), "Mail"),  # before the value: unchanged
    ((5, 17), "<EMAIL_ADDRESS_1>"),  # exactly the value
    ((7, 10), "<EMAIL_ADDRESS_1>"),  # inside the value: grows to the placeholder
    ((0, 17), "Mail <EMAIL_ADDRESS_1>"),
    ((18, 22), "then"),  # after the value: shifted
    ((18, 41), "then <EMAIL_ADDRESS_2> ok"),
    ((30, 41), "<EMAIL_ADDRESS_2> ok"),
])
def test_spans_follow_masking(span: tuple[int, int], marked: str) -> None:
    text = "Mail jane@doe.com then bob@example.org ok"
    pii = [Span(5, 17, "EMAIL_ADDRESS", score=0.9), Span(23, 38, "EMAIL_ADDRESS", score=0.9)]
    masked, (moved,) = mask_with_spans(Masker(), text, pii, [Span(*span, "X")])
    assert masked == "Mail <EMAIL_ADDRESS_1> then <EMAIL_ADDRESS_2> ok"
    assert masked[moved.start:moved.end] == marked


def test_literal_placeholder_in_text_does_not_shift_spans() -> None:
    text = "<EMAIL_ADDRESS_1> is mine, a@b.co too"
    i = text.index("a@b.co")
    masked, (moved,) = mask_with_spans(
        Masker(), text, [Span(i, i + 6, "EMAIL_ADDRESS", score=1.0)], [Span(i - 6, i + 6, "X")])
    assert masked.startswith("<EMAIL_ADDRESS_1> is mine, <EMAIL_ADDRESS_2>")
    assert masked[moved.start:moved.end] == "mine, <EMAIL_ADDRESS_2>"


def test_content_policy_truncates_and_clips() -> None:
    policy = ContentPolicy("raw", max_chars=5)
    kept = policy.apply([ConversationPart("user", "0123456789", (Span(3, 8, "A"),
                                                                  Span(6, 9, "B")))], None)
    assert kept is not None
    (part,), answer = kept
    assert part.text == "01234" and part.spans == (Span(3, 5, "A"),) and answer is None


def test_a_failing_pii_finder_keeps_no_text() -> None:
    def broken(text: str) -> list[Span]:
        raise RuntimeError(text)

    assert ContentPolicy("masked", pii=broken).apply([ConversationPart("user", "x")], None) is None
