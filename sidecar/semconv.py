"""Every metric, span and attribute name railwatch emits, defined once.

Dashboards and alert rules are tested against these names, so renaming one here
breaks a test rather than a pager. GenAI names follow the OpenTelemetry GenAI
semantic conventions; ``railwatch.*`` names are our own.
"""

from __future__ import annotations

# HTTP headers
HEADER_TRACE_ID = "x-railwatch-trace-id"
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"
HEADER_TENANT = "x-railwatch-tenant"
HEADER_CONVERSATION = "x-railwatch-conversation-id"

# Operation names (gen_ai.operation.name), used as the trace record's ``route``
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EMBEDDINGS = "embeddings"
OP_MODELS = "models"
OP_PASSTHROUGH = "passthrough"

# OpenTelemetry GenAI attributes
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT = "openai.response.system_fingerprint"
GEN_AI_EVALUATION_RESULT = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# Prometheus metric names (prometheus-client adds _total/_bucket suffixes itself)
METRIC_REQUESTS = "railwatch_requests"
METRIC_REQUEST_DURATION = "railwatch_request_duration_seconds"
METRIC_UPSTREAM_DURATION = "railwatch_upstream_duration_seconds"
METRIC_OVERHEAD = "railwatch_overhead_seconds"
METRIC_TTFT = "railwatch_time_to_first_token_seconds"
METRIC_TPOT = "railwatch_time_per_output_token_seconds"
METRIC_TOKENS = "railwatch_tokens"
METRIC_GUARDRAIL_TRIGGERS = "railwatch_guardrail_triggers"
METRIC_DETECTOR_DURATION = "railwatch_detector_duration_seconds"
METRIC_IN_FLIGHT = "railwatch_requests_in_flight"
METRIC_EXPORTER_QUEUE = "railwatch_exporter_queue_depth"
METRIC_EXPORTER_DROPPED = "railwatch_exporter_dropped_records"
