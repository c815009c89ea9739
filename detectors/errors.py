"""Every exception the detector layer raises, in one place.

The tree::

    DetectorError                     base of everything below
    ├── DetectorConfigError           bad configuration: unknown detector kind, bad
    │   │                             options (the message names the detector and the key)
    │   └── UnknownDetectorError      a kind no entry point provides, or a detector name
    │                                 the runner was not given
    ├── DetectorLoadError             an entry point exists but importing it failed, or
    │                                 it does not name a detector class
    ├── DetectorStartError            ``start()`` failed (missing model, bad pattern...)
    └── DetectorRunError              one ``detect`` call failed; ``code`` is stable
        ├── DetectorTimeoutError      code ``"timeout"``: it ran past its ``timeout_s``
        ├── DetectorCrashedError      code ``"crashed"``: it raised, or broke the contract
        └── DetectorUnavailableError  code ``"unavailable"``: not started, or closed

The runner never raises the ``DetectorRunError`` family into the request path: it
turns them into a :class:`detectors.runner.DetectionOutcome` whose ``error`` is the
``code``. The classes exist so a detector may raise one to pick its code, and so a
caller outside the runner (the SDK, a test) can raise an outcome's error.

No message in this module's exceptions contains checked text: messages name
detectors, option keys and exception types, never a prompt or an answer.
"""

from __future__ import annotations

__all__ = [
    "DetectorConfigError",
    "DetectorCrashedError",
    "DetectorError",
    "DetectorLoadError",
    "DetectorRunError",
    "DetectorStartError",
    "DetectorTimeoutError",
    "DetectorUnavailableError",
    "UnknownDetectorError",
]


class DetectorError(Exception):
    """Base class of every detector-layer exception."""


class DetectorConfigError(DetectorError):
    """A detector's configuration is wrong; raised at start-up, never per request.

    ``detector`` is the detector's instance name (or kind) and ``key`` the dotted
    option key at fault, when one is.
    """

    def __init__(self, message: str, *, detector: str | None = None, key: str | None = None):
        super().__init__(message)
        self.detector = detector
        self.key = key


class UnknownDetectorError(DetectorConfigError):
    """No detector of that kind is installed, or the runner has no detector of that name."""


class DetectorLoadError(DetectorError):
    """An installed entry point could not be imported or is not a detector class."""


class DetectorStartError(DetectorError):
    """A detector's ``start()`` failed; the application should not become ready."""


class DetectorRunError(DetectorError):
    """One detection failed; ``code`` is the stable string recorded in outcomes."""

    code: str = "crashed"


class DetectorTimeoutError(DetectorRunError):
    """The detector did not answer within its ``timeout_s``."""

    code = "timeout"


class DetectorCrashedError(DetectorRunError):
    """The detector raised, or returned something that breaks the contract."""

    code = "crashed"


class DetectorUnavailableError(DetectorRunError):
    """The detector is not started, or the runner is closed."""

    code = "unavailable"
