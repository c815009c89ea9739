"""The pattern tier: a two-stage scan for pattern-shaped PII.

Stage one finds *candidates* with work that is cheap per character: C-level
``str.find`` for ``@``, ``://``, ``www.`` and ``:``, one regex whose first element
is a digit class (so ``re`` skips to digits in C) for runs of digit groups, and one
regex with a literal ``.`` prefix for bare domains. Stage two runs the precise
shape checks and validators only around those candidates: Luhn and card IIN
ranges, IBAN mod-97 and registered length, SSN area/group/serial rules,
``ipaddress`` for IPv6, the offline TLD list for e-mail and URL hosts, and
python-phonenumbers for phone numbers. A 2 KB chat message without PII costs a
few microseconds of regex work and a handful of Python iterations.

Decisions on look-alikes (each is a test case):

- dotted quads after a version/section word ("version 1.2.3.4", "section
  1.2.3.4") or glued to a letter ("v1.2.3.4") or to more dotted groups
  ("1.2.3.4.5") are not IP addresses (presidio reports all of these);
- digits glued to letters ("abc123456789", UUID and hash fragments) are skipped;
- dates (Y-M-D, D/M/Y, M-D-Y, D.M.Y, YYYYMMDD) are never phone numbers;
- a number right after an order/invoice/ticket/reference word or ``#`` is not a
  phone number or a bare SSN;
- 12-19 digit numbers are cards only with a valid Luhn digit *and* a card
  network's IIN range and length;
- bare domains ("example.com") need a lower-case TLD from a common set and may not
  be a function call ("logger.info("); "setup.py" and "README.md" are files.

Every span is a character offset pair into the original text. Nothing here keeps
state between calls; :meth:`PatternScanner.scan` is safe to call from threads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from detectors.pii._checks import (
    IBAN_LENGTHS,
    card_brand,
    iban_valid,
    is_date,
    luhn_valid,
    ssn_valid,
)
from detectors.pii._phones import PhoneValidator
from detectors.pii._tlds import FILE_LIKE_TLDS

__all__ = ["PATTERN_ENTITIES", "PatternScanner", "RawMatch"]

PATTERN_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "URL",
)


class RawMatch(NamedTuple):
    label: str
    start: int
    end: int
    score: float
    recognizer: str
    validated: bool


# --- stage-one candidate patterns -------------------------------------------------
# Stage one for numbers: 7+ characters of digits and separators from digit to digit
# (anything shorter than "1.1.1.1" or a 7-digit phone number is no candidate), or
# two digits followed by four letters/digits, or by a separator and four capitals
# or digits (an IBAN's check digits after its country code: "GB82WEST...",
# "GB82 WEST ..."). Both branches start with a digit, so ``re`` skips to digits in
# C; in prose most numbers ("56 tests", "3.11.7", "Q4 2016") fail in C too.
_CANDIDATE = re.compile(r"\d(?:[\d\-./ ()]{5,}\d|\d(?:[A-Za-z0-9]{4}|[ -][A-Z0-9]{4}))")
# Within a candidate: digit groups joined by one separator ("415-555-2671",
# "+44 (0)20 7946 0958", "4111 1111 1111 1111", "192.168.0.1/24", "12/05/2023").
_RUN = re.compile(r"\d+(?:(?:[-./ ]|\) ?|\)-| ?\()\d+)*")
_GROUP = re.compile(r"\d+")
_SPLIT = re.compile(r"(\D+)")  # a run -> [group, separator, group, ...]
_DATE_RUN = re.compile(r"\d{4}([-/.])\d\d?\1\d\d?|\d\d?([-/.])\d\d?\2(?:\d\d){1,2}")
_BARE_TLD = re.compile(r"\.([a-z]{2,24})(?![\w(-])")
_EXT_AFTER = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}(?!\w)", re.IGNORECASE)

# --- stage-two shapes -------------------------------------------------------------
_LOCAL_CHARS = frozenset("!#$%&'*+/=?^_`{|}~.-")
_DOMAIN = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+")
_HOST = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*")
_URL_TAIL = re.compile(r"[^\s<>\"'`{}|\\^]*")
_PORT_PATH = re.compile(r"(?::\d{1,5})?(?:[/?#][^\s<>\"'`{}|\\^]*)?")
_IBAN = re.compile(r"[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
_V6_BODY = re.compile(r"[0-9A-Fa-f:.]+(?:%[0-9A-Za-z_.\-]+)?(?:/\d{1,3})?")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_WORD = re.compile(r"[A-Za-z]+")
# words skipped when looking for the word a number belongs to ("order no. is 123")
_FILLERS = frozenset(
    {"number", "num", "nr", "no", "n", "is", "was", "are", "the", "a", "an", "my", "your",
     "our", "his", "her", "their", "of", "for", "with", "at"}
)  # fmt: skip
_HASH_BEFORE = re.compile(r"#\s*$")
_MAJOR_CARDS = frozenset({"visa", "mastercard", "amex", "discover"})
_EPOCH = re.compile(r"1\d{9}|1\d{12}")
_URL_TRAIL = ".,;:!?*_~'\""

_VERSION_WORDS = frozenset(
    {"version", "ver", "v", "release", "rel", "build", "rev", "revision", "firmware",
     "fw", "kernel", "patch", "update", "section", "sec", "chapter", "ch", "figure",
     "fig", "table", "step", "item", "clause", "article", "art", "rule", "paragraph",
     "para", "par", "oid", "snmp", "rfc", "appendix", "part", "vers", "sdk", "api"}
)  # fmt: skip
_NOT_PHONE_WORDS = frozenset(
    {"order", "orders", "invoice", "ticket", "ref", "reference", "tracking", "case",
     "sku", "serial", "po", "id", "transaction", "txn", "confirmation", "booking",
     "account", "acct", "isbn", "ean", "upc", "part", "model", "patent", "version",
     "build", "batch", "lot", "item", "receipt", "claim", "policy", "shipment",
     "parcel", "customer", "member", "license", "licence", "passport", "iban", "card"}
)  # fmt: skip
_PHONE_CONTEXT = ("phone", "tel", "call", "mobile", "cell", "fax", "whatsapp", "contact",
                  "reach", "text me", "sms", "dial", "ring")  # fmt: skip
_SSN_CONTEXT = ("ssn", "social security", "social sec", "ss#", "ss #")

# Bare domains ("example.com" without scheme or www) only for these TLDs: generic
# ones people write bare, plus two-letter country codes that are not also common
# English words or file extensions. Other TLDs still count after "www." or a scheme.
_BARE_TLDS = frozenset(
    {"com", "net", "org", "edu", "gov", "mil", "io", "co", "biz", "info", "dev", "xyz",
     "online", "site", "tech", "store", "blog", "cloud", "shop", "news", "ly", "gl",
     "tv", "fm", "eu", "uk", "de", "fr", "es", "nl", "se", "dk", "fi", "ch", "pt",
     "ie", "ca", "au", "nz", "jp", "cn", "kr", "ru", "ua", "br", "ar", "mx", "cl",
     "za", "gr", "cz", "sk", "hu", "ro", "bg", "hr", "si", "lt", "lv", "ee", "tr",
     "il", "sg", "hk", "tw", "th", "vn", "ph", "pk", "bd", "ng", "ke", "eg", "sa",
     "ae", "qa", "cy", "lu", "li", "mt", "uy", "pe", "ve", "ec", "bo", "py"}
    - FILE_LIKE_TLDS
)  # fmt: skip


def _covered(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    for s, e in spans:
        if s < end and start < e:
            return True
    return False


def _looks_reserved(values: list[str], seps: list[str]) -> bool:
    """3-2-4 groups (an SSN's shape) or 3+ groups of four digits (a card's)."""
    if len(values) == 3 and [len(v) for v in values] == [3, 2, 4] and seps[0] == seps[1]:
        return True
    return len(values) >= 3 and all(len(v) == 4 for v in values) and len(set(seps)) == 1


def _phone_score(text: str, start: int) -> float | None:
    """Score of a phone number at ``start``, or None when its context says it is not one."""
    if _prev_word(text, start) in _NOT_PHONE_WORDS or _HASH_BEFORE.search(
        text, max(0, start - 3), start
    ):
        return None
    international = text[start] == "+" or text.startswith("00", start)
    score = 0.85 if international else 0.7
    if _context(text, start, _PHONE_CONTEXT):
        score += 0.1
    return round(score, 2)


def _valid_ipv6(body: str) -> bool:
    try:
        if "%" in body:  # zone id: IPv6Address accepts it, ip_interface does not
            ipaddress.IPv6Address(body)
        else:
            ipaddress.ip_interface(body)
    except ValueError:
        return False
    return True


def _prev_word(text: str, start: int) -> str:
    """The last word before ``start`` (within 32 characters), fillers skipped."""
    words = _WORD.findall(text, max(0, start - 32), start)
    while words:
        word = str(words.pop()).lower()
        if word not in _FILLERS:
            return word
    return ""


def _context(text: str, start: int, words: Iterable[str], width: int = 40) -> bool:
    window = text[max(0, start - width) : start].lower()
    return any(w in window for w in words)


class PatternScanner:
    """Finds pattern-shaped PII in one text; construct once, call from any thread.

    ``entities`` restricts the labels looked for (presidio's names, a subset of
    :data:`PATTERN_ENTITIES`); ``tlds`` is the full TLD set (lower case) used to
    validate e-mail and URL hosts; ``phones`` validates phone candidates.
    """

    def __init__(
        self, entities: Iterable[str], tlds: frozenset[str], phones: PhoneValidator
    ) -> None:
        wanted = set(entities)
        unknown = wanted - set(PATTERN_ENTITIES)
        if unknown:
            raise ValueError(f"unknown pattern entities: {sorted(unknown)}")
        self._email = "EMAIL_ADDRESS" in wanted
        self._url = "URL" in wanted
        self._ip = "IP_ADDRESS" in wanted
        self._phone = "PHONE_NUMBER" in wanted
        self._card = "CREDIT_CARD" in wanted
        self._ssn = "US_SSN" in wanted
        self._iban = "IBAN_CODE" in wanted
        self._digits = self._phone or self._card or self._ssn or self._ip or self._iban
        self._tlds = tlds
        self._phones = phones

    # -- public --------------------------------------------------------------------

    def scan(self, text: str) -> list[RawMatch]:
        """All matches in ``text``, sorted by start offset. Never raises on input."""
        out: list[RawMatch] = []
        taken: list[tuple[int, int]] = []  # e-mails, URLs, IPv6: nothing else inside
        if self._url and "://" in text:
            self._scheme_urls(text, out, taken)  # first: "db://user:pw@host" is a URL
        if self._email and "@" in text:
            self._emails(text, out, taken)
        if self._url:
            self._www_urls(text, out, taken)
            self._bare_domains(text, out, taken)
        if self._ip and ":" in text:
            self._ipv6(text, out, taken)
        if self._digits:
            self._digit_runs(text, out, taken)
        out.sort(key=lambda m: m.start)
        return out

    # -- e-mail --------------------------------------------------------------------

    def _host_end(self, text: str, start: int, host: re.Match[str] | None) -> int:
        """End of the longest prefix of a dotted host whose last label is a TLD."""
        if host is None:
            return -1
        end = host.end()
        while True:
            dot = text.rfind(".", start, end)
            if dot <= start:
                return -1
            if text[dot + 1 : end].lower() in self._tlds:
                return end
            end = dot

    def _emails(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        at = text.find("@")
        while at != -1:
            next_from = at + 1
            lo = at
            floor = max(0, at - 64)
            while lo > floor and (text[lo - 1].isalnum() or text[lo - 1] in _LOCAL_CHARS):
                lo -= 1
            while lo < at and text[lo] == ".":
                lo += 1
            if lo < at and text[at - 1] != ".":
                end = self._host_end(text, at + 1, _DOMAIN.match(text, at + 1))
                if end > 0 and not (taken and _covered(taken, lo, end)):
                    out.append(RawMatch("EMAIL_ADDRESS", lo, end, 0.95, "email", True))
                    taken.append((lo, end))
                    next_from = end
            at = text.find("@", next_from)

    # -- URLs ----------------------------------------------------------------------

    @staticmethod
    def _trim_url(text: str, start: int, end: int) -> int:
        """Drop trailing punctuation and unbalanced closing brackets from a URL."""
        url = text[start:end]
        for close, open_ in ((")", "("), ("]", "[")):
            depth = 0
            for i, ch in enumerate(url):
                if ch == open_:
                    depth += 1
                elif ch == close:
                    if depth == 0:
                        url = url[:i]
                        break
                    depth -= 1
        url = url.rstrip(_URL_TRAIL)
        return start + len(url)

    def _host_validated(self, host: str) -> bool:
        host = host.strip("[]").lower()
        if host == "localhost":
            return True
        if "." in host and host.rsplit(".", 1)[1] in self._tlds:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    def _scheme_urls(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        i = text.find("://")
        while i != -1:
            lo = i
            while lo > 0 and i - lo < 16 and (text[lo - 1].isalnum() or text[lo - 1] in "+.-"):
                lo -= 1
            while lo < i and not text[lo].isalpha():
                lo += 1
            tail = _URL_TAIL.match(text, i + 3)
            assert tail is not None  # the pattern matches the empty string
            end = self._trim_url(text, i + 3, tail.end())
            authority = text[i + 3 : end].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            host = authority.rsplit("@", 1)[-1]
            host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
            if i - lo >= 2 and host:
                ok = self._host_validated(host)
                out.append(RawMatch("URL", lo, end, 0.95 if ok else 0.7, "url", ok))
                taken.append((lo, end))
            i = text.find("://", max(end, i + 3))

    def _www_urls(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        for prefix in ("www.", "WWW."):
            i = text.find(prefix)
            while i != -1:
                nxt = i + 4
                before = text[i - 1] if i else " "
                if not (before.isalnum() or before in "./@-_") and not _covered(taken, i, i + 4):
                    end = self._host_end(text, i, _HOST.match(text, i))
                    if end > 0:
                        path = _PORT_PATH.match(text, end)
                        assert path is not None  # the pattern matches the empty string
                        end = self._trim_url(text, i, path.end())
                        out.append(RawMatch("URL", i, end, 0.9, "url", True))
                        taken.append((i, end))
                        nxt = end
                i = text.find(prefix, nxt)

    def _bare_domains(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        for m in _BARE_TLD.finditer(text):
            if m.group(1) not in _BARE_TLDS:
                continue
            dot = m.start()
            lo = dot
            while lo > 0 and (text[lo - 1].isalnum() or text[lo - 1] in ".-"):
                lo -= 1
            while lo < dot and not text[lo].isalnum():
                lo += 1
            if lo == dot or (lo > 0 and text[lo - 1] in "@/\\:_#$%&=+~"):
                continue
            end = self._host_end(text, lo, _HOST.match(text, lo))
            if end < m.end() or (end < len(text) and text[end] == "("):
                continue
            last = text[text.rfind(".", lo, end) + 1 : end]
            if last not in _BARE_TLDS:  # also rejects upper case: "ASP.NET", "VB.NET"
                continue
            if text[lo:dot].replace(".", "").replace("-", "").isdigit():
                continue  # "1.5.com" is a typo, not a host
            path = _PORT_PATH.match(text, end)
            assert path is not None  # the pattern matches the empty string
            end = self._trim_url(text, lo, path.end())
            if taken and _covered(taken, lo, end):
                continue
            out.append(RawMatch("URL", lo, end, 0.6, "url", True))
            taken.append((lo, end))

    # -- IPv6 ----------------------------------------------------------------------

    def _ipv6(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        n = len(text)
        i = text.find(":")
        while i != -1:
            nxt = i + 1
            left_ok = i > 0 and text[i - 1] in _HEX_COLON
            right_ok = i + 1 < n and text[i + 1] in _HEX_COLON
            if left_ok or right_ok:
                lo = i
                while lo > 0 and i - lo < 40 and text[lo - 1] in _HEX_COLON:
                    lo -= 1
                if text.startswith(":", lo) and not text.startswith("::", lo):
                    lo += 1  # "addr:fe80::1": the first colon is punctuation
                m = _V6_BODY.match(text, lo)
                assert m is not None  # text[lo] is a hex digit or a colon
                end = m.end()
                body = m.group()
                while body and body[-1] in ".:" and not body.endswith("::"):
                    body = body[:-1]
                    end -= 1
                nxt = max(end, i + 1)
                before = text[lo - 1] if lo else " "
                after = text[end] if end < n else " "
                addr = body.split("/", 1)[0]
                if (
                    addr.count(":") >= 2
                    and any(c.isdigit() for c in addr)
                    and not (before.isalnum() or before in "_.")
                    and not (after.isalnum() or after == "_")
                    and not _covered(taken, lo, end)
                    and _valid_ipv6(body)
                ):
                    out.append(RawMatch("IP_ADDRESS", lo, end, 0.9, "ipv6", True))
                    taken.append((lo, end))
            i = text.find(":", nxt)

    # -- digit runs ----------------------------------------------------------------

    def _digit_runs(self, text: str, out: list[RawMatch], taken: list[tuple[int, int]]) -> None:
        n = len(text)
        skip_until = 0
        iban = self._iban
        for cand in _CANDIDATE.finditer(text):
            cs, ce = cand.span()
            if cs < skip_until:
                continue
            if iban and cs >= 2 and text[cs - 1].isalpha() and text[cs - 2].isalpha():
                iban_end, valid = self._iban_at(text, cs - 2)
                if iban_end > 0:
                    if valid and not _covered(taken, cs - 2, iban_end):
                        out.append(RawMatch("IBAN_CODE", cs - 2, iban_end, 1.0, "iban", True))
                    # an IBAN-shaped string with a bad checksum is a look-alike: no
                    # phone or card is read out of its digits either
                    skip_until = iban_end
                    continue
            if ce - cs < 7:
                continue  # an IBAN hint that was no IBAN
            for run in _RUN.finditer(text, cs, ce):
                s, e = run.span()
                if e - s < 7:  # shorter than "1.1.1.1" or a 7-digit phone number
                    continue
                before = text[s - 1] if s else " "
                if before.isalnum() or before == "_":
                    # the first group is glued to a word ("visa19 4111 ..."): the
                    # rest of the run may still stand on its own
                    first = _GROUP.match(text, s)
                    nxt = _GROUP.search(text, first.end(), e) if first else None
                    if nxt is None or e - nxt.start() < 7:
                        continue
                    s = nxt.start()
                after = text[e] if e < n else " "
                x = _EXT_AFTER.match(text, e) if after in " xXe" else None
                ext_end = x.end() if x else e
                if x is None and (after.isalnum() or after == "_"):
                    continue
                if taken and _covered(taken, s, ext_end):
                    continue
                if ext_end == e and text[s:e].isdigit():
                    self._bare_number(text, s, e, out)
                else:
                    self._classify(text, s, e, ext_end, out)

    def _bare_number(self, text: str, s: int, e: int, out: list[RawMatch]) -> None:
        """One group of 7+ digits: the common case, without the group machinery."""
        n = e - s
        digits = text[s:e]
        if 12 <= n <= 19 and self._card:
            brand = card_brand(digits)
            if brand and luhn_valid(digits):
                score = 1.0 if brand in _MAJOR_CARDS else 0.85
                out.append(RawMatch("CREDIT_CARD", s, e, score, "credit_card", True))
                return
        if n == 8 and is_date([digits], []):
            return
        if n == 9 and self._ssn and _context(text, s, _SSN_CONTEXT):
            if ssn_valid(digits[:3], digits[3:5], digits[5:]):
                out.append(RawMatch("US_SSN", s, e, 0.6, "us_ssn", True))
            return
        if not (7 <= n <= 15 and self._phone):
            return
        start = s - 1 if s and text[s - 1] == "+" else s
        if start == s and _EPOCH.fullmatch(digits):
            return  # a bare Unix time in seconds or ms (2001-2033), not a phone
        phone_score = _phone_score(text, start)
        if phone_score is not None and self._phones.check(text[start:e]):
            out.append(RawMatch("PHONE_NUMBER", start, e, phone_score, "phone", True))

    def _iban_at(self, text: str, start: int) -> tuple[int, bool]:
        """(end, checksum ok) of an IBAN-shaped string at ``start``; end -1 if none.

        IBAN-shaped: a registered country code, two check digits, then exactly the
        country's registered number of characters (single spaces or dashes allowed
        between them), not followed by another letter or digit.
        """
        if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            return -1, False
        length = IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:
            return -1, False
        m = _IBAN.match(text, start)
        if m is None:
            return -1, False
        chars: list[str] = []
        end = start
        for i in range(start, m.end()):
            ch = text[i]
            if ch.isalnum():
                chars.append(ch)
                if len(chars) == length:
                    end = i + 1
                    break
        if len(chars) != length:
            return -1, False
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            return -1, False
        return end, iban_valid("".join(chars))

    def _classify(self, text: str, s: int, e: int, ext_end: int, out: list[RawMatch]) -> None:
        run = text[s:e]
        if _DATE_RUN.fullmatch(run):
            parts = _SPLIT.split(run)
            if is_date(parts[0::2], parts[1::2]):
                return  # the commonest long run in prose, and never PII here
        parts = _SPLIT.split(run)
        values = parts[0::2]
        seps = parts[1::2]
        ng = len(values)
        groups: list[tuple[int, int]] = []
        pos = s
        for k in range(ng):
            end = pos + len(values[k])
            groups.append((pos, end))
            if k < ng - 1:
                pos = end + len(seps[k])
        used = [False] * ng
        n_digits = e - s - sum(map(len, seps))

        if self._card and n_digits >= 12:
            self._cards(text, groups, values, seps, used, out)
        if self._ip and ng >= 4 and "." in seps:
            self._ipv4s(text, groups, values, seps, used, out)
        # dates are consumed so no phone or SSN is read into them
        for k in range(ng):
            if used[k]:
                continue
            if (
                ng - k >= 3
                and (k == 0 or seps[k - 1] != seps[k])
                and (k + 3 >= ng or seps[k + 2] != seps[k])
                and is_date(values[k : k + 3], seps[k : k + 2])
            ):
                used[k] = used[k + 1] = used[k + 2] = True
            elif len(values[k]) == 8 and is_date(values[k : k + 1], []):
                used[k] = True
        if self._ssn and ng >= 3:
            self._ssns(text, groups, values, seps, used, out)
        if self._phone and n_digits >= 7:
            if _looks_reserved(values, seps):
                return  # SSN- or card-shaped but invalid: a look-alike, not a phone
            self._phones_in(text, groups, seps, used, ext_end, out)

    def _ipv4s(
        self,
        text: str,
        groups: list[tuple[int, int]],
        values: list[str],
        seps: list[str],
        used: list[bool],
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        for k in range(ng - 3):
            if used[k] or seps[k] != "." or seps[k + 1] != "." or seps[k + 2] != ".":
                continue
            if (k and seps[k - 1] == ".") or (k + 3 < ng - 1 and seps[k + 3] == "."):
                continue  # "1.2.3.4.5" is no address
            quad = values[k : k + 4]
            if not all(len(q) <= 3 and int(q) <= 255 and (q == "0" or q[0] != "0") for q in quad):
                continue
            start = groups[k][0]
            if _prev_word(text, start) in _VERSION_WORDS:
                continue
            end = groups[k + 3][1]
            if k + 4 < ng and seps[k + 3] == "/" and int(values[k + 4]) <= 32:
                end = groups[k + 4][1]
                used[k + 4] = True
            out.append(RawMatch("IP_ADDRESS", start, end, 0.85, "ipv4", True))
            used[k] = used[k + 1] = used[k + 2] = used[k + 3] = True

    def _cards(
        self,
        text: str,
        groups: list[tuple[int, int]],
        values: list[str],
        seps: list[str],
        used: list[bool],
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        k = 0
        while k < ng:
            best = -1
            digits = ""
            for j in range(k, ng):
                if j > k and (seps[j - 1] not in (" ", "-") or seps[j - 1] != seps[k]):
                    break
                digits += values[j]
                if len(digits) > 19:
                    break
                if len(digits) >= 12 and card_brand(digits) and luhn_valid(digits):
                    best = j
            if best < 0:
                k += 1
                continue
            brand = card_brand("".join(values[k : best + 1]))
            score = 1.0 if brand in _MAJOR_CARDS else 0.85
            out.append(
                RawMatch("CREDIT_CARD", groups[k][0], groups[best][1], score, "credit_card", True)
            )
            for j in range(k, best + 1):
                used[j] = True
            k = best + 1

    def _ssns(
        self,
        text: str,
        groups: list[tuple[int, int]],
        values: list[str],
        seps: list[str],
        used: list[bool],
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        for k in range(ng):
            if used[k]:
                continue
            if (
                k + 2 < ng
                and not used[k + 1]
                and not used[k + 2]
                and len(values[k]) == 3
                and len(values[k + 1]) == 2
                and len(values[k + 2]) == 4
                and seps[k] == seps[k + 1]
                and seps[k] in ("-", " ", ".")
                and (k == 0 or seps[k - 1] not in ("-", ".", " "))
                and (k + 3 >= ng or seps[k + 2] not in ("-", ".", " "))
            ):
                if not ssn_valid(values[k], values[k + 1], values[k + 2]):
                    continue
                start = groups[k][0]
                score = 0.85 if seps[k] == "-" else 0.6
                if _context(text, start, _SSN_CONTEXT):
                    score += 0.1
                out.append(RawMatch("US_SSN", start, groups[k + 2][1], score, "us_ssn", True))
                used[k] = used[k + 1] = used[k + 2] = True
            elif ng == 1 and len(values[0]) == 9:
                start = groups[0][0]
                v = values[0]
                if _context(text, start, _SSN_CONTEXT) and ssn_valid(v[:3], v[3:5], v[5:]):
                    out.append(RawMatch("US_SSN", start, groups[0][1], 0.6, "us_ssn", True))
                    used[0] = True

    def _phones_in(
        self,
        text: str,
        groups: list[tuple[int, int]],
        seps: list[str],
        used: list[bool],
        ext_end: int,
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        k = 0
        while k < ng:
            if used[k]:
                k += 1
                continue
            # longest run of free groups from k with 7..15 digits that validates
            last = k
            count = 0
            ends: list[int] = []
            while last < ng and not used[last]:
                count += groups[last][1] - groups[last][0]
                if count > 17:
                    break
                # a phone inside a longer run ends where a space does ("... 2671 2x")
                if last == ng - 1 or seps[last] == " " or used[last + 1]:
                    ends.append(last)
                last += 1
            hit = None
            gs, ge = groups[k]
            if _EPOCH.fullmatch(text, gs, ge) and (gs == 0 or text[gs - 1] != "+"):
                k += 1  # a bare Unix time in seconds or ms (2001-2033), not a phone
                continue
            for j in reversed(ends):
                start = groups[k][0]
                end = groups[j][1]
                digits = sum(b - a for a, b in groups[k : j + 1])
                if digits < 7:
                    break
                # include a leading "+", "(" or "00"-style prefix and a closing ")"
                while start > 0 and text[start - 1] in "+(" and (k == 0 or "(" in seps[k - 1]):
                    start -= 1
                if end < len(text) and text[end] == ")" and "(" in text[start:end]:
                    end += 1
                if j == ng - 1 and ext_end > groups[j][1]:
                    end = ext_end
                if self._phones.check(text[start:end]):
                    hit = (start, end, j)
                    break
            if hit is None:
                k += 1
                continue
            start, end, j = hit
            score = _phone_score(text, start)
            if score is not None:
                out.append(RawMatch("PHONE_NUMBER", start, end, score, "phone", True))
            k = j + 1
