"""Context and structure rules that decide phone numbers beyond phonenumbers' verdict.

python-phonenumbers says whether digits *could* be a number of a region; in chat
and code many digit strings that could be are not (a build number, an OID, an
ABA routing number, a bare count), and many real numbers people write are not
valid for any default region (7-digit local numbers, fictional ranges). Like
presidio's recognizers, we let the words around a candidate decide:

- *context words* ("phone", "call", "fax", "Mobile:", and after the number
  "office", "(home)", "-Fax") within a short window raise the score, let a
  structurally plausible number through without phonenumbers' approval, and are
  required for a bare digit string (no separators, no ``+``) to be a phone at all;
- *negative words* just before it (order, invoice, routing, version, OID...) rule it out;
- *structure*: a phone never starts or ends inside a dotted chain, dotted chains
  with one-digit groups are versions or OIDs ("2.16.840.1.113730.3.1",
  "10.0.19045.2965"), and a trailing one- or two-digit group followed by ``.``
  or ``)`` is the next list item's marker ("+49 30 901820 2. (030) ...").

Pure functions, no state; every regex is anchored or bounded by its window.
"""

from __future__ import annotations

import re

__all__ = [
    "NOT_PHONE_WORDS",
    "VERSION_WORDS",
    "dotted_lookalike",
    "has_phone_context",
    "is_list_marker",
    "plausible_national",
    "prev_word",
    "street_follows",
]

# Words before a number that say what it is (whole words, matched in lower case).
_CONTEXT_BEFORE = re.compile(
    r"(?<![a-z])(?:phones?|telephone|tel|mob|mobile|cell|cellphone|fax|call|called|calling|"
    r"dial|ring|reach|contact|whatsapp|sms|text me|desk|office|hotline|landline|"
    r"answering|voicemail)(?![a-z])"
)
_CONTEXT_AFTER = re.compile(
    r"[\s,;:()\-\u2013]{0,3}(?:office|fax|mobile|cell|home|work|desk|phone|tel)(?![a-z])",
    re.IGNORECASE,
)
_BEFORE_WIDTH = 40
_WORD = re.compile(r"[A-Za-z]+")
# words skipped when looking for the word a number belongs to ("order no. is 123")
_FILLERS = frozenset(
    {"number", "num", "nr", "no", "n", "is", "was", "are", "the", "a", "an", "my", "your",
     "our", "his", "her", "their", "of", "for", "with", "at"}
)  # fmt: skip

_STREET = re.compile(
    r" (?:[A-Z][\w'-]*\.? ){1,3}(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane|Dr|"
    r"Drive|Way|Ct|Court|Pl|Place|Sq|Square|Hwy|Highway|Pkwy|Parkway|Ter|Terrace)\b"
)
_LIST_MARK = re.compile(r"[.)]\s+[+(\d]")

VERSION_WORDS = frozenset(
    {"version", "ver", "v", "release", "rel", "build", "rev", "revision", "firmware",
     "fw", "kernel", "patch", "update", "section", "sec", "chapter", "ch", "figure",
     "fig", "table", "step", "item", "clause", "article", "art", "rule", "paragraph",
     "para", "par", "oid", "snmp", "rfc", "appendix", "part", "vers", "sdk", "api"}
)  # fmt: skip
NOT_PHONE_WORDS = frozenset(
    {"order", "orders", "invoice", "ticket", "ref", "reference", "tracking", "case",
     "sku", "serial", "po", "id", "transaction", "txn", "confirmation", "booking",
     "account", "acct", "isbn", "ean", "upc", "part", "model", "patent", "version",
     "build", "batch", "lot", "item", "receipt", "claim", "policy", "shipment",
     "parcel", "customer", "member", "license", "licence", "passport", "iban", "card",
     "routing", "aba", "rtn", "swift", "bic", "sort", "oid", "release", "pid", "pin",
     "zip", "postcode", "code", "checksum", "hash", "port", "isin", "cusip"}
)  # fmt: skip


def prev_word(text: str, start: int) -> str:
    """The last word before ``start`` (within 32 characters), fillers skipped."""
    words = _WORD.findall(text, max(0, start - 32), start)
    while words:
        word = str(words.pop()).lower()
        if word not in _FILLERS:
            return word
    return ""


def has_phone_context(text: str, start: int, end: int) -> bool:
    """A phone context word within 40 characters before ``start`` or right after ``end``."""
    window = text[max(0, start - _BEFORE_WIDTH) : start].lower()
    if _CONTEXT_BEFORE.search(window):
        return True
    return _CONTEXT_AFTER.match(text, end, end + 16) is not None


def street_follows(text: str, end: int) -> bool:
    """Whether a street name follows ``end`` ("17031 2202 Rissik St"): a house number."""
    if not text.startswith(" ", end) or not text[end + 1 : end + 2].isupper():
        return False  # the common case, without the regex
    return _STREET.match(text, end, end + 40) is not None


def is_list_marker(text: str, end: int) -> bool:
    """Whether ``text[end]`` is a list marker's ``.``/``)`` before the next item's number."""
    return _LIST_MARK.match(text, end) is not None


def dotted_lookalike(values: list[str], seps: list[str]) -> bool:
    """A run joined only by dots that reads as a version string or an OID.

    Seven or more groups, or any one-digit group after the first ("1.3.6.1.4.1",
    "10.0.19045.2965", "2.7.18.1234567"); "06.12.20.45.78" (a French number) and
    "1.415.555.2671" stay candidates.
    """
    if not seps or any(s != "." for s in seps):
        return False
    return len(values) >= 7 or any(len(v) == 1 for v in values[1:])


def plausible_national(values: list[str]) -> bool:
    """Digit groups shaped like a phone number written nationally.

    7-12 digits in at most 6 groups of 2-8 digits ("358 0594", "72 128 827",
    "(72) 754-186", "28-64-66-98", "99 577450"), or one group of 7-11 digits.
    """
    n = sum(len(v) for v in values)
    if not 7 <= n <= 12 or len(values) > 6:
        return False
    if len(values) == 1:
        return n <= 11
    return all(2 <= len(v) <= 8 for v in values)
