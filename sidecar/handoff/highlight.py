"""Findings highlighted in text, safely: escape every segment, then join with ``<mark>``.

The text is user or model content and may hold markup; it is never passed to
the template unescaped. Overlapping spans merge into one mark whose ``title``
lists every label (also escaped). Offsets outside the text are clipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from sidecar.handoff.model import Span


def _merged(spans: Sequence[Span], length: int) -> list[tuple[int, int, list[str]]]:
    ranges: list[tuple[int, int, list[str]]] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        start, end = max(0, min(s.start, length)), max(0, min(s.end, length))
        if start >= end:
            continue
        label = f"{s.detector}/{s.label}" if s.detector else s.label
        if ranges and start < ranges[-1][1]:
            last = ranges[-1]
            labels = last[2] if label in last[2] else [*last[2], label]
            ranges[-1] = (last[0], max(last[1], end), labels)
        else:
            ranges.append((start, end, [label]))
    return ranges


def highlight(text: str, spans: Sequence[Span]) -> Markup:
    """``text`` as HTML with each (merged) span wrapped in ``<mark title=labels>``."""
    out: list[str] = []
    pos = 0
    for start, end, labels in _merged(spans, len(text)):
        out.append(escape(text[pos:start]))
        out.append(Markup('<mark title="{}">{}</mark>').format(", ".join(labels),
                                                                text[start:end]))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)
