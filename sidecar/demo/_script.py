"""Scripted behaviour of the demo upstream: directives, canned texts, token counting.

Directives are written inside the last user message (``/v1/chat/completions``), the
prompt (``/v1/completions``) or a string input (``/v1/embeddings``) as
``[[demo:NAME]]`` or ``[[demo:NAME=VALUE]]``. They are removed from the text that is
echoed back. The full list, with its exact syntax, is :data:`DIRECTIVES`.

Pure functions and values only; nothing here does I/O or blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

__all__ = [
    "BENIGN_FILLER",
    "BEHAVIOUR_KEYS",
    "DIRECTIVES",
    "PII_SENTENCE",
    "TOXIC_SENTENCE",
    "DirectiveError",
    "Script",
    "broken_json",
    "count_tokens",
    "pad_words",
    "parse_directives",
    "truncate_tokens",
]

#: What ``[[demo:toxic]]`` answers (and ``[[demo:toxic_midway]]`` ends with): a plain
#: insult with profanity that any toxicity detector must flag.
TOXIC_SENTENCE = "You are a stupid idiot and I hate you, shut up you worthless damn moron."

#: What ``[[demo:toxic_midway]]`` sends before turning toxic: long enough to fill
#: several stream chunks at the default chunk size.
BENIGN_FILLER = (
    "Thanks for your question, I am happy to help you with that today. "
    "Let me walk you through it step by step, starting with the basics."
)

#: What ``[[demo:pii]]`` appends: a name, an e-mail address, a US phone number, a
#: Luhn-valid test card number and an SSN-shaped number (none of them real).
PII_SENTENCE = (
    "You can reach Jane Doe at jane.doe@example.com or +1 415-555-0132. "
    "Card: 4111 1111 1111 1111. SSN: 123-45-6789."
)

#: The directives, name -> (syntax, meaning); the README documents this table.
DIRECTIVES: dict[str, tuple[str, str]] = {
    "status": (
        "[[demo:status=CODE]]",
        "fail with HTTP CODE (400-599), OpenAI error shape; 429/503 send Retry-After",
    ),
    "retry_after": (
        "[[demo:retry_after=SECONDS]]",
        "the Retry-After value (integer seconds, default 1) of a scripted failure",
    ),
    "fail_times": (
        "[[demo:fail_times=N]]",
        "the first N requests with this exact prompt fail (500 or status=CODE), then succeed",
    ),
    "slow": ("[[demo:slow=SECONDS]]", "sleep SECONDS (a float) before answering"),
    "drop": ("[[demo:drop]]", "close the connection without any response"),
    "break": (
        "[[demo:break]]",
        "hang up halfway: after about half the stream chunks (no [DONE]), or of the body",
    ),
    "pace_ms": ("[[demo:pace_ms=MS]]", "pause MS milliseconds (a float) between stream chunks"),
    "chunk": ("[[demo:chunk=CHARS]]", "characters per streamed piece (an integer >= 1)"),
    "invalid_json": (
        "[[demo:invalid_json]]",
        "the answer's JSON (content, response_format JSON, tool arguments) is broken",
    ),
    "invalid_json_times": (
        "[[demo:invalid_json_times=N]]",
        "broken JSON for the first N answers to this exact prompt, valid JSON afterwards",
    ),
    "toxic": ("[[demo:toxic]]", "the answer is TOXIC_SENTENCE"),
    "toxic_midway": (
        "[[demo:toxic_midway]]",
        "the answer runs benign for several chunks, then ends with TOXIC_SENTENCE",
    ),
    "pii": ("[[demo:pii]]", "PII_SENTENCE is appended to the answer"),
    "say": ("[[demo:say=TEXT]]", "answer TEXT instead of 'Echo: ...' (TEXT cannot hold ']]')"),
    "pad_words": (
        "[[demo:pad_words=N]]",
        "append N filler words to the answer (a longer answer: output-length drift)",
    ),
    "fingerprint": (
        "[[demo:fingerprint=FP]]",
        "answer with system_fingerprint FP (a model change behind the same name)",
    ),
}

#: The demo upstream's state-wide behaviour (``PUT /_demo/behaviour``, JSON): it applies
#: to every later answer, so a test scripts a shift without changing its prompts.
BEHAVIOUR_KEYS: dict[str, str] = {
    "served_model": "the model name answers carry",
    "system_fingerprint": "the system_fingerprint answers carry",
    "pad_words": "filler words appended to every answer (integer >= 0)",
    "suffix": "text appended to every answer (a changed canary answer)",
}

_FILLER_WORDS = ("and", "then", "more", "detail", "about", "this", "topic", "here")


def pad_words(text: str, words: int) -> str:
    """``text`` with ``words`` deterministic filler words appended."""
    if words <= 0:
        return text
    filler = " ".join(_FILLER_WORDS[i % len(_FILLER_WORDS)] for i in range(words))
    return f"{text} {filler}"

_DIRECTIVE_RE = re.compile(r"\[\[demo:([A-Za-z_]*)(?:=(.*?))?\]\][ \t]*", re.DOTALL)
_FLAGS = frozenset({"drop", "break", "invalid_json", "toxic", "toxic_midway", "pii"})
_MAX_SLOW_S = 3600.0

# A deliberately simple tokenizer: runs of word characters, and every other
# non-space character on its own. Deterministic and cheap; not any model's tokenizer.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


class DirectiveError(ValueError):
    """An unknown directive, a missing or bad value, or an unclosed ``[[demo:``."""


@dataclass(slots=True)
class Script:
    """The directives found in one request (defaults: behave normally)."""

    status: int | None = None
    retry_after: int | None = None
    fail_times: int = 0
    slow_s: float = 0.0
    drop: bool = False
    break_: bool = False
    pace_ms: float | None = None
    chunk_chars: int | None = None
    invalid_json: bool = False
    invalid_json_times: int = 0
    toxic: bool = False
    toxic_midway: bool = False
    pii: bool = False
    say: str | None = None
    pad_words: int = 0
    fingerprint: str | None = None


def parse_directives(text: str, script: Script | None = None) -> tuple[str, Script]:
    """Return ``text`` without its directives, and the directives parsed.

    A directive is removed with the blanks after it, then the text is stripped:
    ``"Hi [[demo:slow=1]] there"`` -> ``"Hi there"``.

    ``script``, when given, is updated in place and returned (to merge several texts).
    Raises :class:`DirectiveError` with a client-safe message. Call it only when
    ``"[[demo:" in text``; that check is the cheap path for ordinary requests.
    """
    found = script if script is not None else Script()
    for match in _DIRECTIVE_RE.finditer(text):
        _apply(found, match.group(1), match.group(2))
    rest = _DIRECTIVE_RE.sub("", text)
    if "[[demo:" in rest:
        raise DirectiveError("Unclosed demo directive: expected '[[demo:NAME]]'.")
    return rest.strip(), found


def _apply(script: Script, name: str, value: str | None) -> None:
    if name not in DIRECTIVES:
        raise DirectiveError(
            f"Unknown demo directive {name!r}; known: {', '.join(sorted(DIRECTIVES))}."
        )
    if name in _FLAGS:
        if value is not None:
            raise DirectiveError(f"Demo directive {name!r} takes no value.")
        setattr(script, "break_" if name == "break" else name, True)
        return
    if value is None:
        raise DirectiveError(f"Demo directive {name!r} needs a value: {DIRECTIVES[name][0]}.")
    if name == "say":
        script.say = value
    elif name == "fingerprint":
        script.fingerprint = value.strip()[:64]
    elif name == "pad_words":
        script.pad_words = _int(name, value, 0, 100_000)
    elif name == "status":
        script.status = _int(name, value, 400, 599)
    elif name == "retry_after":
        script.retry_after = _int(name, value, 0, 86_400)
    elif name == "fail_times":
        script.fail_times = _int(name, value, 0, 1_000_000)
    elif name == "invalid_json_times":
        script.invalid_json_times = _int(name, value, 0, 1_000_000)
    elif name == "chunk":
        script.chunk_chars = _int(name, value, 1, 1_000_000)
    elif name == "slow":
        script.slow_s = _float(name, value, _MAX_SLOW_S)
    else:  # pace_ms
        script.pace_ms = _float(name, value, _MAX_SLOW_S * 1000.0)


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise DirectiveError(f"Demo directive {name!r} needs an integer in [{low}, {high}].")
    return number


def _float(name: str, value: str, high: float) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= high:  # also rejects NaN
        raise DirectiveError(f"Demo directive {name!r} needs a number in [0, {high:g}].")
    return number


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by the demo tokenizer (word runs, single punctuation marks)."""
    return len(_TOKEN_RE.findall(text))


def truncate_tokens(text: str, limit: int) -> str | None:
    """``text`` cut after its ``limit``-th token, or ``None`` if it has no more tokens."""
    for seen, match in enumerate(_TOKEN_RE.finditer(text), 1):
        if seen > limit:
            return text[: match.start()].rstrip()
    return None


def broken_json(valid: str) -> str:
    """A text that is not JSON, made from the JSON text ``valid`` (cut like a truncation)."""
    cut = valid[:-2]
    if cut.strip():
        try:
            orjson.loads(cut)
        except ValueError:
            return cut
    return valid + ",}"  # trailing garbage after a complete value is never JSON
