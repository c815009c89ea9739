"""The SDK in local mode against the demo upstream, with traces in embedded chDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import Backend

POLICY = """
detectors:
  pii: {kind: pii}
  secrets: {kind: secrets}
  toxicity: {kind: toxicity, options: {backend: auto}}
  format: {kind: format}
routes:
  - name: chat
    match: {paths: ["/v1/chat/completions", "/v1/completions"]}
    input:
      - {detector: secrets, action: block}
      - {detector: pii, action: mask, labels: [EMAIL_ADDRESS, CREDIT_CARD]}
    output:
      - {detector: toxicity, action: block, threshold: 0.8}
      - {detector: pii, action: mask, labels: [CREDIT_CARD, US_SSN]}
      - {detector: format, action: retry}
    retry: {times: 1}
"""


@pytest.fixture
def policy_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The policy above, or the one a test parametrizes the fixture with (``indirect``)."""
    path = tmp_path / "policy.yaml"
    path.write_text(getattr(request, "param", POLICY))
    return path


@pytest.fixture
def sdk_local(backend: Backend, database: str, tmp_path: Path, policy_file: Path,
              request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SDK configured in local mode; yields the runtime module; shut down after.
    ``privacy.capture`` is ``raw`` unless the test parametrizes the fixture
    (``indirect=True``) with another."""
    from sidecar.sdk import runtime as rt

    rt.shutdown()
    rt.configure(mode="local", policy=policy_file, settings={
        "data_dir": str(tmp_path / "data"),
        "privacy": {"capture": getattr(request, "param", "raw")},
        "exporters": [{"kind": "clickhouse", "options": {
            "dsn": backend.dsn, "database": database, "spill_dir": str(tmp_path / "spill"),
            "ttl_text_days": None}}],
    })
    yield rt
    rt.shutdown()
    rt._config = None  # back to the environment's configuration for other tests


def traces(backend: Backend, database: str, trace_id: str) -> list[dict[str, Any]]:
    """Rows of ``traces`` for one trace id, once the exporter flushed them."""
    import time

    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = backend.admin.query(
            f"SELECT span_id, parent_span_id, path, route, decision, status, prompt_text, "
            f"output_text, attributes, retries FROM {database}.traces WHERE trace_id = %(t)s",
            parameters={"t": trace_id})
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        if rows:
            return rows
        time.sleep(0.2)
    return rows
