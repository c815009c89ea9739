"""Scalar drift features of one finished request: a pure function of its TraceRecord.

Numeric features (``num``, compared with Kolmogorov-Smirnov) and categorical ones
(``cat``, chi-square with the Jensen-Shannon distance as effect size). A feature the
record cannot give (no text stored, not a stream) is left out, never guessed as 0.
Text-derived features (language, refusal, JSON validity, character counts) need the
text the privacy setting lets the record hold; the ingress facts (turns, tools, system
prompt hash) do not. Runs in the drift worker thread; never raises on odd input.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import orjson

from sidecar import semconv as sc
from sidecar.record import TraceRecord

ROUTES = (sc.OP_CHAT, sc.OP_TEXT_COMPLETION)  # requests drift looks at

_REFUSAL = re.compile(
    r"\b(i(?:'m| am) sorry,? but|i (?:can(?:'|no)t|cannot|won't|will not|am unable to|'m unable "
    r"to|'m not able to|am not able to) (?:help|assist|provide|comply|do that|answer)|"
    r"as an ai\b|i must decline)",
    re.IGNORECASE,
)
_ROLE_LINE = re.compile(r"^(system|developer|user|assistant|tool|function): ", re.MULTILINE)

# a few very frequent words per Latin-script language; enough to tell them apart
_STOPWORDS: dict[str, str] = {
    "en": "the and is are you what how to of in it for this that with",
    "es": "el la los las de que y es por para una con como qué mi",
    "fr": "le les des est et une pour dans vous avec pas comment",
    "de": "der die das und ist nicht ich sie wie was mit für ein eine",
    "pt": "os as em é um uma com não você",
    "it": "il lo gli di che è per non sono",
}
_STOP: dict[str, str] = {}
for _lang, _words in _STOPWORDS.items():
    for _w in _words.split():
        _STOP.setdefault(_w, _lang)  # a word two languages share counts for the first
_SCRIPTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(f"[{lo}-{hi}]"), tag) for lo, hi, tag in (
        ("\u3040", "\u30ff", "ja"), ("\uac00", "\ud7af", "ko"), ("\u4e00", "\u9fff", "zh"),
        ("\u0400", "\u04ff", "ru"), ("\u0370", "\u03ff", "el"), ("\u0590", "\u05ff", "he"),
        ("\u0600", "\u06ff", "ar"), ("\u0900", "\u097f", "hi"), ("\u0e00", "\u0e7f", "th")))
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, slots=True)
class Features:
    num: dict[str, float]
    cat: dict[str, str]
    model: str
    system_prompt_hash: str
    system_prompt_chars: int
    prompt_hash: str
    prompt_chars: int
    user_text: str | None  # the text to embed (last user message), when the record has text


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic per request id (uniform): the same request is sampled on every pod."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    try:
        return int(request_id[:8], 16) / 0x1_0000_0000 < rate
    except ValueError:
        return False


def last_user_text(prompt_text: str, route: str) -> str:
    """The last user message of a chat prompt as ingress joined it ("role: text" lines)."""
    if route != sc.OP_CHAT:
        return prompt_text
    starts = [(m.start(), m.group(1)) for m in _ROLE_LINE.finditer(prompt_text)]
    for i in range(len(starts) - 1, -1, -1):
        pos, role = starts[i]
        if role == "user":
            end = starts[i + 1][0] if i + 1 < len(starts) else len(prompt_text)
            return prompt_text[pos + len("user: "):end].rstrip("\n")
    return prompt_text


def language(text: str) -> str:
    """A coarse language tag: by Unicode script, then by stopwords for Latin script.

    Looks at the first 300 characters; about 10-20 µs (regex scans in C, one dict pass).
    """
    sample = text[:300]
    if sample.isascii():
        latin = 1 if _LATIN.search(sample) else 0
    else:
        latin = len(_LATIN.findall(sample))
        best, count = "", 0
        for pattern, tag in _SCRIPTS:
            n = len(pattern.findall(sample))
            if n > count:
                best, count = tag, n
            if tag == "ja" and n:  # kana marks Japanese even among kanji
                return "ja" if n * 4 >= latin else "latin"
        if count > latin:
            return best
    if latin == 0:
        return "none"
    votes: dict[str, int] = {}
    for word in _WORD.findall(sample.lower()):
        lang = _STOP.get(word)
        if lang is not None:
            votes[lang] = votes.get(lang, 0) + 1
    return max(votes, key=lambda k: votes[k]) if votes else "latin"


def _json_validity(output: str) -> str | None:
    stripped = output.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return "invalid"
    return "valid"


def _put(num: dict[str, float], key: str, value: float | int | None) -> None:
    if value is not None:
        num[key] = float(value)


def features(record: TraceRecord, max_embed_chars: int = 2000) -> Features:
    """The drift features of ``record`` (see the module docstring). Never raises."""
    attrs = record.attributes
    num: dict[str, float] = {}
    cat: dict[str, str] = {}
    _put(num, "prompt_tokens", record.prompt_tokens)
    _put(num, "completion_tokens", record.completion_tokens)
    _put(num, "latency_ms", record.total_ms)
    _put(num, "upstream_ms", record.upstream_ms)
    _put(num, "ttft_ms", record.ttft_ms)
    _put(num, "tpot_ms", record.tpot_ms)
    turns = attrs.get(sc.RAILWATCH_PROMPT_TURNS)
    if turns is not None and turns.isdigit():
        num["turns"] = float(turns)
    tools = attrs.get(sc.RAILWATCH_PROMPT_TOOLS)
    if tools is not None:
        cat["tools"] = "yes" if tools == "1" else "no"
    cat["finish_reason"] = ",".join(sorted(set(record.finish_reasons))) or "none"
    cat["outcome"] = record.decision if record.status < 400 else f"error_{record.status // 100}xx"
    ran = {(r.stage, r.detector) for r in record.detector_runs if r.error is None}
    for stage, detector in ran:
        num[f"score.{stage}.{detector}"] = 0.0
    for f in record.findings:
        key = f"score.{f.stage}.{f.detector}"
        num[key] = max(num.get(key, 0.0), float(f.score))
    user_text = None
    prompt_hash, prompt_chars = "", 0
    if record.prompt_text:
        user_text = last_user_text(record.prompt_text, record.route)[:max_embed_chars]
        prompt_chars = len(user_text)
        num["prompt_chars"] = float(prompt_chars)
        prompt_hash = hashlib.blake2b(user_text.encode("utf-8", "replace"),
                                      digest_size=8).hexdigest()
        cat["language"] = language(user_text)
    if record.output_text is not None:
        out = record.output_text
        num["output_chars"] = float(len(out))
        cat["refusal"] = "yes" if _REFUSAL.search(out[:400]) else "no"
        validity = _json_validity(out)
        if validity is not None:
            cat["json"] = validity
    if "content_filter" in record.finish_reasons:
        cat["refusal"] = "yes"
    chars = attrs.get(sc.RAILWATCH_SYSTEM_PROMPT_CHARS, "0")
    return Features(
        num=num,
        cat=cat,
        model=record.model_served or record.model_requested or "",
        system_prompt_hash=attrs.get(sc.RAILWATCH_SYSTEM_PROMPT_HASH, ""),
        system_prompt_chars=int(chars) if chars.isdigit() else 0,
        prompt_hash=prompt_hash,
        prompt_chars=prompt_chars,
        user_text=user_text,
    )
