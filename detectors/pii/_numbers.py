"""Numbers: credit cards, US SSNs, IBANs, IPv4 addresses and phone numbers.

One regex finds candidate *runs* (7+ characters of digits and separators, or the
check digits of an IBAN); everything else happens per run, in this order, each
step marking the digit groups it used so later steps do not reuse them:

1. IBAN (the run follows two letters): registered length, then mod-97;
2. one bare group (the common case: "123456789"): card, YYYYMMDD date, SSN after
   an SSN context word, Unix time, phone;
3. several groups: a whole-run date short-cut, then cards (Luhn + IIN range, or
   Luhn after a card word), dotted quads (the address; a "/24" after it is used
   up but not reported), dates, 3-2-4 SSNs, and phone numbers (see
   :mod:`._phone_search`: the longest sub-run that python-phonenumbers validates,
   or that a phone context word vouches for).

Look-alikes rejected here, each a test case: invalid Luhn or IIN, bad IBAN
checksum (no phone is read out of its digits either), SSN areas 000/666/9xx,
group 00, serial 0000, dotted quads after version/section words or inside longer
dotted chains, dates, digits glued to words, numbers after order/invoice/ticket
words or ``#``, bare 10- and 13-digit Unix times; versions, OIDs, routing numbers
and bare counts are not phones (:mod:`._phone_rules`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from detectors.pii._checks import (
    IBAN_LENGTHS,
    card_brand,
    iban_valid,
    is_date,
    luhn_valid,
    ssn_valid,
)
from detectors.pii._match import RawMatch, Spans
from detectors.pii._phone_rules import VERSION_WORDS, prev_word
from detectors.pii._phone_search import Groups, PhoneSearch
from detectors.pii._phones import PhoneValidator

__all__ = ["NumberScanner"]

# Stage one: 7+ characters of digits and separators from digit to digit (anything
# shorter than "1.1.1.1" or a 7-digit phone number is no candidate), or two digits
# followed by four letters/digits, or by a separator and four capitals or digits
# (an IBAN's check digits after its country code: "GB82WEST...", "GB82 WEST ...").
# Both branches start with a digit, so ``re`` skips to digits in C; in prose most
# numbers ("56 tests", "3.11.7", "Q4 2016") fail in C too.
_CANDIDATE = re.compile(r"\d(?:[\d\-./ ()]{5,}\d|\d(?:[A-Za-z0-9]{4}|[ -][A-Z0-9]{4}))")
# The same for ASCII-only text (str.isascii() is O(1)): [0-9] is a third cheaper to
# scan for than \d, which must also consider every other script's digits.
_CANDIDATE_ASCII = re.compile(
    r"[0-9](?:[0-9\-./ ()]{5,}[0-9]|[0-9](?:[A-Za-z0-9]{4}|[ -][A-Z0-9]{4}))"
)
# Within a candidate: digit groups joined by one separator ("415-555-2671",
# "+44 (0)20 7946 0958", "4111 1111 1111 1111", "192.168.0.1/24", "12/05/2023").
_RUN = re.compile(r"\d+(?:(?:[-./ ]|\) ?|\)-| ?\()\d+)*")
_GROUP = re.compile(r"\d+")
_SPLIT = re.compile(r"(\D+)")  # a run -> [group, separator, group, ...]
_DATE_RUN = re.compile(r"\d{4}([-/.])\d\d?\1\d\d?|\d\d?([-/.])\d\d?\2(?:\d\d){1,2}")
_EXT_AFTER = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}(?!\w)", re.IGNORECASE)
_IBAN = re.compile(r"[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
_MAJOR_CARDS = frozenset({"visa", "mastercard", "amex", "discover"})
_DATE_SEPS = frozenset({"-", "/", "."})
_MAX_GROUPS = 64  # longer runs are number lists or dumps: cards and IPs only

_CARD_CONTEXT = re.compile(
    r"(?<![a-z])(?:cards?|credit|debit|cc|visa|mastercard|amex|maestro|jcb|discover|diners|"
    r"unionpay|pan)(?![a-z])"
)
_SSN_CONTEXT = ("ssn", "social security", "social sec", "ss#", "ss #")


def _context(text: str, start: int, words: Iterable[str], width: int = 40) -> bool:
    window = text[max(0, start - width) : start].lower()
    return any(w in window for w in words)


def _card_score(text: str, start: int, brand: str | None) -> float | None:
    """Score of a Luhn-valid 12-19 digit number at ``start``, or None: not a card.

    A card network's IIN range and length: 1.0 (0.85 for the smaller networks).
    Outside every range, only with a card word just before it ("card", "cc",
    "visa"...): 0.7 (test-card generators and regional networks use other ranges).
    """
    if brand is not None:
        return 1.0 if brand in _MAJOR_CARDS else 0.85
    window = text[max(0, start - 40) : start].lower()
    return 0.7 if _CARD_CONTEXT.search(window) else None


def _looks_reserved(values: list[str], seps: list[str]) -> bool:
    """3-2-4 groups (an SSN's shape) or 3+ groups of four digits (a card's)."""
    if len(values) == 3 and [len(v) for v in values] == [3, 2, 4] and seps[0] == seps[1]:
        return True
    return len(values) >= 3 and all(len(v) == 4 for v in values) and len(set(seps)) == 1


class NumberScanner:
    """Number-shaped PII in one text; the flags say which labels to look for."""

    def __init__(
        self,
        phones: PhoneValidator,
        *,
        card: bool,
        ssn: bool,
        ip: bool,
        iban: bool,
        phone: bool,
    ) -> None:
        self._phone_search = PhoneSearch(phones)
        self._card = card
        self._ssn = ssn
        self._ip = ip
        self._iban = iban
        self._phone = phone

    def scan(self, text: str, out: list[RawMatch], taken: Spans) -> None:
        """Append matches to ``out``; skip runs overlapping ``taken`` (URLs, e-mails)."""
        n = len(text)
        skip_until = 0
        iban = self._iban
        for cand in (_CANDIDATE_ASCII if text.isascii() else _CANDIDATE).finditer(text):
            cs, ce = cand.span()
            if cs < skip_until:
                continue
            if iban and cs >= 2 and text[cs - 1].isalpha() and text[cs - 2].isalpha():
                iban_end, valid = self._iban_at(text, cs - 2)
                if iban_end > 0:
                    if valid and not taken.overlaps(cs - 2, iban_end):
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
                if taken and taken.overlaps(s, ext_end):
                    continue
                if ext_end == e and text[s:e].isdigit():
                    self._bare_number(text, s, e, out)
                else:
                    self._groups(text, s, e, ext_end, out)

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

    def _bare_number(self, text: str, s: int, e: int, out: list[RawMatch]) -> None:
        """One group of 7+ digits: the common case, without the group machinery."""
        n = e - s
        digits = text[s:e]
        if 12 <= n <= 19 and self._card:
            score = _card_score(text, s, card_brand(digits))
            if score is not None and luhn_valid(digits):
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
        self._phone_search.bare(text, s, e, out)

    def _groups(self, text: str, s: int, e: int, ext_end: int, out: list[RawMatch]) -> None:
        """A run of several digit groups."""
        run = text[s:e]
        if _DATE_RUN.fullmatch(run):
            parts = _SPLIT.split(run)
            if is_date(parts[0::2], parts[1::2]):
                return  # the commonest long run in prose, and never PII here
        parts = _SPLIT.split(run)
        values = parts[0::2]
        seps = parts[1::2]
        ng = len(values)
        groups: Groups = []
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
        if ng > _MAX_GROUPS:
            return
        # dates are consumed so no phone or SSN is read into them
        for k in range(ng):
            if used[k]:
                continue
            if (
                ng - k >= 3
                and seps[k] in _DATE_SEPS
                and seps[k] == seps[k + 1]
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
            self._phone_search.in_run(text, groups, values, seps, used, ext_end, out)

    def _cards(
        self,
        text: str,
        groups: Groups,
        values: list[str],
        seps: list[str],
        used: list[bool],
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        context: bool | None = None  # a card word before the run, looked up once
        k = 0
        while k < ng:
            best = -1
            digits = ""
            for j in range(k, ng):
                if j > k and (seps[j - 1] not in (" ", "-") or seps[j - 1] != seps[k]):
                    break
                if len(values[j]) < 3 and j < ng - 1:
                    break  # card numbers are written in groups of 3-6 digits
                digits += values[j]
                if len(digits) > 19:
                    break
                if len(digits) < 12:
                    continue
                if card_brand(digits) is None:
                    if context is None:
                        context = _card_score(text, groups[0][0], None) is not None
                    if not context:
                        continue
                if luhn_valid(digits):
                    best = j
            if best < 0:
                k += 1
                continue
            start, end = groups[k][0], groups[best][1]
            brand = card_brand("".join(values[k : best + 1]))
            score = 0.7 if brand is None else 1.0 if brand in _MAJOR_CARDS else 0.85
            out.append(RawMatch("CREDIT_CARD", start, end, score, "credit_card", True))
            for j in range(k, best + 1):
                used[j] = True
            k = best + 1

    def _ipv4s(
        self,
        text: str,
        groups: Groups,
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
            if prev_word(text, start) in VERSION_WORDS:
                continue
            # a "/24" prefix length is not reported (it is no personal data), but it
            # is used up: no phone number is read out of "10.0.0.1/32 555 1234"
            cidr = k + 4 < ng and seps[k + 3] == "/" and len(values[k + 4]) <= 2
            if cidr and int(values[k + 4]) <= 32:
                used[k + 4] = True
            out.append(RawMatch("IP_ADDRESS", start, groups[k + 3][1], 0.85, "ipv4", True))
            used[k] = used[k + 1] = used[k + 2] = used[k + 3] = True

    def _ssns(
        self,
        text: str,
        groups: Groups,
        values: list[str],
        seps: list[str],
        used: list[bool],
        out: list[RawMatch],
    ) -> None:
        ng = len(groups)
        for k in range(ng - 2):
            if (
                not (used[k] or used[k + 1] or used[k + 2])
                and len(values[k]) == 3
                and len(values[k + 1]) == 2
                and len(values[k + 2]) == 4
                and seps[k] == seps[k + 1]
                and seps[k] in ("-", " ", ".")
                and (k == 0 or seps[k - 1] not in ("-", ".", " "))
                and (k + 3 >= ng or seps[k + 2] not in ("-", ".", " "))
                and ssn_valid(values[k], values[k + 1], values[k + 2])
            ):
                start = groups[k][0]
                score = 0.85 if seps[k] == "-" else 0.6
                if _context(text, start, _SSN_CONTEXT):
                    score += 0.1
                out.append(RawMatch("US_SSN", start, groups[k + 2][1], score, "us_ssn", True))
                used[k] = used[k + 1] = used[k + 2] = True
