"""SecretsDetector: credentials pasted into prompts (or leaked in answers).

Labels, most specific first (a span found by an earlier rule hides overlapping later
ones, so ``api_key = "sk-proj-..."`` is one ``OPENAI_API_KEY``, not also a
``GENERIC_SECRET``):

=====================  ===============================================================  =====
label                  what                                                             score
=====================  ===============================================================  =====
``PRIVATE_KEY``        PEM/OpenSSH/PGP private key block, ``-----BEGIN ... PRIVATE      1.0
                       KEY-----`` to its END line (or the end of its base64 lines)
``AWS_ACCESS_KEY``     AWS access key id: ``AKIA``/``ASIA``/``ABIA``/``ACCA``/``A3T?``  1.0
                       + 16 base32 characters
``GITHUB_TOKEN``       ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36+ alphanumerics,  1.0
                       ``github_pat_`` + 22+ characters
``ANTHROPIC_API_KEY``  ``sk-ant-<kind>-`` + 32+ characters                              1.0
``OPENAI_API_KEY``     ``sk-`` / ``sk-proj-`` / ``sk-svcacct-`` / ``sk-admin-`` + 20+    1.0
                       characters with upper case, lower case and digits
``SLACK_TOKEN``        ``xox[baprs]-`` + digits/letters/dashes, with a digit            1.0
``GOOGLE_API_KEY``     ``AIza`` + 35 characters                                         1.0
``STRIPE_SECRET_KEY``  ``sk_live_`` / ``rk_live_`` + 24+ alphanumerics (test keys are     1.0
                       not secrets)
``JWT``                three base64url parts whose first decodes to a JSON object with  0.9
                       ``alg``
``AWS_SECRET_KEY``     40 base64 characters assigned to a name like                     0.9
                       ``aws_secret_access_key`` / ``AWS Secret Access Key:``
``GENERIC_SECRET``     a value assigned to a name containing password, passwd, pwd,     0.8
                       passphrase, secret, api key, access key, token or credential
                       (``=``, ``:``, ``:=``, ``=>``, quoted or not) whose Shannon
                       entropy is at least ``entropy_threshold`` bits per character
=====================  ===============================================================  =====

``GENERIC_SECRET`` skips values shorter than ``min_length``, placeholders (``<...>``,
``${...}``, ``your_...``, ``example``, ``xxxx``, ``changeme``...), unquoted
expressions (``os.environ[...]``, ``get_token()``, ``self.token``), paths, URLs
without ``user:password@``, and values with a single character class (so an
all-lower-case passphrase is missed). A password in plain prose ("my password is
hunter2") is not an assignment and is not found. The name-keyed rules
(``AWS_SECRET_KEY``, ``GENERIC_SECRET``) are skipped for the rare text whose
lower-case form is longer (U+0130), where offsets would not line up.

Spans cover the secret itself (for ``GENERIC_SECRET`` and ``AWS_SECRET_KEY``, the
value, not the name), so the masker replaces only the secret. ``metadata`` is empty
except ``{"kind": "password" | "secret" | "api_key" | "token" | "credential"}`` for
``GENERIC_SECRET``; never the secret.

Cost: every pattern starts with a literal prefix that ``re`` finds with its fast
literal search; that search is the candidate pre-scan (see ``_RULES``). The
name-keyed rules run on the lower-cased text. Measured here per 2 KB: 27 µs of
code, 38 µs of prose, 52 µs with three secrets in it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic

from detectors.base import Finding, TextContext

__all__ = ["LABELS", "SecretsDetector", "shannon_entropy"]


def shannon_entropy(value: str) -> float:
    """Shannon entropy of ``value``'s characters, in bits per character."""
    if not value:
        return 0.0
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in Counter(value).values())


def _has_classes(token: str, lower: bool, upper: bool, digit: bool) -> bool:
    return (
        (not lower or any(c.islower() for c in token))
        and (not upper or any(c.isupper() for c in token))
        and (not digit or any(c.isdigit() for c in token))
    )


def _openai_like(token: str) -> bool:
    # Real keys are random base62: upper, lower and digits. "sk-learn-..." prose is not.
    return _has_classes(token, True, True, True)


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token)


def _jwt_header(token: str) -> bool:
    header = token.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        value = orjson.loads(decoded)
    except (binascii.Error, ValueError):
        return False
    return isinstance(value, dict) and isinstance(value.get("alg"), str)


@dataclass(frozen=True, slots=True)
class _Rule:
    label: str
    pattern: re.Pattern[str]
    score: float
    check: Callable[[str], bool] | None = None  # on the matched token


# Every pattern starts with a literal (its prefix), and the "not glued to a word"
# check is a look-behind *after* that literal: ``re`` then finds candidates with its
# fast literal search (about 1.5 µs per 2 KB here), where a leading look-behind makes
# it try every position (20-40 µs). That search is the candidate pre-scan: checking
# the prefixes with ``in`` first costs as much again (1-4 µs per prefix) and saves
# nothing.
_B32 = "A-Z2-7"
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "PRIVATE_KEY",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"|(?:[ \t]*\r?\n(?:[A-Za-z0-9+/=:,\- \t]*))*)"
        ),
        1.0,
    ),
    _Rule(
        "AWS_ACCESS_KEY",
        re.compile(
            rf"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])(?<![A-Za-z0-9]....)[{_B32}]{{16}}(?![A-Za-z0-9])"
        ),
        1.0,
    ),
    _Rule(
        "GITHUB_TOKEN",
        re.compile(r"gh[pousr]_(?<![A-Za-z0-9_]gh._)[A-Za-z0-9]{36,251}(?![A-Za-z0-9_])"),
        1.0,
    ),
    _Rule(
        "GITHUB_TOKEN",
        re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])"),
        1.0,
    ),
    _Rule(
        "ANTHROPIC_API_KEY",
        re.compile(
            r"sk-ant-(?<![A-Za-z0-9_\-]sk-ant-)[a-z]+[0-9]*-[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])"
        ),
        1.0,
    ),
    _Rule(
        "OPENAI_API_KEY",
        re.compile(
            r"sk-(?<![A-Za-z0-9_\-]sk-)(?!ant-)(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_\-]{20,}"
            r"(?![A-Za-z0-9_\-])"
        ),
        1.0,
        _openai_like,
    ),
    _Rule(
        "SLACK_TOKEN",
        re.compile(r"xox[baprs]-(?<![A-Za-z0-9]xox.-)[A-Za-z0-9\-]{10,250}(?![A-Za-z0-9\-])"),
        1.0,
        _has_digit,
    ),
    _Rule(
        "GOOGLE_API_KEY",
        re.compile(r"AIza(?<![A-Za-z0-9_\-]AIza)[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])"),
        1.0,
    ),
    _Rule(
        "STRIPE_SECRET_KEY",
        re.compile(r"sk_live_(?<![A-Za-z0-9_]sk_live_)[0-9A-Za-z]{24,247}(?![A-Za-z0-9_])"),
        1.0,
    ),
    _Rule(
        "STRIPE_SECRET_KEY",
        re.compile(r"rk_live_(?<![A-Za-z0-9_]rk_live_)[0-9A-Za-z]{24,247}(?![A-Za-z0-9_])"),
        1.0,
    ),
    _Rule(
        "JWT",
        re.compile(
            r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*"
            r"(?![A-Za-z0-9_\-])"
        ),
        0.9,
        _jwt_header,
    ),
)

# Context rules run on the lower-cased text (same offsets), so one pattern covers
# AWS_SECRET_ACCESS_KEY, aws_secret_access_key and "AWS Secret Access Key".
_AWS_SECRET = re.compile(
    r"aws[\s_\-]*(?:secret[\s_\-]*(?:access[\s_\-]*)?key|sk)[\"']?\s*(?::=|=>|=|:)?\s*[\"']?"
    r"([a-z0-9/+]{40})(?![a-z0-9/+=])"
)

_GENERIC_KINDS = (
    ("passphrase", "password"),
    ("password", "password"),
    ("passwd", "password"),
    ("pwd", "password"),
    ("secret", "secret"),
    ("credential", "credential"),
    ("token", "token"),
    ("private", "secret"),
    ("key", "api_key"),
)
# Starts at the name's keyword (a literal, so ``re`` can skip ahead fast); a prefix
# such as ``db_`` in ``db_password`` needs no matching since only the value is reported.
_GENERIC = re.compile(
    # the name's keyword as a trie, so ``re`` tries few branches per position
    r"(?P<kw>p(?:ass(?:word|wd|phrase)|wd|rivate[_\-]?key)|secret|credentials?|token"
    r"|a(?:pi[_\-]?key|pikey|ccess[_\-]?key))"
    r"[a-z0-9_.\-]{0,30}[\"']?[ \t]*(?::=|=>|=|:)[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]{1,256})\"|'(?P<sq>[^'\n]{1,256})'|`(?P<bq>[^`\n]{1,256})`"
    r"|(?P<bare>[^\s\"'`,;<>(){}\[\]]{1,256})(?=[\s,;]|$))"
)
_PLACEHOLDER = re.compile(
    r"your[_\-\s]|example|placeholder|redacted|dummy|sample|changeme|xxxx|\*\*\*|\.\.\.|"
    r"<|>|\$\{|\{\{|%\(|^\$[a-z_]+$|^none$|^null$|^true$|^false$",
    re.IGNORECASE,
)
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")

LABELS: frozenset[str] = frozenset(
    {rule.label for rule in _RULES} | {"AWS_SECRET_KEY", "GENERIC_SECRET"}
)


def _char_classes(value: str) -> int:
    return (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(not c.isalnum() for c in value)
    )


class SecretsDetector:
    """API keys, tokens, private keys and high-entropy assignments; non-blocking."""

    name = "secrets"
    blocking = False
    max_span_chars = 16_384  # ChunkableDetector: a PEM private key block fits well inside

    class Options(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

        disabled_labels: list[str] = []
        """Labels not to report (``GENERIC_SECRET`` is the one most often disabled)."""
        entropy_threshold: float = pydantic.Field(default=3.0, ge=0.0, le=8.0)
        """Least Shannon entropy, bits per character, of a ``GENERIC_SECRET`` value."""
        min_length: int = pydantic.Field(default=8, ge=1)
        """Shortest ``GENERIC_SECRET`` value, in characters."""
        max_findings: int = pydantic.Field(default=100, ge=1)

        @pydantic.field_validator("disabled_labels")
        @classmethod
        def _known_labels(cls, value: list[str]) -> list[str]:
            unknown = sorted(set(value) - LABELS)
            if unknown:
                raise ValueError(f"unknown labels {unknown}; known: {sorted(LABELS)}")
            return value

    def __init__(self, options: Options | None = None, *, name: str | None = None) -> None:
        self.options = options or self.Options()
        if name is not None:
            self.name = name
        disabled = set(self.options.disabled_labels)
        self._rules = tuple(rule for rule in _RULES if rule.label not in disabled)
        self._aws_secret = "AWS_SECRET_KEY" not in disabled
        self._generic = "GENERIC_SECRET" not in disabled

    async def start(self) -> None:
        return None  # patterns compile at import

    async def close(self) -> None:
        return None

    def state(self) -> dict[str, Any]:
        enabled = [rule.label for rule in self._rules]
        enabled += ["AWS_SECRET_KEY"] * self._aws_secret + ["GENERIC_SECRET"] * self._generic
        return {"started": True, "labels": enabled}

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        return self.detect_sync(texts, contexts)

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        return [self._scan(text) for text in texts]

    def _scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for rule in self._rules:
            for match in rule.pattern.finditer(text):
                if rule.check is None or rule.check(match.group()):
                    found.append(Finding(self.name, rule.label, rule.score, *match.span()))
        if self._aws_secret or self._generic:
            lowered = text.lower()
            if len(lowered) == len(text):  # same offsets; else skip the context rules
                if self._aws_secret:
                    for match in _AWS_SECRET.finditer(lowered):
                        found.append(Finding(self.name, "AWS_SECRET_KEY", 0.9, *match.span(1)))
                if self._generic:
                    self._scan_generic(text, lowered, found)
        if not found:
            return found
        return self._resolve(found)

    def _scan_generic(self, text: str, lowered: str, found: list[Finding]) -> None:
        opts = self.options
        for match in _GENERIC.finditer(lowered):
            group = next(g for g in ("dq", "sq", "bq", "bare") if match.group(g) is not None)
            start, end = match.span(group)
            value = text[start:end]
            if len(value) < opts.min_length or _PLACEHOLDER.search(value):
                continue
            if group == "bare" and _DOTTED_NAME.fullmatch(value):
                continue
            if value.startswith(("/", "./", "~/")) or ("://" in value and "@" not in value):
                continue  # a path or a URL without credentials
            if _char_classes(value) < 2 or shannon_entropy(value) < opts.entropy_threshold:
                continue
            keyword = match.group("kw")
            kind = next(k for word, k in _GENERIC_KINDS if word in keyword)
            found.append(Finding(self.name, "GENERIC_SECRET", 0.8, start, end, {"kind": kind}))

    def _resolve(self, found: list[Finding]) -> list[Finding]:
        """Drop findings overlapping an earlier (more specific) one; sort by position.

        ``found`` is in rule order, specific first. Kept spans never overlap, so one
        sorted list and a bisection per finding decide (n log n).
        """
        kept: list[Finding] = []
        starts: list[int] = []
        for finding in found:
            index = bisect.bisect_right(starts, finding.start)
            if index > 0 and kept[index - 1].end > finding.start:
                continue
            if index < len(kept) and kept[index].start < finding.end:
                continue
            kept.insert(index, finding)
            starts.insert(index, finding.start)
        return kept[: self.options.max_findings]
