"""detectors.registry: kinds from real entry points, options validated, errors named."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors import registry
from detectors.base import Detector
from detectors.denylist import DenylistDetector
from detectors.errors import (
    DetectorConfigError,
    DetectorError,
    DetectorLoadError,
    UnknownDetectorError,
)
from detectors.format import FormatDetector
from detectors.secrets import SecretsDetector

PLUGIN_MODULE = textwrap.dedent(
    '''
    """A third-party detector, found only through its entry point."""
    import pydantic

    from detectors.base import Finding


    class ShoutDetector:
        name = "shout"
        blocking = False

        class Options(pydantic.BaseModel):
            model_config = pydantic.ConfigDict(extra="forbid")
            min_run: int = pydantic.Field(default=3, ge=1)

        def __init__(self, options=None, *, name=None):
            self.options = options or self.Options()
            if name is not None:
                self.name = name

        async def start(self):
            pass

        async def detect(self, texts, contexts=None):
            run = self.options.min_run
            return [
                [Finding(self.name, "SHOUT", 1.0, 0, len(t))] if "!" * run in t else []
                for t in texts
            ]

        async def close(self):
            pass


    class NotADetector:
        def __init__(self, options=None, *, name=None):
            pass


    NOT_A_CLASS = 42
    '''
)


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Iterator[str]:
    """A real installed distribution (dist-info + module) on sys.path, removed after."""
    module = f"rw_test_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_MODULE)
    dist_info = tmp_path / "rw_test_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rw-test-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[railwatch.detectors]\n"
        f"shout = {module}:ShoutDetector\n"
        f"broken_import = {module}_missing:Nothing\n"
        f"not_a_detector = {module}:NotADetector\n"
        f"not_a_class = {module}:NOT_A_CLASS\n"
        "# same name as a built-in kind: the first distribution found keeps it\n"
        f"format = {module}:ShoutDetector\n"
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()


def test_builtin_kinds_are_installed_entry_points() -> None:
    kinds = registry.kinds()
    for kind in ("format", "denylist", "secrets", "pii", "toxicity"):
        assert kind in kinds
    classes = registry.available()
    assert classes["format"] is FormatDetector
    assert classes["denylist"] is DenylistDetector
    assert classes["secrets"] is SecretsDetector


@pytest.mark.parametrize(
    ("kind", "options", "name", "expected_cls", "expected_name"),
    [
        ("format", None, None, FormatDetector, "format"),
        ("format", {"require_json": True}, "json_out", FormatDetector, "json_out"),
        ("denylist", {"keywords": ["acme"]}, "codenames", DenylistDetector, "codenames"),
        ("secrets", {"disabled_labels": ["GENERIC_SECRET"]}, None, SecretsDetector, "secrets"),
    ],
)
def test_create_builtin(
    kind: str, options: dict | None, name: str | None, expected_cls: type, expected_name: str
) -> None:
    detector = registry.create(kind, options, name)
    assert type(detector) is expected_cls
    assert detector.name == expected_name
    assert isinstance(detector, Detector)


def test_create_passes_validated_options() -> None:
    detector = registry.create("format", {"require_json": True, "max_errors": 3})
    assert isinstance(detector, FormatDetector)
    assert detector.options.require_json is True
    assert detector.options.max_errors == 3
    ready = FormatDetector.Options(extract=False)
    assert registry.create("format", ready).options is ready  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "options", "key", "in_message"),
    [
        ("format", {"requir_json": True}, "requir_json", "Extra inputs"),
        ("format", {"max_errors": 0}, "max_errors", "greater than or equal to 1"),
        ("format", {"require_json": "very"}, "require_json", "valid boolean"),
        ("denylist", {"patterns": ["(unclosed"]}, "patterns.0.pattern", "invalid regular"),
        ("denylist", {"patterns": ["a*"]}, "patterns.0.pattern", "empty string"),
        ("denylist", {"keywords": [{"keyword": ""}]}, "keywords.0.keyword", "at least 1"),
        ("secrets", {"disabled_labels": ["NOPE"]}, "disabled_labels", "unknown labels"),
        ("secrets", {"entropy_threshold": 9}, "entropy_threshold", "less than or equal"),
    ],
)
def test_bad_options_name_detector_and_key(
    kind: str, options: dict, key: str, in_message: str
) -> None:
    with pytest.raises(DetectorConfigError) as caught:
        registry.create(kind, options, name="mine")
    err = caught.value
    assert err.detector == "mine"
    assert err.key == key
    assert f"option {key!r}" in str(err)
    assert "'mine'" in str(err)
    assert in_message in str(err)


def test_bad_option_value_is_not_echoed() -> None:
    with pytest.raises(DetectorConfigError) as caught:
        registry.create("format", {"max_errors": "s3cr3t-value"})
    assert "s3cr3t-value" not in str(caught.value)


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(DetectorConfigError, match="must be a mapping"):
        registry.create("format", ["require_json"])  # type: ignore[arg-type]


def test_unknown_kind() -> None:
    with pytest.raises(UnknownDetectorError) as caught:
        registry.create("no_such_kind")
    assert isinstance(caught.value, DetectorConfigError)
    assert caught.value.key == "kind"
    assert "no_such_kind" in str(caught.value)
    assert "format" in str(caught.value)  # lists what is installed


def test_third_party_entry_point(plugin_dist: str) -> None:
    assert "shout" in registry.kinds()
    classes = registry.available()
    assert classes["shout"].__module__ == plugin_dist
    # broken plug-ins are left out of available(), not fatal
    assert "broken_import" not in classes
    assert "not_a_class" not in classes

    detector = registry.create("shout", {"min_run": 2}, "yell")
    assert detector.name == "yell"
    assert type(detector).__module__ == plugin_dist


async def test_third_party_detector_runs(plugin_dist: str) -> None:
    detector = registry.create("shout", {"min_run": 2})
    await detector.start()
    findings = await detector.detect(["calm.", "loud!!"])
    assert findings[0] == []
    assert [f.label for f in findings[1]] == ["SHOUT"]


def test_third_party_options_are_validated(plugin_dist: str) -> None:
    with pytest.raises(DetectorConfigError) as caught:
        registry.create("shout", {"min_run": 0})
    assert caught.value.key == "min_run"


@pytest.mark.parametrize(
    ("kind", "error", "fragment"),
    [
        ("broken_import", DetectorLoadError, "failed to import: ModuleNotFoundError"),
        ("not_a_class", DetectorLoadError, "is not a class"),
        ("not_a_detector", DetectorLoadError, "does not implement the Detector protocol"),
    ],
)
def test_broken_third_party_kinds(
    plugin_dist: str, kind: str, error: type[DetectorError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        registry.create(kind)


def test_duplicate_kind_keeps_railwatch_builtin(
    plugin_dist: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The temp dist is first on sys.path, yet a plug-in cannot replace a built-in kind.
    assert registry.load("format") is FormatDetector
    assert "declared twice" in caplog.text
    assert plugin_dist in caplog.text


def test_plugin_gone_after_removal() -> None:
    assert "shout" not in registry.kinds()
