"""Phone numbers in digit runs: where a number starts and ends, and whether it is one.

Called by :class:`detectors.pii._numbers.NumberScanner` for one bare digit group
(:meth:`PhoneSearch.bare`) or for the free groups of a run that cards, IPs, dates
and SSNs left (:meth:`PhoneSearch.in_run`). A candidate is a phone when
python-phonenumbers validates it (:class:`._phones.PhoneValidator`) and no
negative word rules it out, or, without that validation, when a phone context word
vouches for a number of a phone's shape and a possible length; a bare national
digit string always needs the context word. The rules: :mod:`._phone_rules`.
"""

from __future__ import annotations

import re

from detectors.pii._match import RawMatch
from detectors.pii._phone_rules import (
    NOT_PHONE_WORDS,
    VERSION_WORDS,
    dotted_lookalike,
    has_phone_context,
    is_list_marker,
    plausible_national,
    prev_word,
    street_follows,
)
from detectors.pii._phones import PhoneValidator

__all__ = ["Groups", "PhoneSearch"]

Groups = list[tuple[int, int]]  # (start, end) of each digit group of a run
_HASH_BEFORE = re.compile(r"#\s*$")
_EPOCH = re.compile(r"1\d{9}|1\d{12}")
_MAX_PHONE_GROUPS = 7  # "+33 6 12 34 56 78" has 6


def _vetoed(text: str, start: int) -> bool:
    """Do the words before ``start`` say no phone number starts there (an order or
    version word, ``#``)?"""
    word = prev_word(text, start)
    if word in NOT_PHONE_WORDS or word in VERSION_WORDS:
        return True
    return _HASH_BEFORE.search(text, max(0, start - 3), start) is not None


def _phone_context(text: str, start: int, end: int) -> bool | None:
    """None when the words before ``text[start:end]`` say it is no phone number (an
    order/version word, ``#``, a street name after it); else whether a phone context
    word is near (see :mod:`._phone_rules`). Cheap: call it before validating."""
    if _vetoed(text, start):
        return None
    if text.startswith(" ", end) and text[start] != "+" and street_follows(text, end):
        return None  # a house number and more: "17031 2202 Rissik St"
    return has_phone_context(text, start, end)


def _phone_score(text: str, start: int, *, valid: bool, context: bool) -> float:
    """Score of a phone number at ``start``: 0.7 national, 0.85 international, +0.1
    with context; 0.6 for one phonenumbers rejected (accepted only with context)."""
    if not valid:
        return 0.6
    score = 0.85 if text[start] == "+" or text.startswith("00", start) else 0.7
    return round(score + 0.1, 2) if context else score


class PhoneSearch:
    """Phone numbers among digit groups; stateless apart from the validator."""

    def __init__(self, phones: PhoneValidator) -> None:
        self._phones = phones

    def bare(self, text: str, s: int, e: int, out: list[RawMatch]) -> None:
        """``text[s:e]``, one group of 7-15 digits (maybe after a ``+``)."""
        digits = text[s:e]
        start = s - 1 if s and text[s - 1] == "+" else s
        if start == s and _EPOCH.fullmatch(digits):
            return  # a bare Unix time in seconds or ms (2001-2033), not a phone
        context = _phone_context(text, start, e)
        if context is None or (start == s and not context):
            return  # a bare national digit string is a phone only with context
        valid = self._phones.check(text[start:e])
        if not valid:  # then only with context, and of a possible length
            if not context:
                return
            if start < s:
                if not self._phones.possible(text[start:e]):
                    return
            elif not (plausible_national([digits]) and self._phones.possible_national(digits)):
                return
        score = _phone_score(text, start, valid=valid, context=context)
        out.append(RawMatch("PHONE_NUMBER", start, e, score, "phone", valid))

    def in_run(
        self,
        text: str,
        groups: Groups,
        values: list[str],
        seps: list[str],
        used: list[bool],
        ext_end: int,
        out: list[RawMatch],
    ) -> None:
        """Phone numbers among the free groups of one run, longest first per start."""
        if "." in seps and dotted_lookalike(values, seps):
            return  # a version string or an OID
        ng = len(groups)
        last_group = ng - 1
        if (
            ng >= 2
            and len(values[-1]) <= 2
            and seps[-1] == " "
            and is_list_marker(text, groups[-1][1])
        ):
            ng -= 1  # "... 901820 2. (030) 901821": the next item's marker
        k = 0
        while k < ng:
            if used[k] or (k and seps[k - 1] == "."):
                k += 1  # used, or inside a dotted chain
                continue
            gs, ge = groups[k]
            if _EPOCH.fullmatch(text, gs, ge) and (gs == 0 or text[gs - 1] != "+"):
                k += 1  # a bare Unix time in seconds or ms (2001-2033), not a phone
                continue
            start = gs  # with a leading "+" or "("
            while start > 0 and text[start - 1] in "+(" and (k == 0 or "(" in seps[k - 1]):
                start -= 1
            if _vetoed(text, start):  # before any validation: the words alone decide
                k += 1
                continue
            international = text[start:gs].endswith("+") or values[k].startswith("00")
            ends = self._phone_ends(text, k, ng, values, seps, used, international)
            hit = None
            for j in reversed(ends):  # longest first
                end = self._phone_end(text, start, groups[j][1], j == last_group, ext_end)
                if self._phones.check(text[start:end]):
                    hit = (end, j, True)
                    break
            if hit is None and ends:  # shape and length first, the words only then
                hit = self._unvalidated(text, start, groups, values, k, ends[-1], ext_end)
            context = None if hit is None else _phone_context(text, start, hit[0])
            if hit is None or context is None or not (hit[2] or context):
                k += 1
                continue
            end, j, valid = hit
            score = _phone_score(text, start, valid=valid, context=context)
            out.append(RawMatch("PHONE_NUMBER", start, end, score, "phone", valid))
            k = j + 1

    def _unvalidated(
        self,
        text: str,
        start: int,
        groups: Groups,
        values: list[str],
        k: int,
        j: int,
        ext_end: int,
    ) -> tuple[int, int, bool] | None:
        """Groups ``k..j`` as a phone number phonenumbers rejects but that has a
        phone's shape and a possible length: ``(end, j, False)``, else None. The
        caller accepts it only with a phone context word."""
        end = self._phone_end(text, start, groups[j][1], j == len(groups) - 1, ext_end)
        if text[start] == "+" or values[k].startswith("00"):
            return (end, j, False) if self._phones.possible(text[start:end]) else None
        if not plausible_national(values[k : j + 1]):
            return None
        if not self._phones.possible_national(text[groups[k][0] : groups[j][1]]):
            return None
        return end, j, False

    @staticmethod
    def _phone_ends(
        text: str,
        k: int,
        ng: int,
        values: list[str],
        seps: list[str],
        used: list[bool],
        international: bool,
    ) -> list[int]:
        """Groups where a phone starting at group ``k`` may end, shortest first.

        Free groups only, at most 17 digits and 7 groups, 7 digits at least, ending
        where a space follows (or the run ends). A ``(`` opens the next number
        ("+44 20 7946 0958 (415) 555-2671") unless it follows an international
        calling code ("+44 (0)20 7946 0958", "+1 (650) 253-0000").
        """
        ends: list[int] = []
        count = 0
        last = k
        while last < ng and not used[last] and last - k < _MAX_PHONE_GROUPS:
            count += len(values[last])
            if count > 17:
                break
            sep = seps[last] if last < len(seps) else ""
            if count >= 7 and (last == ng - 1 or sep[:1] == " " or used[last + 1]):
                ends.append(last)
            if "(" in sep and not (last == k and international and len(values[k]) <= 4):
                break
            last += 1
        return ends

    @staticmethod
    def _phone_end(text: str, start: int, end: int, last_group: bool, ext_end: int) -> int:
        """``end`` with a closing ``)`` and, on the run's last group, an extension."""
        if end < len(text) and text[end] == ")" and "(" in text[start:end]:
            end += 1
        if last_group and ext_end > end:
            end = ext_end
        return end
