"""Headless Chromium for browser tests: find Debian's binary, run it with a timeout.

Tests skip (saying how to install it) when no binary is found; ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

SKIP_REASON = "no Chromium binary found (apt-get install -y chromium, or set RAILWATCH_TEST_CHROMIUM)"


def find_chromium() -> str | None:
    for name in (os.environ.get("RAILWATCH_TEST_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "/usr/bin/chromium"):
        if name and (path := shutil.which(name)):
            return path
    return None


async def run_chromium(binary: str, profile: Path, *args: str,
                       timeout_s: float = 90) -> tuple[int, bytes, bytes]:
    """Run headless Chromium with a fresh profile; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"chromium did not finish within {timeout_s:.0f} s")
    assert proc.returncode is not None
    return proc.returncode, out, err
