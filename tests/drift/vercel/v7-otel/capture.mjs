// Captures real OpenTelemetry spans from the Vercel AI SDK v7 (`ai@7`) with its RECOMMENDED integration,
// `OpenTelemetry` from `@ai-sdk/otel` (GenAI semantic-convention spans: `invoke_agent`, `step`, `chat`), calling the
// fake provider.
//
//   node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json> [defaults|enrich]
//
// <openai-base-url> is the fake's OpenAI base (ends in /v1); <anthropic-base-url> is its bare origin (this script
// appends /v1, as @ai-sdk/anthropic expects). The output is one ExportTraceServiceRequest in OTLP/JSON, byte for
// byte what an OTLP/HTTP JSON exporter would POST.
//
// In v7 telemetry is on by default once an integration is registered (`registerTelemetry`). `telemetry.metadata`
// no longer exists: attribution is the call's `runtimeContext`, of which only the top-level keys marked in
// `telemetry.includeRuntimeContext` reach integrations; `OpenTelemetry({ runtimeContext: true })` writes them as
// `ai.settings.context.<key>`, and `usage: true` adds the AI SDK usage details GenAI SemConv has no name for
// (`ai.usage.*`: uncached input, text/reasoning output). With the optional 4th argument `defaults` the integration
// is registered with no options (`new OpenTelemetry()`, for comparison only); with `enrich` an `enrichSpan` hook
// writes `userId` as `user.id` and `tags` as `tokentrail.tags` on every span, and the runtime context is not written.

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { OpenTelemetry } from '@ai-sdk/otel';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { generateText, registerTelemetry, streamText } from 'ai';

import { makeCalls, models as callModels, writeSpans } from '../calls.mjs';

const [openaiBaseURL, anthropicBaseURL, outPath, variant] = process.argv.slice(2);
if (!openaiBaseURL || !anthropicBaseURL || !outPath) {
  console.error('usage: node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json> [defaults|enrich]');
  process.exit(2);
}

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'tokentrail-drift-vercel-ai-v7-otel' }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
provider.register(); // the integration uses trace.getTracer('ai') from the global provider

const options = { usage: true, runtimeContext: true };
if (variant === 'enrich') {
  // enrichSpan runs for every span (spanType 'operation' | 'step' | 'languageModel' | ...) with the FILTERED runtime
  // context; its attributes are merged under the SDK's own. Only this puts attribution on the `chat` spans
  // themselves, so this variant leaves the runtime context off the spans: the call spans alone must say it all.
  delete options.runtimeContext;
  options.enrichSpan = ({ runtimeContext }) =>
    runtimeContext?.userId
      ? { 'user.id': String(runtimeContext.userId), 'tokentrail.tags': runtimeContext.tags ?? [] }
      : undefined;
}
registerTelemetry(variant === 'defaults' ? new OpenTelemetry() : new OpenTelemetry(options));

const openai = createOpenAI({ baseURL: openaiBaseURL, apiKey: 'sk-test' });
const anthropic = createAnthropic({ baseURL: `${anthropicBaseURL.replace(/\/$/, '')}/v1`, apiKey: 'sk-ant-test' });

const models = callModels(openai, anthropic);

const attribution = {
  runtimeContext: { userId: 'user-v7', tags: ['team-a', 'feature-x'], secret: 'not-for-telemetry' },
  telemetry: { functionId: 'drift', includeRuntimeContext: { userId: true, tags: true } },
};

await makeCalls({ generateText, streamText, models, options: attribution });
await writeSpans({ provider, exporter, serializer: JsonTraceSerializer, outPath });
