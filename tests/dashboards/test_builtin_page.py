"""The built-in /dashboard on the real sidecar after real traffic: protected like the review
UI, every built-in panel filled, charts as inline SVG, and a headless Chromium screenshot
whose pixels show drawn chart series (not 'no data' boxes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.dashboard import panels
from sidecar.dashboard.svg import PALETTE
from tests.dashboards.png import colour_counts, read_png
from tests.dashboards.traffic import TOKEN, Traffic
from tests.helpers.chromium import SKIP_REASON, find_chromium, run_chromium

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers,
                                                   allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


def test_dashboard_requires_credentials(traffic: Traffic) -> None:
    url = traffic.sidecar.url + "/dashboard"
    status, headers, _ = asyncio.run(_get(url, Accept="text/html"))
    assert status == 303 and headers["Location"] == "/dashboard/login"
    status, _, body = asyncio.run(_get(url))
    assert status == 401 and '"authentication_error"' in body
    status, _, _ = asyncio.run(_get(url, Authorization="Bearer wrong-token-0123456789"))
    assert status == 401


def test_dashboard_shows_every_panel_with_rows(traffic: Traffic) -> None:
    status, headers, html = asyncio.run(_get(traffic.sidecar.url + "/dashboard?range=1h",
                                             Authorization=f"Bearer {TOKEN}"))
    assert status == 200
    assert "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    for _, panel in panels.sql_panels():
        match = re.search(rf'id="panel-{panel.key}" data-kind="(\w+)" data-rows="(\d+)"', html)
        assert match, f"panel {panel.key} missing"
        assert int(match.group(2)) > 0, f"panel {panel.key} has no rows"
    assert html.count("<polyline") + html.count("<circle") >= 5
    assert "query failed" not in html and "no data" not in html


def test_search_and_login_form(traffic: Traffic) -> None:
    handoff_id = traffic.handoff_ids[0]

    async def flow() -> str:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(traffic.sidecar.url + "/dashboard/login") as r:
                csrf = _CSRF.search(await r.text())
                assert csrf
            async with http.post(traffic.sidecar.url + "/dashboard/login", allow_redirects=False,
                                 data={"csrf": csrf.group(1), "token": "wrong" * 5}) as r:
                assert r.status == 403
            async with http.get(traffic.sidecar.url + "/dashboard/login") as r:
                csrf = _CSRF.search(await r.text())
                assert csrf
            async with http.post(traffic.sidecar.url + "/dashboard/login", allow_redirects=False,
                                 data={"csrf": csrf.group(1), "token": TOKEN}) as r:
                assert r.status == 303
            async with http.get(traffic.sidecar.url + f"/dashboard?search={handoff_id}") as r:
                assert r.status == 200
                return await r.text()

    html = asyncio.run(flow())
    section = html[html.index('id="panel-handed_off"'):]
    section = section[:section.index("</section>")]
    assert handoff_id in section and 'data-rows="1"' in section


def test_dashboard_in_headless_chromium(traffic: Traffic, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(SKIP_REASON)
    auth = traffic.sidecar.runtime.review_auth
    shot = tmp_path / "dashboard.png"
    link = f"{traffic.sidecar.url}/dashboard/login?ticket={auth.issue_ticket()}"
    rc, _, err = asyncio.run(run_chromium(binary, tmp_path / "profile", f"--screenshot={shot}",
                                          "--window-size=1280,1200", "--hide-scrollbars", link))
    assert rc == 0, err.decode(errors="replace")[-2000:]
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1280, 1200)
    counts = colour_counts(rows)
    palette = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in PALETTE}
    drawn = sum(n for colour, n in counts.items() if colour in palette)
    assert drawn > 1500, f"only {drawn} pixels of chart series colours: empty charts?"
    assert len(counts) > 50  # text, axes and series, not a blank or error page
    keep = os.environ.get("RAILWATCH_TEST_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard.png")


def test_generated_token_is_shown_once_and_works(start_sidecar: Any, demo_upstream: Any) -> None:
    from sidecar.dashboard.wiring import startup_notice

    sc = start_sidecar(demo_upstream.url)  # no hand-off, no review credential configured
    app = sc.runner.app
    notice = startup_notice(app, sc.url)
    assert notice is not None and notice.startswith(f"railwatch dashboard: {sc.url}/dashboard/login")
    assert startup_notice(app, sc.url) is None
    token = notice.rsplit(" ", 1)[1]
    status, _, _ = asyncio.run(_get(sc.url + "/dashboard", Authorization=f"Bearer {token}"))
    assert status == 200
    status, _, _ = asyncio.run(_get(sc.url + "/dashboard", Authorization="Bearer " + "x" * 40))
    assert status == 401


def test_dashboard_shows_this_sidecars_live_state(traffic: Traffic) -> None:
    status, _, html = asyncio.run(_get(traffic.sidecar.url + "/dashboard",
                                       Authorization=f"Bearer {TOKEN}"))
    assert status == 200
    now = html[html.index('id="now"'):html.index('id="railwatch-overview"')]
    info = re.findall(r'railwatch_detector_info\{backend="([^"]*)",detector="([^"]*)",'
                      r'kind="([^"]*)"\}', traffic.metrics_text)
    assert len(info) >= 4
    for backend, detector, kind in info:  # as /metrics says, e.g. toxicity on its fallback
        assert "".join(f"<td>{v}</td>" for v in (detector, kind, backend, "up")) in now
    assert "<td>primary</td><td>closed</td>" in now
    assert "<td>clickhouse</td>" in now and "<td>requests in flight</td>" in now


def test_failed_sign_ins_lock_the_dashboard_out(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, handoff={"enabled": True, "review": {
        "token": TOKEN, "login_free_failures": 0, "login_backoff_s": 30}})
    url = sc.url + "/dashboard"
    status, _, _ = asyncio.run(_get(url, Authorization="Bearer " + "w" * 40))
    assert status == 401
    status, headers, body = asyncio.run(_get(url, Authorization=f"Bearer {TOKEN}"))
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "too_many_failed_logins" in body
    # the review UI shares the lockout and answers it with the same error
    review = asyncio.run(_get(sc.url + "/review", Authorization=f"Bearer {TOKEN}"))
    assert review[0] == 429 and int(review[1]["Retry-After"]) >= 1
    same = ("type", "code")  # the message says how many seconds are left: it may differ
    assert ([json.loads(review[2])["error"][k] for k in same]
            == [json.loads(body)["error"][k] for k in same])
