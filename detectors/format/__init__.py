"""The ``format`` detector: JSON validity, response_format schemas, tool-call arguments."""

from detectors.format.detector import (
    JSON_INVALID,
    JSON_NOT_STRICT,
    JSON_SCHEMA_UNSUPPORTED,
    JSON_SCHEMA_VIOLATION,
    TOOL_CALL_JSON_INVALID,
    TOOL_CALL_SCHEMA_VIOLATION,
    TOOL_CALL_UNKNOWN,
    FormatDetector,
)

__all__ = [
    "JSON_INVALID",
    "JSON_NOT_STRICT",
    "JSON_SCHEMA_UNSUPPORTED",
    "JSON_SCHEMA_VIOLATION",
    "TOOL_CALL_JSON_INVALID",
    "TOOL_CALL_SCHEMA_VIOLATION",
    "TOOL_CALL_UNKNOWN",
    "FormatDetector",
]
