// Captures real OpenTelemetry spans from the Vercel AI SDK v6 (`ai@6`), calling the fake provider.
//
//   node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json>
//
// <openai-base-url> is the fake's OpenAI base (ends in /v1); <anthropic-base-url> is its bare origin (this script
// appends /v1, as @ai-sdk/anthropic expects its baseURL to include the version). The output is one
// ExportTraceServiceRequest in OTLP/JSON, byte for byte what an OTLP/HTTP JSON exporter would POST.
// v6 telemetry is opt-in per call (`experimental_telemetry.isEnabled`) and uses the global tracer provider;
// attribution goes in `experimental_telemetry.metadata`, emitted as `ai.telemetry.metadata.<key>`.

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { generateText, streamText } from 'ai';

import { makeCalls, models as callModels, writeSpans } from '../calls.mjs';

const [openaiBaseURL, anthropicBaseURL, outPath] = process.argv.slice(2);
if (!openaiBaseURL || !anthropicBaseURL || !outPath) {
  console.error('usage: node capture.mjs <openai-base-url> <anthropic-base-url> <out.otlp.json>');
  process.exit(2);
}

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'tokentrail-drift-vercel-ai-v6' }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
provider.register(); // global tracer provider + AsyncLocalStorage context manager (parent/child links)

const openai = createOpenAI({ baseURL: openaiBaseURL, apiKey: 'sk-test' });
const anthropic = createAnthropic({ baseURL: `${anthropicBaseURL.replace(/\/$/, '')}/v1`, apiKey: 'sk-ant-test' });

const models = callModels(openai, anthropic);

const telemetry = {
  isEnabled: true,
  functionId: 'drift',
  metadata: { userId: 'user-v6', tags: ['team-a', 'feature-x'] },
};

await makeCalls({ generateText, streamText, models, options: { experimental_telemetry: telemetry } });
await writeSpans({ provider, exporter, serializer: JsonTraceSerializer, outPath });
