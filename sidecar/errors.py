"""Every exception the sidecar raises, in one place.

Tree::

    RailwatchError                  base; never carries request or response text
    ├── ConfigError                 bad settings or policy file (start-up; names key and file)
    ├── StartupError                a component could not start
    ├── GuardrailViolation          SDK: the policy blocked or handed off a guarded call
    ├── SdkRemoteError              SDK remote mode: the sidecar could not be asked
    └── RequestError                a request ends with an OpenAI-shaped error response
        ├── BadRequestError         400  malformed JSON, wrong field types, bad UTF-8
        ├── UnauthorizedError       401  a missing or wrong token (SDK trace ingestion)
        ├── NotFoundError           404
        ├── PayloadTooLargeError    413  body over ``server.max_body_bytes``
        ├── OverloadedError         503  too many requests in flight (sends Retry-After)
        ├── GuardrailBlockedError   400  the policy blocked the request or the answer
        ├── GuardrailIncompleteError 413 a mask/block detector could not finish (503 if it failed)
        ├── RequestTimeoutError     408  the client sent its headers or body too slowly
        ├── HandoffConflictError    409  the hand-off was already resolved
        ├── HandoffUnavailableError 503  hand-off storage failed
        ├── FeedbackUnavailableError 503 feedback storage failed
        └── UpstreamError           an upstream failure
            ├── UpstreamUnavailableError  502  connect refused, reset, DNS, broken body
            ├── UpstreamTooLargeError     502  answer over ``upstream.max_response_bytes``
            └── UpstreamTimeoutError      504  connect or read timeout

A ``RequestError`` knows its HTTP status, its OpenAI error ``type`` and a stable
``code`` (also used as the trace record's ``error_type``). Its message is public:
it goes to the client, so it must be written for the client and never include
request text, upstream bodies or credentials. Internal details go to logs.

A guardrail *verdict* is a ``Decision`` value, not an exception; the exception
above only carries a block out to the client once the decision is taken.
"""

from __future__ import annotations

from typing import Any

import orjson


class RailwatchError(Exception):
    """Base of every railwatch exception."""


class GuardrailViolation(RailwatchError):
    """A guarded call (SDK) the policy did not let through: ``action`` is ``block`` or
    ``handoff``, ``stage`` ``input`` or ``output``, ``reasons`` the ``detector:label``
    pairs, ``findings`` the triggered findings (offsets, labels, scores; never text)."""

    def __init__(self, action: str, stage: str, reasons: tuple[str, ...],
                 findings: tuple[Any, ...] = (), trace_id: str | None = None) -> None:
        self.action = action
        self.stage = stage
        self.reasons = reasons
        self.findings = findings
        self.trace_id = trace_id
        listed = ", ".join(reasons) or "no reason given"
        super().__init__(f"guardrail {action} at {stage} ({listed})")


class SdkRemoteError(RailwatchError):
    """SDK remote mode: the sidecar did not answer a check; the call fails closed."""


class ConfigError(RailwatchError):
    """A setting or policy value is invalid; the message names the key and the source."""


class StartupError(RailwatchError):
    """A component failed to start (model missing, storage unreachable...)."""


class RequestError(RailwatchError):
    status: int = 500
    error_type: str = "server_error"  # OpenAI ``error.type``
    code: str = "internal_error"  # stable, also the trace's ``error_type``

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class BadRequestError(RequestError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UnauthorizedError(RequestError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_token"


class NotFoundError(RequestError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLargeError(RequestError):
    status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class OverloadedError(RequestError):
    status = 503
    error_type = "server_error"
    code = "overloaded"


class GuardrailBlockedError(RequestError):
    status = 400
    error_type = "invalid_request_error"
    code = "content_blocked"


class GuardrailIncompleteError(RequestError):
    """A detector whose rule masks or blocks did not finish (timeout: 413; failed: 503).
    The request is refused rather than forwarded unchecked."""

    status = 413
    error_type = "invalid_request_error"
    code = "guardrail_incomplete"


class RequestTimeoutError(RequestError):
    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class HandoffConflictError(RequestError):
    status = 409
    error_type = "invalid_request_error"
    code = "handoff_resolved"


class HandoffUnavailableError(RequestError):
    status = 503
    error_type = "server_error"
    code = "handoff_unavailable"


class FeedbackUnavailableError(RequestError):
    status = 503
    error_type = "server_error"
    code = "feedback_unavailable"


class UpstreamError(RequestError):
    status = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailableError(UpstreamError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTooLargeError(UpstreamError):
    status = 502
    code = "upstream_response_too_large"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_json(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(error_body(message, error_type, param, code))
