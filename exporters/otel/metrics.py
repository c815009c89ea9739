"""GenAI client metrics from trace records, through the SDK's MeterProvider.

Histograms (names in :mod:`sidecar.semconv`, buckets as the GenAI conventions advise),
recorded only for GenAI routes (``chat``, ``text_completion``, ``embeddings``):

- ``gen_ai.client.token.usage`` ({token}; ``gen_ai.token.type`` input | output)
- ``gen_ai.client.operation.duration`` (s; the request's total time; ``error.type`` on
  failures)
- ``gen_ai.client.operation.time_to_first_chunk`` (s; streams)
- ``gen_ai.client.operation.time_per_output_chunk`` (s; streams). The record holds the
  *mean* time per output token, so one value per request is recorded, not one per chunk.

Attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``server.address``, ``server.port``. Served model names are
bounded: the first ``max_models`` distinct values, then ``other`` (the SDK's own
cardinality limit, 2000 per metric, would be far too late); a requested name (client
text) takes one of its own ``max_models`` slots only when an upstream served the
request, else it is ``other`` unless it already has a slot.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import Meter

from exporters.otel.spans import GENAI_ROUTES, upstream_server
from sidecar import semconv as sc
from sidecar.record import TraceRecord

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
TTFC_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)
TPOC_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class BoundedValues:
    """The first ``limit`` distinct values pass; later new ones become ``other``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_models must be at least 1")
        self.limit = limit
        self._seen: set[str] = set()

    def known(self, value: str) -> str:
        """``value`` if it already passed, else ``other``; takes no slot."""
        return value if value in self._seen else sc.LABEL_OTHER

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return sc.LABEL_OTHER
        self._seen.add(value)
        return value


class GenAiMetrics:
    """The four GenAI histograms; :meth:`record` adds one record's points. May raise on a
    malformed record (the exporter counts it)."""

    def __init__(self, meter: Meter, *, provider_name: str, max_models: int) -> None:
        self.provider_name = provider_name
        self.models = BoundedValues(max_models)  # served names
        self.requested = BoundedValues(max_models)  # requested names an upstream answered
        self.token_usage = meter.create_histogram(
            sc.OTEL_METRIC_TOKEN_USAGE, unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            sc.OTEL_METRIC_OPERATION_DURATION, unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.ttfc = meter.create_histogram(
            sc.OTEL_METRIC_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to the first output chunk of a stream.",
            explicit_bucket_boundaries_advisory=TTFC_BUCKETS,
        )
        self.tpoc = meter.create_histogram(
            sc.OTEL_METRIC_TIME_PER_OUTPUT_CHUNK, unit="s",
            description="Mean time per output token after the first, per stream.",
            explicit_bucket_boundaries_advisory=TPOC_BUCKETS,
        )

    def record(self, r: TraceRecord) -> None:
        if r.route not in GENAI_ROUTES:
            return
        a: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: r.route,
            sc.GEN_AI_PROVIDER_NAME: self.provider_name,
        }
        if r.model_served:
            a[sc.GEN_AI_RESPONSE_MODEL] = self.models(r.model_served)
        if r.model_requested:  # client text: takes a slot only once an upstream served it
            a[sc.GEN_AI_REQUEST_MODEL] = (self.requested(r.model_requested) if r.model_served
                                          else self.requested.known(r.model_requested))
        address, port = upstream_server(r.upstream)
        if address:
            a[sc.SERVER_ADDRESS] = address
        if port:
            a[sc.SERVER_PORT] = port
        # error.type only on the duration: the token and chunk metrics do not define it
        self.duration.record(
            r.total_ms / 1000.0, {**a, sc.ERROR_TYPE: r.error_type} if r.error_type else a
        )
        if r.prompt_tokens is not None:
            self.token_usage.record(
                r.prompt_tokens, {**a, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_TYPE_INPUT}
            )
        if r.completion_tokens is not None:
            self.token_usage.record(
                r.completion_tokens, {**a, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_TYPE_OUTPUT}
            )
        if r.ttft_ms is not None:
            self.ttfc.record(r.ttft_ms / 1000.0, a)
        if r.tpot_ms is not None:
            self.tpoc.record(r.tpot_ms / 1000.0, a)
