"""Lock out repeated failed sign-ins, per client address and per user name.

Each key (``("addr", address)``, ``("user", hash of the name)``) counts consecutive
failures. The first ``free_failures`` cost nothing; each later one locks the key
for ``backoff_s * 2**(n - 1)`` seconds (n = failures past the free ones), at most
``backoff_max_s``. While a key is locked, attempts are refused without checking
the credential (429 with ``Retry-After``) and do not extend the lock. A success
clears both keys of that attempt.

The trade-off of the per-user key: someone who knows the basic-auth user name can
keep that user locked out from elsewhere; the bearer token (no user name) and
other reviewers are unaffected, and the per-address key alone stops a single
client's guessing.

Memory is bounded (``max_keys``, least recently used evicted). Event-loop use
only (not thread-safe); nothing here blocks.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable


def _keys(address: str | None, user: str | None) -> list[tuple[str, str]]:
    keys = [("addr", address or "unknown")]
    if user:
        keys.append(("user", hashlib.blake2b(user.encode("utf-8", "surrogatepass"),
                                             digest_size=16).hexdigest()))
    return keys


class LoginThrottle:
    """Consecutive failures and lock expiry per key; see the module docstring."""

    def __init__(
        self,
        *,
        free_failures: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 900.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # [n, until]
        self.lockouts = 0  # attempts refused while locked

    def __len__(self) -> int:
        return len(self._entries)

    def locked_for(self, address: str | None, user: str | None) -> float:
        """Seconds the attempt must wait (0.0: it may be checked). A positive answer
        counts as one refused attempt."""
        now = self._clock()
        wait = max((self._entries.get(k, (0.0, 0.0))[1] - now for k in _keys(address, user)),
                   default=0.0)
        if wait > 0.0:
            self.lockouts += 1
            return wait
        return 0.0

    def failed(self, address: str | None, user: str | None) -> None:
        now = self._clock()
        for key in _keys(address, user):
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [0.0, 0.0]
                if len(self._entries) > self.max_keys:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            entry[0] += 1
            over = int(entry[0]) - self.free_failures
            if over > 0:
                entry[1] = now + min(self.backoff_max_s, self.backoff_s * 2.0 ** min(over - 1, 60))

    def succeeded(self, address: str | None, user: str | None) -> None:
        for key in _keys(address, user):
            self._entries.pop(key, None)
