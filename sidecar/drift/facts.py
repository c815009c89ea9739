"""Facts about a chat request that drift needs but a stored trace may not keep.

Computed at ingress from the parsed body (a few µs: one hash of the system prompt),
stored as trace attributes, so drift works whatever ``privacy.capture`` keeps of the
text: counts, a flag and a hash, never text. May not raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sidecar import semconv as sc


def system_prompt_hash(text: str) -> str:
    """16 hex chars identifying a system prompt (blake2b; not reversible to the text)."""
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()


def chat_facts(roles: Sequence[str], system_texts: Sequence[str], tools: bool) -> dict[str, str]:
    """Trace attributes: turns (user messages), tools present, system prompt hash/length."""
    facts = {
        sc.RAILWATCH_PROMPT_TURNS: str(sum(1 for r in roles if r == "user")),
        sc.RAILWATCH_PROMPT_TOOLS: "1" if tools else "0",
    }
    if system_texts:
        system = "\n".join(system_texts)
        facts[sc.RAILWATCH_SYSTEM_PROMPT_HASH] = system_prompt_hash(system)
        facts[sc.RAILWATCH_SYSTEM_PROMPT_CHARS] = str(len(system))
    return facts
