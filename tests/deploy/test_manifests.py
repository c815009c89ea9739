"""deploy/: the Kubernetes manifests and the Dockerfile name only ports, paths, environment
variables and settings the code really serves or reads. The lists are derived from the
code: routes from the built app's router, settings from the pydantic models, other
variables from string literals in the packages."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sidecar.app import create_app
from sidecar.dashboard.rules import prometheus_rule
from sidecar.policy import load_policy
from sidecar.settings import _TOP_LEVEL_SCALARS, ENV_PREFIX, ServerSettings, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
EXAMPLE = DEPLOY / "kubernetes" / "overlays" / "example"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")):
        for doc in _docs(path):
            if "kind" in doc:
                out[f"{path.relative_to(DEPLOY)}:{doc['kind']}"] = doc
    return out


def _served_paths() -> set[str]:
    settings = load_settings(env={}, overrides={"upstream": {"url": "http://127.0.0.1:9"},
                                                "handoff": {"enabled": True},
                                                "guardrails": {"enabled": False}})
    app = create_app(settings, exporters=[])
    return {r.canonical for r in app.router.resources()}


def _setting_exists(path: list[str]) -> bool:
    """Whether a dotted settings path (from a RAILWATCH_A__B variable) is a real key."""
    model: Any = Settings
    for i, key in enumerate(path):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        field = model.model_fields.get(key)
        if field is None:
            return False
        model = field.annotation
        if i < len(path) - 1 and not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
    return True


def _code_literals() -> str:
    return "\n".join(p.read_text() for pkg in ("sidecar", "detectors", "exporters")
                     for p in (ROOT / pkg).rglob("*.py"))


def check_env_name(name: str, literals: str) -> None:
    if name.startswith(ENV_PREFIX):
        rest = name[len(ENV_PREFIX):]
        if "__" in rest:
            path = [p.lower() for p in rest.split("__")]
            assert _setting_exists(path), f"{name}: no setting {'.'.join(path)}"
            return
        if rest.lower() in _TOP_LEVEL_SCALARS:  # RAILWATCH_DATA_DIR, RAILWATCH_LOG_LEVEL
            return
    assert f'"{name}"' in literals, f"{name} is read nowhere in the code"


def _railwatch_container() -> dict[str, Any]:
    deployment = _docs(BASE / "deployment.yaml")[0]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "railwatch")


def test_every_manifest_parses_with_kind_and_name() -> None:
    manifests = _all_manifests()
    kinds = {k.split(":")[1] for k in manifests}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "Kustomization"} <= kinds
    for key, doc in manifests.items():
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], key
    kustomization = _docs(BASE / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (BASE / resource).is_file(), resource
    for gen in kustomization["configMapGenerator"]:
        for file in gen["files"]:
            assert (BASE / file).is_file()


def test_env_vars_are_settings_the_code_reads() -> None:
    literals = _code_literals()
    container = _railwatch_container()
    names = [e["name"] for e in container["env"]]
    example = _docs(EXAMPLE / "kustomization.yaml")[0]
    for patch in example["patches"]:
        for c in yaml.safe_load(patch["patch"])["spec"]["template"]["spec"]["containers"]:
            names += [e["name"] for e in c["env"]]
    for name in names:
        check_env_name(name, literals)
    with pytest.raises(AssertionError):
        check_env_name("RAILWATCH_SERVER__PORTT", literals)
    with pytest.raises(AssertionError):
        check_env_name("OTEL_EXPORTER_OTLP_ENDPONT", literals)
    env = {e["name"]: e.get("value", "x" * 32) for e in container["env"]}
    settings = load_settings(env=env)  # the values validate too
    assert settings.server.port == container["ports"][0]["containerPort"]


def test_ports_and_paths_are_served() -> None:
    served = _served_paths()
    container = _railwatch_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in served and get["port"] in ports, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = _docs(BASE / "service.yaml")[0]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    monitor = _docs(BASE / "servicemonitor.yaml")[0]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] in served
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    policy = _docs(BASE / "networkpolicy.yaml")[0]
    open_ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert open_ports == list(ports.values())  # vLLM's port stays inside the pod
    assert "/dashboard" in served and "/review" in served
    assert "/nonexistent" not in served


def test_container_args_are_cli_options() -> None:
    from sidecar.cli import build_parser

    container = _railwatch_container()
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve" and args.config
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(args.config).parent) in mounts
    policy_env = next(e["value"] for e in container["env"]
                      if e["name"] == "RAILWATCH_GUARDRAILS__POLICY")
    assert str(Path(policy_env).parent) in mounts
    assert container["securityContext"]["runAsNonRoot"] is True


def test_config_files_are_valid() -> None:
    default = ROOT / "sidecar" / "policies" / "default.yaml"
    assert (BASE / "policy.yaml").read_text() == default.read_text()
    load_policy(str(EXAMPLE / "policy.yaml"))
    settings = load_settings(EXAMPLE / "railwatch.example.yaml", env={})
    assert settings.exporters[0].kind == "clickhouse"
    assert settings.handoff.review.token is not None  # the Secret carries the review token
    from exporters.clickhouse import ClickHouseConfig

    ClickHouseConfig.model_validate(settings.exporters[0].options)
    assert (BASE / "prometheusrule.yaml").read_text() == prometheus_rule()


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _readme_install() -> list[str]:
    """The pip installs of the README's quick start, e.g. ['torch==2.13.0', '.[models,ner]']."""
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines()
                if "pip install" in ln and "railwatch serve" in ln)
    return _pip_targets(line)


def _pip_targets(text: str) -> list[str]:
    out = []
    for part in re.split(r"&&|\\\n", text):
        words = shlex.split(part)
        if "pip" in " ".join(words) and "install" in words:
            out += [w for w in words[words.index("install") + 1:]
                    if not w.startswith("-") and "$" not in w]  # options, build args
    return out


def test_dockerfile_install_matches_the_readme() -> None:
    text = _dockerfile()
    run = next(block for block in re.findall(r"^RUN (.*?)(?<!\\)\n", text, re.M | re.S)
               if "pip install" in block)
    assert "${TORCH_INDEX_URL:+" in run  # the cuda variant: the same pin from a CUDA index
    assert _pip_targets(run) == _readme_install()


def test_dockerfile_shape() -> None:
    text = _dockerfile()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3  # build, runtime-cpu, runtime-cuda...
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M) and "runtime-cuda" in text
    assert "FROM runtime-${VARIANT}" in text
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    assert user.split(":")[0] not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, re.M | re.S)
    assert health and "/healthz" in health.group(1) and "/healthz" in _served_paths()
    port = int(re.search(r"^EXPOSE (\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    env = dict(re.findall(r"(RAILWATCH_[A-Z_]+)=(\S+)", text))
    assert int(env["RAILWATCH_SERVER__PORT"]) == port
    assert f"127.0.0.1:{port}/healthz" in health.group(1)
    literals = _code_literals()
    for name in env:
        check_env_name(name, literals)
    assert ServerSettings().port == port
    assert "railwatch models pull" in text
