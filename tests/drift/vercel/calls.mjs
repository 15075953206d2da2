// What every capture script does once its AI SDK and telemetry are set up: the same six calls (OpenAI Chat
// Completions, OpenAI Responses and Anthropic Messages, each with generateText and streamText read to the end),
// then the finished spans written as one ExportTraceServiceRequest in OTLP/JSON. It imports no package itself: each
// project passes its own SDK functions, so every project runs the same calls with its own pinned versions.

import { writeFileSync } from 'node:fs';

/** The three models, from a project's `createOpenAI` / `createAnthropic` providers. */
export function models(openai, anthropic) {
  return [
    ['openai-chat', openai.chat('gpt-4o-mini')],
    ['openai-responses', openai('gpt-4o-mini')], // the provider's default model is the Responses API
    ['anthropic', anthropic('claude-sonnet-4-5')],
  ];
}

/** generateText then streamText (consumed fully) on each model, with `options` (the telemetry settings) on each. */
export async function makeCalls({ generateText, streamText, models, options }) {
  for (const [label, model] of models) {
    const generated = await generateText({
      model,
      system: 'You are terse.',
      prompt: `Say hello (${label}, generate).`,
      maxRetries: 0,
      ...options,
    });
    console.error(`${label} generateText: ${JSON.stringify(generated.usage)}`);

    const streamed = streamText({
      model,
      system: 'You are terse.',
      prompt: `Say hello (${label}, stream).`,
      maxRetries: 0,
      ...options,
      onError: ({ error }) => {
        throw error;
      },
    });
    for await (const _ of streamed.fullStream) {
      // consume the stream fully
    }
    console.error(`${label} streamText: ${JSON.stringify(await streamed.usage)}`);
  }
}

/** Every finished span, serialized as an OTLP/HTTP JSON exporter would POST it, into `outPath`. */
export async function writeSpans({ provider, exporter, serializer, outPath }) {
  await provider.forceFlush();
  const spans = exporter.getFinishedSpans();
  writeFileSync(outPath, Buffer.from(serializer.serializeRequest(spans)));
  console.error(`${spans.length} spans -> ${outPath}`);
  await provider.shutdown();
}
