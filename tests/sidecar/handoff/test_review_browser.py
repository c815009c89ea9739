"""The review UI in a real headless Chromium: signed in by a one-time link, rendered.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped, saying so,
only when no Chromium binary can be found.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from sidecar.handoff.model import ConversationPart, Span
from tests.helpers.chromium import SKIP_REASON, find_chromium, run_chromium
from tests.sidecar.handoff._support import ReviewApp

MakeApp = Callable[..., Awaitable[ReviewApp]]
HOSTILE = "<script>document.title='pwned'</script> reach me at jane@doe.com, you idiot"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0], "IHDR CRC"
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), "PNG not complete"
    return width, height


async def test_review_page_renders_in_headless_chromium(
    make_review_app: MakeApp, tmp_path: Path
) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(SKIP_REASON)
    app = await make_review_app()
    email = HOSTILE.index("jane@doe.com")
    insult = HOSTILE.index("idiot")
    h = await app.service.create(
        reason="policy: toxicity",
        messages=[
            ConversationPart("system", "You are a helpful support assistant."),
            ConversationPart("user", HOSTILE, (
                Span(email, email + 12, "EMAIL_ADDRESS", "pii", 0.99, "input", "flag"),
                Span(insult, insult + 5, "insult", "toxicity", 0.93, "input", "handoff"),
            )),
        ],
        answer=ConversationPart("assistant", "I will not answer that, you idiot.", (
            Span(28, 33, "insult", "toxicity", 0.88, "output", "handoff"),)),
        trace_id="a" * 32, route="chat", model="demo-model", tenant="acme",
        conversation_id="conv-42",
    )

    def link() -> str:
        ticket = app.auth.issue_ticket()
        return f"{app.url}/review/login?ticket={ticket}&next={quote(f'/review/{h.id}')}"

    # 1. the DOM after sign-in and redirect: the detail page, content escaped and marked
    rc, dom, err = await run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", link())
    assert rc == 0, err.decode(errors="replace")[-2000:]
    html = dom.decode()
    assert h.id in html and "Approve answer" in html
    assert "<title>Hand-off" in html  # the script did not run (it would rename the page)
    assert "&lt;script&gt;document.title" in html
    assert '<mark title="pii/EMAIL_ADDRESS">jane@doe.com</mark>' in html
    assert '<mark title="toxicity/insult">idiot</mark>' in html

    # 2. a screenshot of the same page
    shot = tmp_path / "review.png"
    rc, _, err = await run_chromium(binary, tmp_path / "profile-shot",
                                     f"--screenshot={shot}", "--window-size=1280,900",
                                     "--hide-scrollbars", link())
    assert rc == 0, err.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 900)
    assert len(data) > 20_000  # a rendered page, not a blank canvas
    keep = os.environ.get("RAILWATCH_TEST_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "review.png")
