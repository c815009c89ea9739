"""The set of top-level domains, read offline from tldextract's bundled snapshot.

tldextract's module-level ``extract()`` (which presidio's email recognizer calls)
fetches the Public Suffix List over the network on first use. We never call it:
``TLDExtract(suffix_list_urls=(), cache_dir=None)`` reads only the snapshot that
ships inside the package and writes no cache. Loading takes a few milliseconds and
happens once, in ``start()``.
"""

from __future__ import annotations

import functools

__all__ = ["FILE_LIKE_TLDS", "offline_extractor", "top_level_domains"]

# Real TLDs that are far more often file extensions in chat and code text
# ("setup.py", "README.md", "main.rs", "run.sh"). A bare "name.py" is not taken as
# a domain; "www.name.py" or "https://name.py" still is.
FILE_LIKE_TLDS = frozenset(
    {"py", "md", "sh", "rs", "pl", "pm", "zip", "mov", "so", "cc", "ps", "ml", "mk",
     "ai", "in", "ws", "pro", "do", "sc", "bz", "am", "app", "java", "properties"}
)  # fmt: skip


@functools.cache
def offline_extractor() -> object:
    """A ``tldextract.TLDExtract`` that never touches the network or the disk cache."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@functools.cache
def top_level_domains() -> frozenset[str]:
    """Lower-case top-level domains (ASCII and punycode forms of IDN TLDs)."""
    extractor = offline_extractor()
    out: set[str] = set()
    for rule in extractor.tlds:  # type: ignore[attr-defined]
        if "." in rule or rule.startswith(("!", "*")):
            continue
        rule = rule.lower()
        out.add(rule)
        if not rule.isascii():
            try:
                out.add(rule.encode("idna").decode("ascii"))
            except UnicodeError:
                pass
    return frozenset(out)
