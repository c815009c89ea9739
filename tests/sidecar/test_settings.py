"""Settings: YAML, then environment, then flags; bad values fail naming key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.settings import load_settings


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.server.port == 8080 and s.server.max_body_bytes == 4 * 1024 * 1024
    assert s.upstream.url is None and s.privacy.capture == "masked"


def test_file_env_and_flags_merge_in_order(tmp_path: Path) -> None:
    cfg = tmp_path / "railwatch.yaml"
    cfg.write_text("server:\n  port: 9000\n  max_in_flight: 5\nupstream:\n  url: http://a:1\n")
    s = load_settings(
        cfg,
        env={"RAILWATCH_SERVER__MAX_IN_FLIGHT": "7", "RAILWATCH_PRIVACY__CAPTURE": "none",
             "RAILWATCH_MODELS_DIR": "/ignored/plain/variable"},
        overrides={"upstream": {"url": "http://b:2/"}},
    )
    assert s.server.port == 9000
    assert s.server.max_in_flight == 7
    assert s.privacy.capture == "none"
    assert s.upstream.url == "http://b:2"


@pytest.mark.parametrize(
    ("yaml_text", "env", "needle"),
    [
        ("server:\n  prot: 1\n", {}, "invalid setting 'server.prot' (from {file}): unknown setting"),
        ("server:\n  port: -1\n", {}, "'server.port' (from {file})"),
        ("upstream:\n  url: ftp://x\n", {}, "'upstream.url' (from {file})"),
        ("", {"RAILWATCH_SERVER__PORT": "eighty"}, "'server.port' (from environment variable RAILWATCH_SERVER__PORT)"),
        ("", {"RAILWATCH_PRIVACY__CAPTURE": "everything"}, "'privacy.capture' (from environment variable"),
        ("- a\n- b\n", {}, "must hold a mapping"),
        ("server: [\n", {}, "is not valid YAML"),
    ],
)
def test_bad_values_name_key_and_source(tmp_path: Path, yaml_text: str, env: dict[str, str], needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env=env)
    assert needle.format(file=cfg) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/railwatch.yaml", env={})
