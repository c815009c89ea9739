"""``record_feedback``: thumbs or a score for a trace, from the app that made the call.

Local mode writes to the same feedback table as the sidecar's ``POST /v1/feedback``
(validated by the same parser); remote mode posts to that endpoint. Raises
``BadRequestError`` for an invalid value (naming the field, never the text), and
``SdkRemoteError`` / ``FeedbackUnavailableError`` when it cannot be stored.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson

from sidecar.errors import FeedbackUnavailableError, SdkRemoteError
from sidecar.feedback import parse_feedback, store_feedback
from sidecar.sdk.runtime import runtime


def record_feedback(
    trace_id: str,
    *,
    thumbs: str | None = None,
    score: int | None = None,
    comment: str | None = None,
    corrected_answer: str | None = None,
    user: str | None = None,
) -> str | None:
    """Store feedback for ``trace_id``; returns the feedback id (local mode) or None."""
    body: dict[str, Any] = {"trace_id": trace_id}
    for key, value in (("thumbs", thumbs), ("score", score), ("comment", comment),
                       ("corrected_answer", corrected_answer), ("user", user)):
        if value is not None:
            body[key] = value
    feedback = parse_feedback(body)
    rt = runtime()
    if rt.config.mode == "remote":
        assert rt.config.sidecar_url is not None
        request = urllib.request.Request(
            rt.config.sidecar_url.rstrip("/") + "/v1/feedback", data=orjson.dumps(body),
            method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=rt.config.timeout_s) as resp:  # noqa: S310
                if resp.status != 201:
                    raise SdkRemoteError(f"the sidecar answered {resp.status} to /v1/feedback")
        except (urllib.error.URLError, OSError) as exc:
            raise SdkRemoteError(f"the sidecar could not store feedback: {type(exc).__name__}") from None
        return None
    store, privacy = rt.feedback_store, rt.privacy
    if store is None or privacy is None:
        raise FeedbackUnavailableError("no feedback storage is configured")
    known = store.trace_exists(feedback.trace_id)
    try:  # privacy.capture applies as on the sidecar's /v1/feedback
        stored = store_feedback(store, feedback, known, rt.store_feedback_text, privacy)
    except Exception as exc:  # noqa: BLE001 - storage failures of any kind: one error
        raise FeedbackUnavailableError("feedback could not be stored") from exc
    return stored
