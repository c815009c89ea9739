"""W3C Trace Context: parse an incoming ``traceparent``, make ids, format the outgoing one.

Ids are lowercase hex: 32 characters for a trace id, 16 for a span id. An invalid
or all-zero incoming header is ignored and a new trace starts (as the W3C spec
requires); it is never an error for the client.
"""

from __future__ import annotations

import os
import random
import re
from typing import NamedTuple

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceParent(NamedTuple):
    trace_id: str
    parent_span_id: str
    flags: str


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parent context from a ``traceparent`` header, or None when absent/invalid."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, flags)


# Ids need to be unique, not secret: a PRNG seeded from the OS (as OpenTelemetry's SDK
# does) instead of a getrandom() system call per id, which cost about 6 us each here.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))  # no shared streams


def new_trace_id() -> str:
    value = _rng.getrandbits(128)
    while not value:  # all-zero ids are invalid in W3C trace context
        value = _rng.getrandbits(128)
    return f"{value:032x}"


def new_span_id() -> str:
    value = _rng.getrandbits(64)
    while not value:
        value = _rng.getrandbits(64)
    return f"{value:016x}"


def format_traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"
