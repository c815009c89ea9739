"""E-mail addresses, URLs and IPv6 addresses: found from cheap anchors.

Every search starts from a character that ``str.find`` locates in C (``@``,
``://``, ``www.``, ``:``) or from one regex with a literal ``.`` prefix (bare
domains), and grows the span around it with anchored matches capped at the
longest legal length (64-character local parts, 253-character hosts), so no input
makes the work quadratic.
"""

from __future__ import annotations

import ipaddress
import re

from detectors.pii._match import RawMatch, Spans
from detectors.pii._tlds import FILE_LIKE_TLDS

__all__ = ["WebScanner"]

_MAX_HOST = 253
_LOCAL_CHARS = frozenset("!#$%&'*+/=?^_`{|}~.-")
# local-part characters that in chat and code end what came before the address
_UP_TO_LAST_CUT = re.compile(r"[^@\s]*[=/|{}`\"]")
_DOMAIN = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+")
_HOST = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*")
_URL_TAIL = re.compile(r"[^\s<>\"'`{}|\\^]*")
_PORT_PATH = re.compile(r"(?::\d{1,5})?(?:[/?#][^\s<>\"'`{}|\\^]*)?")
_URL_TRAIL = ".,;:!?*_~'\""
_BARE_TLD = re.compile(r"\.([a-z]{2,24})(?![\w(-])")
_V6_BODY = re.compile(r"[0-9A-Fa-f:.]+(?:%[0-9A-Za-z_.\-]+)?(?:/\d{1,3})?")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")

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


def _trim_url(text: str, start: int, end: int) -> int:
    """End of ``text[start:end]`` without trailing punctuation or unbalanced ``)``/``]``."""
    url = text[start:end]
    for close, open_ in ((")", "("), ("]", "[")):
        if close not in url:
            continue  # the common case: nothing to balance, no walk in Python
        depth = 0
        for i, ch in enumerate(url):
            if ch == open_:
                depth += 1
            elif ch == close:
                if depth == 0:
                    url = url[:i]
                    break
                depth -= 1
    return start + len(url.rstrip(_URL_TRAIL))


def _valid_ipv6(body: str) -> bool:
    try:
        if "%" in body:  # zone id: IPv6Address accepts it, ip_interface does not
            ipaddress.IPv6Address(body)
        else:
            ipaddress.ip_interface(body)
    except ValueError:
        return False
    return True


_CJK_CLASS = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CJK = re.compile(f"[{_CJK_CLASS}]")  # Han, kana, Hangul, CJK punctuation, full-width
_NON_CJK_ALNUM = re.compile(f"[^\\W{_CJK_CLASS}]")


def _script_end(text: str, start: int, end: int) -> int:
    """``end``, or the first switch between CJK and other letters or digits in between.

    "john@example.com谢谢": CJK text written straight after an ASCII host is not
    part of it; an all-CJK IDN host ("例子.中国") is kept whole ("." and "-" are
    neutral). One C-level search in the common case.
    """
    if text.isascii() or start >= end:
        return end
    other = _NON_CJK_ALNUM if _CJK.match(text, start) else _CJK
    m = other.search(text, start, end)
    return m.start() if m else end


def _local_start(text: str, at: int) -> int:
    """Where the local part of an e-mail address ending before ``text[at]`` begins.

    Grown back over the characters RFC 5322 allows (64 at most), then cut where
    chat and code put something else right before an address: an assignment or
    path ("ADMIN_EMAIL=", "--email=", "users/", "a|b"), a switch from CJK text to
    the address ("请联系john@..."), and leading quotes, backticks, dots and other
    punctuation ("'john@...'", "`admin@...`"). An apostrophe inside the local part
    stays ("o'brien@...").
    """
    lo = at
    floor = max(0, at - 64)
    while lo > floor and (text[lo - 1].isalnum() or text[lo - 1] in _LOCAL_CHARS):
        lo -= 1
    cut = _UP_TO_LAST_CUT.match(text, lo, at)
    if cut is not None:
        lo = cut.end()
    if not text.isascii() and lo < at and _CJK.search(text, lo, at):
        last = _CJK.match(text, at - 1) is not None
        for i in range(at - 1, lo - 1, -1):
            if text[i].isalnum() and (_CJK.match(text, i) is not None) != last:
                lo = i + 1
                break
    while lo < at and not (text[lo].isalnum() or text[lo] == "_"):
        lo += 1
    return lo


class WebScanner:
    """E-mail, URL and IPv6 search; ``tlds`` is the lower-case TLD set. Stateless."""

    def __init__(self, tlds: frozenset[str]) -> None:
        self._tlds = tlds

    def _host_end(self, text: str, start: int, host: re.Match[str] | None) -> int:
        """End of the longest prefix of a dotted host whose last label is a TLD, or -1."""
        if host is None:
            return -1
        end = _script_end(text, host.start(), host.end())
        while True:
            dot = text.rfind(".", start, end)
            if dot <= start:
                return -1
            if text[dot + 1 : end].lower() in self._tlds:
                return end
            end = dot

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

    # -- e-mail --------------------------------------------------------------------

    def emails(self, text: str, out: list[RawMatch], taken: Spans) -> None:
        at = text.find("@")
        while at != -1:
            next_from = at + 1
            lo = _local_start(text, at)
            if lo < at and text[at - 1] != ".":
                domain = _DOMAIN.match(text, at + 1, at + 1 + _MAX_HOST)
                end = self._host_end(text, at + 1, domain)
                if end > 0 and not taken.overlaps(lo, end):
                    out.append(RawMatch("EMAIL_ADDRESS", lo, end, 0.95, "email", True))
                    taken.add(lo, end)
                    next_from = end
            at = text.find("@", next_from)

    # -- URLs ----------------------------------------------------------------------

    def scheme_urls(self, text: str, out: list[RawMatch], taken: Spans) -> None:
        i = text.find("://")
        while i != -1:
            lo = i
            while lo > 0 and i - lo < 16 and (text[lo - 1].isalnum() or text[lo - 1] in "+.-"):
                lo -= 1
            while lo < i and not text[lo].isalpha():
                lo += 1
            tail = _URL_TAIL.match(text, i + 3)
            assert tail is not None  # the pattern matches the empty string
            end = _trim_url(text, i + 3, tail.end())
            authority = text[i + 3 : end].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            host = authority.rsplit("@", 1)[-1]
            host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
            if i - lo >= 2 and host and not taken.overlaps(lo, end):
                ok = self._host_validated(host)
                out.append(RawMatch("URL", lo, end, 0.95 if ok else 0.7, "url", ok))
                taken.add(lo, end)
            i = text.find("://", max(end, i + 3))

    def www_urls(self, text: str, out: list[RawMatch], taken: Spans) -> None:
        for prefix in ("www.", "WWW."):
            i = text.find(prefix)
            while i != -1:
                nxt = i + 4
                before = text[i - 1] if i else " "
                if not (before.isalnum() or before in "./@-_") and not taken.overlaps(i, i + 4):
                    end = self._host_end(text, i, _HOST.match(text, i, i + _MAX_HOST))
                    if end > 0:
                        path = _PORT_PATH.match(text, end)
                        assert path is not None  # the pattern matches the empty string
                        end = _trim_url(text, i, path.end())
                        if not taken.overlaps(i, end):
                            out.append(RawMatch("URL", i, end, 0.9, "url", True))
                            taken.add(i, end)
                        nxt = end
                i = text.find(prefix, nxt)

    def bare_domains(self, text: str, out: list[RawMatch], taken: Spans) -> None:
        # [chain_lo, chain_hi) is known to be host characters from an earlier walk
        # back, so "a.com.a.com...." is walked once, not once per ".com"
        chain_lo = chain_hi = -1
        for m in _BARE_TLD.finditer(text):
            if m.group(1) not in _BARE_TLDS:
                continue
            dot = m.start()
            if taken and taken.overlaps(dot, dot + 1):
                continue
            lo = dot
            floor = max(0, dot - _MAX_HOST)
            while lo > floor and (text[lo - 1].isalnum() or text[lo - 1] in ".-"):
                lo -= 1
                if lo == chain_hi:
                    lo = max(chain_lo, floor)
            chain_lo, chain_hi = lo, dot
            while lo < dot and not text[lo].isalnum():
                lo += 1
            if lo == dot or (lo > 0 and text[lo - 1] in "@/\\:_#$%&=+~"):
                continue
            end = self._host_end(text, lo, _HOST.match(text, lo, lo + _MAX_HOST))
            if end < m.end() or (end < len(text) and text[end] == "("):
                continue  # "logger.info(": a call, not a host
            last = text[text.rfind(".", lo, end) + 1 : end]
            if last not in _BARE_TLDS:  # also rejects upper case: "ASP.NET", "VB.NET"
                continue
            if text[lo:dot].replace(".", "").replace("-", "").isdigit():
                continue  # "1.5.com" is a typo, not a host
            path = _PORT_PATH.match(text, end)
            assert path is not None  # the pattern matches the empty string
            end = _trim_url(text, lo, path.end())
            if taken.overlaps(lo, end):
                continue
            out.append(RawMatch("URL", lo, end, 0.6, "url", True))
            taken.add(lo, end)

    # -- IPv6 ----------------------------------------------------------------------

    def ipv6(self, text: str, out: list[RawMatch], taken: Spans) -> None:
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
                    and not taken.overlaps(lo, end)
                    and _valid_ipv6(body)
                ):
                    # the address only: a "/64" prefix length is not personal data,
                    # but nothing else may be read out of it either
                    out.append(RawMatch("IP_ADDRESS", lo, lo + len(addr), 0.9, "ipv6", True))
                    taken.add(lo, end)
            i = text.find(":", nxt)
