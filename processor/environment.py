"""Every ``TOKENTRAIL_*`` environment variable the processor reads, by name, in one place (and the data directory's
default).

Only the names live here: each is read where its command-line option is defined (an option always wins over its
variable), so ``tokentrail serve --help`` and this list cannot drift apart. The instrumentation's variables are in
``tokentrail.instrumentation.semconv`` (the instrumentation must not import the processor)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "API_TOKEN",
    "BUDGETS",
    "DASHBOARD_URL",
    "DATA_DIR",
    "DEFAULT_DATA_DIR",
    "INGEST_TOKEN",
    "ALLOWED_HOSTS",
    "HTTP_IDLE_TIMEOUT",
    "HTTP_READ_TIMEOUT",
    "MAX_CONCURRENT_EXPORTS",
    "MAX_INFLIGHT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_INPUT_TOKENS_PER_CALL",
    "MAX_OUTPUT_TOKENS_PER_CALL",
    "PRICES_AUTO_UPDATE",
    "PRICING",
    "REVENUE",
    "TRACE_URL",
]

DATA_DIR: Final = "TOKENTRAIL_DATA_DIR"
"""Default ``--data-dir`` of every command."""
DEFAULT_DATA_DIR: Final = "tokentrail-data"
"""The data directory when neither ``--data-dir`` nor ``TOKENTRAIL_DATA_DIR`` names one (relative to the working
directory)."""
API_TOKEN: Final = "TOKENTRAIL_API_TOKEN"
"""Bearer token the report API requires (``--api-token``)."""
INGEST_TOKEN: Final = "TOKENTRAIL_INGEST_TOKEN"
"""Bearer token the OTLP receivers require (``--ingest-token``)."""
BUDGETS: Final = "TOKENTRAIL_BUDGETS"
"""Budgets file (``--budgets``)."""
DASHBOARD_URL: Final = "TOKENTRAIL_DASHBOARD_URL"
"""Where people open the dashboard, for the links in Slack alerts (``tokentrail serve --dashboard-url``; default:
the report API's own URL)."""
REVENUE: Final = "TOKENTRAIL_REVENUE"
"""Revenue file for margins (``--revenue``)."""
TRACE_URL: Final = "TOKENTRAIL_TRACE_URL"
"""The dashboard's link from a call to its trace, ``{trace_id}`` where the id goes (``tokentrail serve --trace-url``)."""
PRICING: Final = "TOKENTRAIL_PRICING"
"""Pricing overrides file (``--pricing``)."""
PRICES_AUTO_UPDATE: Final = "TOKENTRAIL_PRICES_AUTO_UPDATE"
"""``1`` lets genai-prices fetch a newer catalog at start (falls back to the bundled data, saying so)."""
ALLOWED_HOSTS: Final = "TOKENTRAIL_ALLOWED_HOSTS"
"""Host names the report API and OTLP/HTTP answer besides their own address (comma-separated; ``*``: any)."""
MAX_INPUT_TOKENS_PER_CALL: Final = "TOKENTRAIL_MAX_INPUT_TOKENS_PER_CALL"
"""Input tokens (cached input included) above which one span is rejected as no real call (default 50,000,000)."""
MAX_OUTPUT_TOKENS_PER_CALL: Final = "TOKENTRAIL_MAX_OUTPUT_TOKENS_PER_CALL"
"""Output tokens (reasoning included) above which one span is rejected as no real call (default 10,000,000)."""
MAX_MESSAGE_BYTES: Final = "TOKENTRAIL_MAX_MESSAGE_BYTES"
"""Largest OTLP Export accepted, gRPC message or HTTP body, in bytes (``tokentrail serve --max-message-bytes``)."""
MAX_CONCURRENT_EXPORTS: Final = "TOKENTRAIL_MAX_CONCURRENT_EXPORTS"
"""OTLP Exports a receiver takes on at once, gRPC and HTTP together (``--max-concurrent-exports``)."""
MAX_INFLIGHT_BYTES: Final = "TOKENTRAIL_MAX_INFLIGHT_BYTES"
"""Bytes of OTLP Exports a receiver holds at once, gRPC and HTTP together (``--max-inflight-bytes``)."""
HTTP_IDLE_TIMEOUT: Final = "TOKENTRAIL_HTTP_IDLE_TIMEOUT"
"""Seconds an HTTP connection (OTLP/HTTP, the report API) may wait without a complete request head
(``--http-idle-timeout``)."""
HTTP_READ_TIMEOUT: Final = "TOKENTRAIL_HTTP_READ_TIMEOUT"
"""Seconds an HTTP connection may send nothing at all, even while its request is answered
(``--http-read-timeout``)."""
