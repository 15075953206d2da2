// Captures real OpenTelemetry spans from the Vercel AI SDK v7 (`ai@7`) with its LEGACY integration,
// `LegacyOpenTelemetry` from `@ai-sdk/otel` (the v6-style `ai.generateText` / `ai.generateText.doGenerate` /
// `ai.streamText` / `ai.streamText.doStream` spans with `ai.*` attributes), calling the fake provider.
//
//   node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json>
//
// <openai-base-url> is the fake's OpenAI base (ends in /v1); <anthropic-base-url> is its bare origin (this script
// appends /v1, as @ai-sdk/anthropic expects). The output is one ExportTraceServiceRequest in OTLP/JSON, byte for
// byte what an OTLP/HTTP JSON exporter would POST.
//
// In v7 telemetry is on by default once an integration is registered (`registerTelemetry`). `telemetry.metadata`
// no longer exists: attribution is the call's `runtimeContext`, of which only the top-level keys marked in
// `telemetry.includeRuntimeContext` reach integrations (LegacyOpenTelemetry takes no other option than `tracer`).

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { LegacyOpenTelemetry } from '@ai-sdk/otel';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { generateText, registerTelemetry, streamText } from 'ai';

import { makeCalls, models as callModels, writeSpans } from '../calls.mjs';

const [openaiBaseURL, anthropicBaseURL, outPath] = process.argv.slice(2);
if (!openaiBaseURL || !anthropicBaseURL || !outPath) {
  console.error('usage: node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json>');
  process.exit(2);
}

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'tokentrail-drift-vercel-ai-v7-legacy' }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
provider.register(); // the integration uses trace.getTracer('ai') from the global provider

registerTelemetry(new LegacyOpenTelemetry());

const openai = createOpenAI({ baseURL: openaiBaseURL, apiKey: 'sk-test' });
const anthropic = createAnthropic({ baseURL: `${anthropicBaseURL.replace(/\/$/, '')}/v1`, apiKey: 'sk-ant-test' });

const models = callModels(openai, anthropic);

const attribution = {
  runtimeContext: { userId: 'user-v7', tags: ['team-a', 'feature-x'], secret: 'not-for-telemetry' },
  telemetry: { functionId: 'drift', includeRuntimeContext: { userId: true, tags: true } },
};

await makeCalls({ generateText, streamText, models, options: attribution });
await writeSpans({ provider, exporter, serializer: JsonTraceSerializer, outPath });
