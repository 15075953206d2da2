"""Span attribute names, in one place.

The GenAI names follow the OpenTelemetry GenAI semantic conventions; ``tokentrail.*`` names are ours. The
processor reads spans by these same constants, so a rename here is a rename everywhere.
"""

from __future__ import annotations

from typing import Final

# The instrumentation scope (tracer and meter name) of the spans and metrics TokenTrail emits.
INSTRUMENTATION_SCOPE: Final = "tokentrail.instrumentation"

# OpenTelemetry GenAI semantic conventions.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # the older name of gen_ai.provider.name
# The conversation (session, thread) a call belongs to: what ``group_by=conversation`` reports by.
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
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
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"  # metric attribute: "input" | "output"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"  # other instrumentations' service tier
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
USER_ID: Final = "user.id"

# Ours.
TOKENTRAIL_TAGS: Final = "tokentrail.tags"
TOKENTRAIL_CREDENTIAL_TYPE: Final = "tokentrail.credential.type"  # "byok" | "system"
TOKENTRAIL_CREDENTIAL_ID: Final = "tokentrail.credential.id"  # salted HMAC fingerprint, never the key
TOKENTRAIL_CREDENTIAL_NAME: Final = "tokentrail.credential.name"  # a configured friendly name of the fingerprint
TOKENTRAIL_API: Final = "tokentrail.api"  # one of the API_* values below
TOKENTRAIL_STREAM_INCOMPLETE: Final = "tokentrail.stream.incomplete"  # stream ended before its final event
# The response carried no usage at all (never "zero tokens"). On another instrumentation's span that has token
# counts anyway, those counts are that instrumentation's estimate, not the provider's statement.
TOKENTRAIL_USAGE_MISSING: Final = "tokentrail.usage.missing"
TOKENTRAIL_ATTRIBUTION_DROPPED: Final = "tokentrail.attribution.dropped"
# The service tier the response says served the call ("default", "flex", "priority", "standard", "batch", ...):
# it changes the price. Lower-cased as the provider wrote it, for every API (the conventions name only OpenAI's,
# openai.response.service_tier, which other instrumentations set and a reader may fall back to).
TOKENTRAIL_SERVICE_TIER: Final = "tokentrail.service_tier"
# Cache writes by cache lifetime, priced differently: Anthropic's 5-minute and 1-hour writes, OpenAI's 30-minute
# and 12-hour ones. Each is a PART of gen_ai.usage.cache_creation.input_tokens (which stays the total), never to be
# added to it.
TOKENTRAIL_CACHE_CREATION_5M_INPUT_TOKENS: Final = "tokentrail.usage.cache_creation.5m.input_tokens"
TOKENTRAIL_CACHE_CREATION_1H_INPUT_TOKENS: Final = "tokentrail.usage.cache_creation.1h.input_tokens"
TOKENTRAIL_CACHE_CREATION_30M_INPUT_TOKENS: Final = "tokentrail.usage.cache_creation.30m.input_tokens"
TOKENTRAIL_CACHE_CREATION_12H_INPUT_TOKENS: Final = "tokentrail.usage.cache_creation.12h.input_tokens"
CACHE_CREATION_BY_TTL: Final = {
    "5m": TOKENTRAIL_CACHE_CREATION_5M_INPUT_TOKENS,
    "1h": TOKENTRAIL_CACHE_CREATION_1H_INPUT_TOKENS,
    "30m": TOKENTRAIL_CACHE_CREATION_30M_INPUT_TOKENS,
    "12h": TOKENTRAIL_CACHE_CREATION_12H_INPUT_TOKENS,
}
# Set on another instrumentation's GenAI call span that encloses the span TokenTrail enriched or emitted for the
# same call (two instrumentations of one call): the call is counted on that inner span, not on this one.
TOKENTRAIL_DUPLICATE: Final = "tokentrail.duplicate"
# Azure OpenAI: the deployment named in the URL (not a model name) and the api-version query parameter.
TOKENTRAIL_AZURE_DEPLOYMENT: Final = "tokentrail.azure.deployment"
TOKENTRAIL_AZURE_API_VERSION: Final = "tokentrail.azure.api_version"

# W3C baggage keys that carry attribution across services.
BAGGAGE_USER: Final = "tokentrail.user"
BAGGAGE_TAGS: Final = "tokentrail.tags"
BAGGAGE_CREDENTIAL: Final = "tokentrail.credential"
BAGGAGE_CONVERSATION: Final = "tokentrail.conversation"

CREDENTIAL_TYPES: Final = ("byok", "system")

# Values of gen_ai.operation.name that the instrumentation emits.
GEN_AI_OPERATION_CHAT: Final = "chat"
GEN_AI_OPERATION_TEXT_COMPLETION: Final = "text_completion"
GEN_AI_OPERATION_EMBEDDINGS: Final = "embeddings"
# Values of tokentrail.api: which interface the call used.
API_CHAT_COMPLETIONS: Final = "chat.completions"  # OpenAI Chat Completions and compatible servers
API_ANTHROPIC_MESSAGES: Final = "anthropic.messages"  # Anthropic Messages and compatible servers
API_RESPONSES: Final = "responses"  # OpenAI Responses and Open Responses servers
API_COMPLETIONS: Final = "completions"  # OpenAI legacy (text) Completions
API_EMBEDDINGS: Final = "embeddings"  # OpenAI Embeddings and compatible servers

# GenAI client metrics (released semantic conventions).
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"

# Environment variables that configure the instrumentation.
ENV_SYSTEM_KEYS: Final = "TOKENTRAIL_SYSTEM_KEYS"  # comma-separated keys that count as the service's own
# "system" (the default) or "byok": the type of a key that no list, resolver or attribute() names.
ENV_UNKNOWN_KEYS: Final = "TOKENTRAIL_UNKNOWN_KEYS"
ENV_FINGERPRINT_SALT: Final = "TOKENTRAIL_FINGERPRINT_SALT"  # secret salt of tokentrail.credential.id
ENV_CREDENTIAL_NAMES: Final = "TOKENTRAIL_CREDENTIAL_NAMES"  # "fingerprint=name,..." friendly names of keys
ENV_PROVIDERS: Final = "TOKENTRAIL_PROVIDERS"  # "base_url=provider,..." servers the host table does not know
ENV_STREAM_USAGE: Final = "TOKENTRAIL_STREAM_USAGE"  # "inject": ask Chat/Completions streams for their usage

# Google's own APIs (the google-genai SDK, and any client of the same REST paths), recognised by path shape.
GEN_AI_OPERATION_GENERATE_CONTENT: Final = "generate_content"  # the conventions' operation for Gemini's API
API_GEMINI_GENERATE_CONTENT: Final = "gemini.generate_content"  # generateContent, streamGenerateContent
API_GEMINI_EMBED_CONTENT: Final = "gemini.embed_content"  # embedContent, batchEmbedContents
API_VERTEX_PREDICT: Final = "vertex.predict"  # Vertex AI's text-embedding models, :predict
# Audio tokens: PARTS of gen_ai.usage.input_tokens / output_tokens (priced differently), never added to them. The
# processor reads the same names.
TOKENTRAIL_INPUT_AUDIO_TOKENS: Final = "tokentrail.usage.input_audio_tokens"
TOKENTRAIL_OUTPUT_AUDIO_TOKENS: Final = "tokentrail.usage.output_audio_tokens"
