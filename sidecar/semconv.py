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

# --- OpenTelemetry: more GenAI / HTTP names (checked against opentelemetry-semantic-conventions
# 0.66b1, ``_incubating/attributes/gen_ai_attributes.py`` and ``metrics/gen_ai_metrics.py``)
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # seconds
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # JSON string; only with capture_content
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # JSON string; only with capture_content
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_TOKEN_TYPE_INPUT = "input"
GEN_AI_TOKEN_TYPE_OUTPUT = "output"
GEN_AI_PROVIDER_OPENAI = "openai"  # the default gen_ai.provider.name: the wire format is OpenAI's
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_FULL = "url.full"

# OpenTelemetry GenAI client metrics (histograms)
OTEL_METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"  # unit {token}
OTEL_METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"  # unit s
OTEL_METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # unit s
OTEL_METRIC_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"  # unit s

# OpenTelemetry span and event names of our own (the request span is named from GenAI/HTTP rules)
SPAN_DETECTOR = "detect"  # child span "detect {detector}", one per detector run
EVENT_DECISION = "railwatch.policy.decision"  # span event, one per DecisionRecord

# railwatch.* span / event attributes (durations in ms say so in the name)
RAILWATCH_REQUEST_ID = "railwatch.request_id"
RAILWATCH_ROUTE = "railwatch.route"
RAILWATCH_UPSTREAM_ATTEMPTS = "railwatch.upstream.attempts"
RAILWATCH_UPSTREAM_NAME = "railwatch.upstream.name"  # "primary" or a fallback's name
RAILWATCH_ATTEMPT_INDEX = "railwatch.attempt.index"  # 0-based, on each upstream attempt span
RAILWATCH_ATTEMPT_KIND = "railwatch.attempt.kind"  # "primary" | "retry" | "fallback"
RAILWATCH_ATTEMPT_DECISION = "railwatch.attempt.decision"  # output guard verdict on it
RAILWATCH_TENANT = "railwatch.tenant"
RAILWATCH_USER = "railwatch.user"
RAILWATCH_DECISION = "railwatch.decision"  # the final action
# attributes of the railwatch.policy.decision event
RAILWATCH_DECISION_STAGE = "railwatch.policy.stage"
RAILWATCH_DECISION_ACTION = "railwatch.policy.action"
RAILWATCH_DECISION_REASONS = "railwatch.policy.reasons"
RAILWATCH_RETRIES = "railwatch.retries"
RAILWATCH_HANDOFF_ID = "railwatch.handoff_id"
RAILWATCH_CLIENT_DISCONNECTED = "railwatch.client_disconnected"
RAILWATCH_USAGE_SOURCE = "railwatch.usage.source"
RAILWATCH_CONTENT_MASKED = "railwatch.content.masked"
RAILWATCH_OVERHEAD_MS = "railwatch.duration.overhead_ms"
RAILWATCH_TPOT_MS = "railwatch.duration.tpot_ms"
RAILWATCH_DETECTOR = "railwatch.detector.name"
RAILWATCH_DETECTOR_STAGE = "railwatch.detector.stage"
RAILWATCH_DETECTOR_FINDINGS = "railwatch.detector.findings"
RAILWATCH_DETECTOR_BATCH_SIZE = "railwatch.detector.batch_size"
RAILWATCH_FINDING_STAGE = "railwatch.finding.stage"
RAILWATCH_FINDING_ACTION = "railwatch.finding.action"
RAILWATCH_FINDING_START = "railwatch.finding.start"  # character offsets, never the text
RAILWATCH_FINDING_END = "railwatch.finding.end"

# --- Prometheus: more metric names (base units seconds; counters get _total from the client)
METRIC_REQUEST_ERRORS = "railwatch_request_errors"  # counter {route, error_type}
METRIC_RETRIES = "railwatch_retries"  # counter {route}
METRIC_DETECTOR_ERRORS = "railwatch_detector_errors"  # counter {detector, error}
METRIC_DETECTOR_INFO = "railwatch_detector_info"  # gauge 1 {detector, kind, backend}
METRIC_DETECTOR_UP = "railwatch_detector_up"  # gauge 0/1 {detector}
METRIC_DETECTOR_QUEUE = "railwatch_detector_queue_depth"  # gauge {detector}
METRIC_EXPORTER_FAILED = "railwatch_exporter_failed_records"  # counter {exporter}
METRIC_EXPORTER_EXPORTED = "railwatch_exporter_exported_records"  # counter {exporter}
METRIC_EXPORTER_UP = "railwatch_exporter_worker_up"  # gauge 0/1 {exporter}
METRIC_CLICKHOUSE_UP = "railwatch_clickhouse_up"  # gauge 0/1 {exporter}
METRIC_CLICKHOUSE_BACKLOG_ROWS = "railwatch_clickhouse_backlog_rows"  # gauge {exporter}
METRIC_CLICKHOUSE_BACKLOG_BYTES = "railwatch_clickhouse_backlog_bytes"  # gauge {exporter}
METRIC_CLICKHOUSE_INSERTED_ROWS = "railwatch_clickhouse_inserted_rows"  # counter {exporter}
METRIC_CLICKHOUSE_INSERT_FAILURES = "railwatch_clickhouse_insert_failures"  # counter {exporter}
METRIC_CLICKHOUSE_SPILLED_ROWS = "railwatch_clickhouse_spilled_rows"  # counter {exporter}
METRIC_CLICKHOUSE_REPLAYED_ROWS = "railwatch_clickhouse_replayed_rows"  # counter {exporter}
METRIC_CLICKHOUSE_DROPPED_ROWS = "railwatch_clickhouse_dropped_rows"  # counter {exporter}
METRIC_CLICKHOUSE_REJECTED_ROWS = "railwatch_clickhouse_rejected_rows"  # counter {exporter}
METRIC_UPSTREAM_UP = "railwatch_upstream_up"  # gauge 0/1 {upstream}
METRIC_UPSTREAM_ATTEMPTS = "railwatch_upstream_attempts"  # counter {upstream, kind, error}
METRIC_UPSTREAM_CIRCUIT = "railwatch_upstream_circuit_state"  # gauge 0/1 {upstream, state}
METRIC_UPSTREAM_CIRCUIT_FAILURES = "railwatch_upstream_consecutive_failures"  # gauge {upstream}
METRIC_UPSTREAM_CIRCUIT_OPENED = "railwatch_upstream_circuit_opened"  # counter {upstream}
METRIC_UPSTREAM_CIRCUIT_REJECTED = "railwatch_upstream_circuit_rejected"  # counter {upstream}
METRIC_STATE_SOURCE_ERRORS = "railwatch_metrics_source_errors"  # counter {source}

# Prometheus label names
LABEL_ROUTE = "route"
LABEL_MODEL = "model"
LABEL_STATUS = "status"
LABEL_DECISION = "decision"
LABEL_ERROR_TYPE = "error_type"
LABEL_TOKEN_TYPE = "type"
LABEL_DETECTOR = "detector"
LABEL_STAGE = "stage"
LABEL_LABEL = "label"
LABEL_ACTION = "action"
LABEL_ERROR = "error"
LABEL_KIND = "kind"
LABEL_BACKEND = "backend"
LABEL_EXPORTER = "exporter"
LABEL_UPSTREAM = "upstream"
LABEL_STATE = "state"
LABEL_SOURCE = "source"
LABEL_OTHER = "other"  # the value a bounded label takes past its cap or outside its known set

# --- trace attributes set by the attempt engine's transports (sidecar/pipeline/) -------
ATTR_POLICY_ROUTE = "railwatch.policy.route"  # the policy route that matched
ATTR_EXHAUSTED = "railwatch.exhausted"  # rounds spent; the route's `then` decided
ATTR_OUTPUT_UNCHECKED = "railwatch.output.unchecked"  # "unparsed": detectors could not read it
ATTR_OUTPUT_NONFINITE = "railwatch.output.nonfinite"  # the answer held NaN/Infinity (parsed)
ATTR_HANDOFF_UNAVAILABLE = "railwatch.handoff.unavailable"  # policy said handoff, none set up
ATTR_STREAM_CUT = "railwatch.stream.cut"
ATTR_STREAM_CUT_ACTION = "railwatch.stream.cut_action"
ATTR_STREAM_VERDICT = "railwatch.stream.verdict"
ATTR_STREAM_LATE_SPANS = "railwatch.stream.late_spans"
ATTR_SOURCE = "railwatch.source"  # who recorded the trace: absent (the proxy) | "sdk"

# --- ingress and upstream limits (issue 9, ingress) ---------------------------------------
# trace attribute: "detector:error" pairs of mask/block detectors that did not finish
RAILWATCH_GUARDRAIL_INCOMPLETE = "railwatch.guardrail.incomplete"
# trace attribute: triggered findings past the per-stage cap, counted not recorded
RAILWATCH_FINDINGS_UNRECORDED = "railwatch.findings.unrecorded"

# --- streams (stream guard, stream accounting; the streams area): trace attributes
ATTR_STREAM_TRUNCATED = "railwatch.stream.truncated"  # "1": [DONE] without a finish_reason
ATTR_STREAM_EARLY_HEADERS = "railwatch.stream.early_headers"  # "1": headers before 1st window
ATTR_REQUEST_RESPONSE_FORMAT = "railwatch.request.response_format"  # json_object|json_schema

# --- abuse (issue 9): rate limits, login lockout, feedback acceptance --------------------
RAILWATCH_RATE_LIMIT_DIMENSION = "railwatch.rate_limit.dimension"  # client | api_key | tenant
METRIC_RATE_LIMITED = "railwatch_rate_limited"  # counter {dimension}
METRIC_RATE_LIMIT_KEYS = "railwatch_rate_limit_keys"  # gauge: buckets tracked
METRIC_LOGIN_LOCKOUTS = "railwatch_review_login_lockouts"  # counter: refused while locked out
METRIC_FEEDBACK_REJECTED = "railwatch_feedback_rejected"  # counter {reason}
LABEL_DIMENSION = "dimension"
LABEL_REASON = "reason"

# --- drift (issue 12): prompt and model drift, canary probes -----------------------------
# trace attributes set at ingress for chat requests (counts, a flag, a hash: never text)
RAILWATCH_PROMPT_TURNS = "railwatch.prompt.turns"  # user messages in the request
RAILWATCH_PROMPT_TOOLS = "railwatch.prompt.tools"  # "1" when the request offers tools
RAILWATCH_SYSTEM_PROMPT_HASH = "railwatch.system_prompt.hash"  # blake2b-64 hex of system text
RAILWATCH_SYSTEM_PROMPT_CHARS = "railwatch.system_prompt.chars"
# drift event kinds (drift_events.kind, the log line, the OTel event's attribute)
DRIFT_EVENT_MODEL = "model_changed"  # a new served model behind a requested name
DRIFT_EVENT_FINGERPRINT = "fingerprint_changed"  # a new system_fingerprint for a model
DRIFT_EVENT_SYSTEM_PROMPT = "system_prompt_new"  # a system prompt hash never seen before
DRIFT_EVENT_CANARY = "canary_changed"  # a canary answer moved away from its baseline
DRIFT_EVENT_WINDOW = "window_drift"  # a window statistic crossed its threshold
DRIFT_EVENT_KINDS = (DRIFT_EVENT_MODEL, DRIFT_EVENT_FINGERPRINT, DRIFT_EVENT_SYSTEM_PROMPT,
                     DRIFT_EVENT_CANARY, DRIFT_EVENT_WINDOW)
RAILWATCH_DRIFT_KIND = "railwatch.drift.kind"
# Prometheus (counters get _total from the client)
METRIC_DRIFT_STATISTIC = "railwatch_drift_statistic"  # gauge {model, route, metric, statistic}
METRIC_DRIFT_P_VALUE = "railwatch_drift_p_value"  # gauge {model, route, metric, statistic}
METRIC_DRIFT_DRIFTED = "railwatch_drift_drifted"  # gauge 0/1 {model, route, metric, statistic}
METRIC_DRIFT_EVENTS = "railwatch_drift_events"  # counter {kind}
METRIC_DRIFT_SAMPLED = "railwatch_drift_sampled_requests"  # counter: feature rows stored
METRIC_DRIFT_EMBEDDED = "railwatch_drift_embedded_prompts"  # counter
METRIC_DRIFT_SKIPPED = "railwatch_drift_skipped"  # counter {reason}
METRIC_DRIFT_RUNS = "railwatch_drift_runs"  # counter {outcome}: ok | error | no_lease
METRIC_DRIFT_LAST_RUN = "railwatch_drift_last_run_timestamp_seconds"  # gauge
METRIC_DRIFT_CANARY_SIMILARITY = "railwatch_drift_canary_similarity"  # gauge {upstream, prompt}
METRIC_DRIFT_CANARY_PROBES = "railwatch_drift_canary_probes"  # counter {upstream, outcome}
LABEL_METRIC = "metric"
LABEL_STATISTIC = "statistic"
LABEL_OUTCOME = "outcome"
LABEL_PROMPT = "prompt"

# --- trace attributes and names of the storage area ------------------------------------
ATTR_HANDOFF_REASON = "railwatch.handoff.reason"
ATTR_BLOCK_STAGE = "railwatch.block.stage"  # "input" | "output"
ATTR_SIGNAL_REGENERATION = "railwatch.signal.regeneration"  # "1": same prompt resent
ATTR_SIGNAL_ABANDONED = "railwatch.signal.abandoned"  # "1": the client left mid-answer
ATTR_CONVERSATION_TURNS = "railwatch.conversation.turns"


def attr_detector_error(detector: str) -> str:
    """``railwatch.detector.<name>.error``: why a detector gave no answer on the request."""
    return f"railwatch.detector.{detector}.error"


# storage metrics: the record intake and its crash journal (exporters/journal.py)
METRIC_JOURNAL_BACKLOG = "railwatch_journal_backlog_records"  # gauge: not yet exported
METRIC_JOURNAL_UNJOURNALED = "railwatch_journal_unjournaled_records"  # counter: not crash-safe
METRIC_INTAKE_FINISH_ERRORS = "railwatch_intake_finish_errors"  # counter: stored without text
METRIC_INTAKE_DROPPED = "railwatch_intake_dropped_records"  # counter: intake queue full

# --- Dashboards and alerts (sidecar/dashboard): hand-off backlog gauges, refreshed from the
# hand-off store in the background (never on the scrape)
METRIC_HANDOFFS_OPEN = "railwatch_handoffs_open"  # gauge: pending hand-offs (capped scan)
METRIC_HANDOFF_OLDEST_AGE = "railwatch_handoff_oldest_open_age_seconds"  # gauge, seconds
METRIC_HANDOFF_REFRESH_ERRORS = "railwatch_handoff_gauge_refresh_errors"  # counter
