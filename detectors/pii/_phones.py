"""Phone-number validation of candidate strings, with python-phonenumbers' metadata.

``phonenumbers.PhoneNumberMatcher`` over a whole text costs about 30 ms per KB for
presidio's eight regions, and even on a 15-character window 25-100 us per region.
So the pattern tier never runs it over text: the scanner cuts candidate strings
out of digit runs and hands them here one at a time.

For the default leniency ``valid`` a candidate is decided without
``phonenumbers.parse`` (14 us) and without the matcher (the steps mirror
``parse`` + ``PhoneNumberMatcher``'s VALID verdict, using the library's public
metadata; a differential test checks that the two agree):

1. one regex over all regions ("could these digits be a national number
   anywhere?") rejects most non-phone digit strings in a single C call;
2. per region, in the configured order: strip the national prefix the way
   ``parse`` does (``national_prefix_for_parsing``, only if the rest is still a
   viable number of a possible length), skip the region if its formatting rule
   for that number requires the prefix and it was not written (phonenumbers'
   VALID leniency rejects those: "666-12-3456" is no French mobile without its
   leading 0), then ``is_valid_number`` on a ``PhoneNumber`` built from the
   digits (about 9 us);
3. international numbers (``+`` or ``00``): country code by the longest-first
   rule of ``parse``, national prefix stripped the same way, ``is_valid_number``.

Regions whose metadata has a ``national_prefix_transform_rule`` (e.g. BR
carrier codes) and the other leniencies (``possible``, ``strict_grouping``,
``exact_grouping``) go through ``phonenumbers.parse`` and, for the grouping ones,
a ``PhoneNumberMatcher`` over the candidate alone: exact, and slower.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from phonenumbers import Leniency, NumberParseException, PhoneNumberMatcher

from detectors.pii._checks import ascii_digits

__all__ = ["PhoneLeniency", "PhoneValidator"]

PhoneLeniency = Literal["possible", "valid", "strict_grouping", "exact_grouping"]

_LENIENCY = {
    "possible": Leniency.POSSIBLE,
    "valid": Leniency.VALID,
    "strict_grouping": Leniency.STRICT_GROUPING,
    "exact_grouping": Leniency.EXACT_GROUPING,
}
_NON_DIGITS = re.compile(r"\D+")
# Extensions as phonenumbers writes and parses them: "x123", "ext. 123", "#123".
_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension|#)\s*\d{1,6}$", re.IGNORECASE)
_MAY_HAVE_EXTENSION = re.compile(r"[xXeE#]").search
_FIRST_GROUP_ONLY = re.compile(r"\(?\\1\)?")  # phonenumbers' rule for "no prefix shown"
_TYPE_DESCS = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail",
)  # fmt: skip

_Format = tuple[re.Pattern[str] | None, re.Pattern[str], bool]


@dataclass(frozen=True, slots=True)
class _Meta:
    """What the fast path needs of one region's (or calling code's) metadata."""

    code: str
    country_code: int
    national_prefix: str
    prefix_for_parsing: re.Pattern[str] | None
    has_transform: bool
    idd: re.Pattern[str] | None  # international (IDD) prefix dialled from here
    lengths: frozenset[int]  # this region's possible lengths (parse's length test)
    local_lengths: frozenset[int]  # lengths dialled locally only (US: 7 digits)
    max_length: int
    general: re.Pattern[str]  # this region's general pattern (parse's viability test)
    # every region sharing the calling code (US: all of NANPA; GB: GG, IM, JE):
    # is_valid_number accepts a number valid in any of them
    valid_lengths: frozenset[int]
    valid_typed: re.Pattern[str]
    formats: tuple[_Format, ...]  # the calling code's main region's number formats
    # national number, calling code + national number, or IDD + anything: a number
    # no branch matches cannot be valid when parsed with this region
    routes: re.Pattern[str]

    @classmethod
    def of(cls, md: phonenumbers.PhoneMetadata, code: str) -> _Meta:
        cc = int(md.country_code or 0)
        group = [
            m
            for m in (
                phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(cc, r)
                for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, (code,))
            )
            if m is not None and m.general_desc is not None
        ] or [md]
        gd = md.general_desc
        assert gd is not None  # checked by the callers
        typed = [
            desc.national_number_pattern
            for m in group
            for desc in (getattr(m, name, None) for name in _TYPE_DESCS)
            if desc is not None and desc.national_number_pattern
        ]
        general = gd.national_number_pattern or r"\d+"
        lengths = frozenset(gd.possible_length or ())
        pfp = md.national_prefix_for_parsing
        valid_typed = "|".join(f"(?:{t})" for t in typed) or general
        national = f"(?:{pfp or re.escape(md.national_prefix or '')})?(?:{valid_typed})"
        routes = [national, f"{cc}{national}"]
        if md.international_prefix:
            routes.append(f"(?:{md.international_prefix})[1-9]\\d{{5,}}")
        return cls(
            code=code,
            country_code=cc,
            national_prefix=md.national_prefix or "",
            prefix_for_parsing=re.compile(pfp) if pfp else None,
            has_transform=bool(md.national_prefix_transform_rule),
            idd=re.compile(md.international_prefix) if md.international_prefix else None,
            lengths=lengths,
            local_lengths=frozenset(gd.possible_length_local_only or ()),
            max_length=max(lengths, default=0),
            general=re.compile(f"(?:{general})"),
            valid_lengths=frozenset(n for m in group for n in _possible_lengths(m)),
            valid_typed=re.compile(valid_typed),
            formats=_formats(group[0]),
            routes=re.compile("|".join(routes)),
        )

    def strip_prefix(self, digits: str) -> str | None:
        """The NSN ``parse`` would keep (national prefix removed or not); None when
        a transform rule applies (the caller then falls back to ``parse``)."""
        if self.prefix_for_parsing is None or not digits:
            return digits
        m = self.prefix_for_parsing.match(digits)
        if m is None:
            return digits
        if self.has_transform and m.groups() and m.groups()[-1] is not None:
            return None
        rest = digits[m.end() :]
        if self.general.fullmatch(digits) and not self.general.fullmatch(rest):
            return digits  # the original is viable and the stripped one is not
        if len(rest) in self.lengths or len(rest) > self.max_length:
            return rest
        return digits  # too short once stripped: keep it (parse's length test)

    def may_be_valid(self, nsn: str) -> bool:
        return len(nsn) in self.valid_lengths and self.valid_typed.fullmatch(nsn) is not None

    def needs_prefix(self, nsn: str) -> bool:
        """Whether this number's national format requires the national prefix."""
        for leading, pattern, required in self.formats:
            if (leading is None or leading.match(nsn)) and pattern.fullmatch(nsn):
                return required
        return False


_Desc = tuple[frozenset[int], re.Pattern[str]]


def _desc(desc: phonenumbers.PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length or ()), re.compile(desc.national_number_pattern)


def _matches(desc: _Desc, nsn: str) -> bool:
    lengths, pattern = desc
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class _RegionTypes:
    """One region's number-type patterns, for ``is_valid_number`` without its overhead."""

    leading: re.Pattern[str] | None
    general: _Desc | None
    types: tuple[_Desc, ...]

    @classmethod
    def of(cls, md: phonenumbers.PhoneMetadata) -> _RegionTypes:
        types = tuple(d for d in (_desc(getattr(md, n, None)) for n in _TYPE_DESCS) if d)
        return cls(
            leading=re.compile(md.leading_digits) if md.leading_digits else None,
            general=_desc(md.general_desc),
            types=types,
        )

    def has_type(self, nsn: str) -> bool:
        # phonenumbers' _number_type_helper(nsn, metadata) != UNKNOWN
        if self.general is None or not _matches(self.general, nsn):
            return False
        return any(_matches(t, nsn) for t in self.types)


class _CallingCode:
    """``is_valid_number`` for one calling code, replayed on precompiled metadata.

    phonenumbers resolves the region first (the first region of the calling code
    whose ``leading_digits`` match, or else whose types accept the number) and then
    checks the number's type in that region only; so do we.
    """

    __slots__ = ("regions",)

    def __init__(self, country_code: int) -> None:
        regions = []
        for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
            md = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, code)
            if md is not None:
                regions.append(_RegionTypes.of(md))
        self.regions = tuple(regions)

    def is_valid(self, nsn: str) -> bool:
        if len(self.regions) == 1:
            return self.regions[0].has_type(nsn)
        for region in self.regions:
            if region.leading is not None:
                if region.leading.match(nsn):
                    return region.has_type(nsn)
            elif region.has_type(nsn):
                return True
        return False


def _possible_lengths(md: phonenumbers.PhoneMetadata) -> tuple[int, ...]:
    return tuple(md.general_desc.possible_length or ()) if md.general_desc else ()


def _formats(md: phonenumbers.PhoneMetadata) -> tuple[_Format, ...]:
    out: list[_Format] = []
    for fmt in md.number_format:
        if not fmt.pattern:
            continue
        rule = fmt.national_prefix_formatting_rule
        required = bool(
            rule
            and not fmt.national_prefix_optional_when_formatting
            and not _FIRST_GROUP_ONLY.fullmatch(rule)
        )
        leading = re.compile(fmt.leading_digits_pattern[-1]) if fmt.leading_digits_pattern else None
        out.append((leading, re.compile(fmt.pattern), required))
    return tuple(out)


# Compiled metadata is a pure function of the installed phonenumbers release, so it
# is shared by every validator in the process (like ``re``'s own pattern cache).
@functools.cache
def _compiled_region(code: str) -> _Meta | None:
    md = phonenumbers.PhoneMetadata.metadata_for_region(code)
    if md is None or md.general_desc is None:
        return None
    return _Meta.of(md, code)


@functools.cache
def _compiled_calling_code(cc: int) -> tuple[_Meta, _CallingCode] | None:
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not codes:
        return None
    md = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(cc, codes[0])
    if md is None or md.general_desc is None:
        return None
    return _Meta.of(md, codes[0]), _CallingCode(cc)


class PhoneValidator:
    """Says whether one candidate string is a phone number in one of the regions.

    Construct once (in ``start()``): it compiles the regions' metadata. ``check``
    may be called from any thread and never raises.
    """

    def __init__(self, regions: Sequence[str], leniency: PhoneLeniency = "valid") -> None:
        self._leniency = leniency
        self._matcher_leniency = _LENIENCY[leniency]
        self._regions: list[_Meta] = []
        for code in regions:
            meta = _compiled_region(code)
            if meta is None:
                raise ValueError(f"no phone metadata for region {code!r}")
            self._regions.append(meta)
        # "could these digits be a number of any region, written nationally, after
        # the region's calling code, or after its international prefix?" in one C call
        self._any_region = re.compile(
            "|".join(r.routes.pattern for r in self._regions) if leniency != "possible" else r"\d+"
        )
        # lengths dialled in the regions (full or local-only), for possible_national
        self._dialled = frozenset().union(*(r.lengths | r.local_lengths for r in self._regions))
        self._dialled_after_prefix = tuple(
            (r.national_prefix, r.lengths | r.local_lengths) for r in self._regions
        )
        # metadata per calling code for international numbers: the configured
        # regions' codes now, any other on first use (compiling all ~215 up front
        # would add about a second to start-up). Entries are immutable once stored;
        # two threads filling the same one at once store the same cached value.
        self._by_calling_code: dict[int, tuple[_Meta, _CallingCode] | None] = {}
        for region in self._regions:
            self._calling_code(region.country_code)

    @property
    def regions(self) -> list[str]:
        return [r.code for r in self._regions]

    def check(self, candidate: str) -> bool:
        """Whether ``candidate`` is a phone number at the configured leniency.

        ``candidate`` is the exact span text (digits, separators, an optional
        leading ``+``/``00`` and trailing extension).
        """
        main = _EXTENSION.sub("", candidate) if _MAY_HAVE_EXTENSION(candidate) else candidate
        digits = ascii_digits(_NON_DIGITS.sub("", main))  # parse() reads "０３" as "03"
        n = len(digits)
        stripped = main.lstrip("( ")
        if stripped.startswith("+") or (digits.startswith("00") and stripped.startswith("00")):
            if not 8 <= n <= 17:  # "00" + up to 15 E.164 digits
                return False
            if self._leniency == "valid":
                return self._international(digits if stripped[0] == "+" else digits[2:])
            text = candidate if stripped.startswith("+") else "+" + candidate.lstrip("( ")[2:]
            return self._accept(text, None)
        if not 7 <= n <= 15 or self._any_region.fullmatch(digits) is None:
            return False
        for region in self._regions:
            if self._leniency == "valid":
                verdict = self._national(region, digits)
                if verdict is None:  # transform rule: let phonenumbers parse it
                    verdict = self._accept(candidate, region.code)
            else:
                verdict = self._accept(candidate, region.code)
            if verdict:
                return True
        return False

    def possible(self, candidate: str) -> bool:
        """Whether an international candidate (``+``/``00``) has a known calling code
        and, national prefix stripped, a length that calling code's regions dial
        (phonenumbers' ``is_possible_number``, from the compiled metadata).

        Weaker than :meth:`check`; callers accept such a number only with context.
        Always False under the grouping leniencies, which ask for more, not less.
        """
        if self._leniency in ("strict_grouping", "exact_grouping"):
            return False
        main = _EXTENSION.sub("", candidate) if _MAY_HAVE_EXTENSION(candidate) else candidate
        stripped = main.lstrip("( ")
        digits = ascii_digits(_NON_DIGITS.sub("", stripped))
        if stripped.startswith("00"):
            digits = digits[2:]
        elif not stripped.startswith("+"):
            return False
        split = self._calling_code_of(digits)
        if split is None:
            return False
        meta, rest = split
        nsn = meta.strip_prefix(rest)
        return nsn is not None and len(nsn) in meta.valid_lengths | meta.local_lengths

    def possible_national(self, candidate: str) -> bool:
        """Whether a number written nationally has a length some configured region
        dials (its full or local-only lengths, with or without its national prefix).

        Weaker than :meth:`check`; callers accept such a number only with context.
        Always False under the grouping leniencies, which ask for more, not less.
        """
        if self._leniency in ("strict_grouping", "exact_grouping"):
            return False
        digits = ascii_digits(_NON_DIGITS.sub("", candidate))
        n = len(digits)
        if n in self._dialled:
            return True
        return any(
            prefix and digits.startswith(prefix) and n - len(prefix) in lengths
            for prefix, lengths in self._dialled_after_prefix
        )

    def _national(self, region: _Meta, digits: str) -> bool | None:
        """``parse(candidate, region)`` + the VALID verdict, from metadata (None:
        a case we leave to ``parse``)."""
        if region.routes.fullmatch(digits) is None:
            return False
        if region.idd is not None:
            m = region.idd.match(digits)
            if m is not None and m.end() < len(digits) and digits[m.end()] != "0":
                return self._international(digits[m.end() :])  # "011 44 20...", "019..."
        cc = str(region.country_code)
        if digits.startswith(cc):  # the calling code written without "+"
            rest = region.strip_prefix(digits[len(cc) :])
            if rest is None:
                return None
            if (not region.general.fullmatch(digits) and region.general.fullmatch(rest)) or (
                len(digits) > region.max_length
            ):
                return region.may_be_valid(rest) and self._valid(region.country_code, rest)
        nsn = region.strip_prefix(digits)
        if nsn is None:
            return None
        if not region.may_be_valid(nsn):
            return False
        if nsn == digits and region.national_prefix and region.needs_prefix(nsn):
            return False
        return self._valid(region.country_code, nsn)

    def _calling_code(self, cc: int) -> tuple[_Meta, _CallingCode] | None:
        if cc in self._by_calling_code:
            return self._by_calling_code[cc]
        entry = _compiled_calling_code(cc)
        self._by_calling_code[cc] = entry
        return entry

    def _calling_code_of(self, digits: str) -> tuple[Any, str] | None:
        """(metadata of the calling code ``digits`` start with, the digits after it), or
        None. Like ``parse()``, the first prefix that is a known calling code wins."""
        if not digits or digits[0] == "0":
            return None  # no calling code starts with 0
        for size in (1, 2, 3):
            if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                entry = self._calling_code(int(digits[:size]))
                return None if entry is None else (entry[0], digits[size:])
        return None

    def _international(self, digits: str) -> bool:
        split = self._calling_code_of(digits)
        if split is None:
            return False
        meta, rest = split
        nsn = meta.strip_prefix(rest)
        if nsn is None:
            return self._accept("+" + digits, None)
        return meta.may_be_valid(nsn) and self._valid(meta.country_code, nsn)

    def _valid(self, country_code: int, nsn: str) -> bool:
        entry = self._calling_code(country_code)
        return entry is not None and entry[1].is_valid(nsn)

    def _accept(self, text: str, region: str | None) -> bool:
        """The exact, slower verdict: ``parse`` and the matcher's own test."""
        try:
            number = phonenumbers.parse(text, region, keep_raw_input=True)
        except NumberParseException:
            return False
        if self._leniency == "possible":
            return bool(phonenumbers.is_possible_number(number))
        matches = PhoneNumberMatcher(text, region or "US", self._matcher_leniency)
        return any(m.start == 0 and m.end == len(text) for m in matches)
