"""Span attribute names, in one place.

The GenAI names follow the OpenTelemetry GenAI semantic conventions; ``tokentrail.*`` names are ours. The
processor reads spans by these same constants, so a rename here is a rename everywhere.
"""

from __future__ import annotations

from typing import Final

# OpenTelemetry GenAI semantic conventions.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # the older name of gen_ai.provider.name
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"  # inclusive of cache reads and writes
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"  # inclusive of reasoning
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"  # accepted alias
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
USER_ID: Final = "user.id"

# Ours.
TOKENTRAIL_TAGS: Final = "tokentrail.tags"
TOKENTRAIL_CREDENTIAL_TYPE: Final = "tokentrail.credential.type"  # "byok" | "system"
TOKENTRAIL_CREDENTIAL_ID: Final = "tokentrail.credential.id"  # salted HMAC fingerprint, never the key
TOKENTRAIL_API: Final = "tokentrail.api"  # "chat.completions" | "anthropic.messages" | ...
TOKENTRAIL_STREAM_INCOMPLETE: Final = "tokentrail.stream.incomplete"  # stream ended before its usage event
TOKENTRAIL_USAGE_MISSING: Final = "tokentrail.usage.missing"  # the response carried no usage at all
TOKENTRAIL_ATTRIBUTION_DROPPED: Final = "tokentrail.attribution.dropped"

# W3C baggage keys that carry attribution across services.
BAGGAGE_USER: Final = "tokentrail.user"
BAGGAGE_TAGS: Final = "tokentrail.tags"
BAGGAGE_CREDENTIAL: Final = "tokentrail.credential"

CREDENTIAL_TYPES: Final = ("byok", "system")

# Values of gen_ai.operation.name and tokentrail.api that the instrumentation emits.
GEN_AI_OPERATION_CHAT: Final = "chat"
API_CHAT_COMPLETIONS: Final = "chat.completions"
API_ANTHROPIC_MESSAGES: Final = "anthropic.messages"

# Environment variables that configure the instrumentation.
ENV_SYSTEM_KEYS: Final = "TOKENTRAIL_SYSTEM_KEYS"  # comma-separated keys that count as the service's own
ENV_FINGERPRINT_SALT: Final = "TOKENTRAIL_FINGERPRINT_SALT"  # secret salt of tokentrail.credential.id
