// The official `openai` npm package streaming from the service's /v1 (tests/test_openai_node.py).
//
//     node chat_stream.mjs <scenario> <base URL>
//
// Runs one scenario and prints what the client saw as one JSON line; the Python test arranges
// the fake upstream's answer beforehand and checks the line (and the upstream) afterwards.
import OpenAI from "openai";

const [scenario, baseURL] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "client-key", maxRetries: 0 });
const messages = [{ role: "user", content: "Say hello" }];

function collect(chunk, seen) {
  for (const choice of chunk.choices) {
    seen.text += choice.delta?.content ?? "";
    if (choice.finish_reason) seen.finishReason = choice.finish_reason;
    for (const call of choice.delta?.tool_calls ?? []) {
      const entry = (seen.toolCalls[call.index] ??= { id: "", name: "", arguments: "" });
      entry.id += call.id ?? "";
      entry.name += call.function?.name ?? "";
      entry.arguments += call.function?.arguments ?? "";
    }
  }
  if (chunk.usage) seen.usage = chunk.usage;
  seen.chunks += 1;
}

function describe(error) {
  return {
    error: error.constructor.name,
    isAPIError: error instanceof OpenAI.APIError,
    status: error.status ?? null,
    code: error.code ?? null,
    message: error.message,
    retryAfter: error.headers?.get?.("retry-after") ?? null,
  };
}

async function stream(options) {
  const seen = { text: "", finishReason: null, usage: null, toolCalls: [], chunks: 0 };
  try {
    const response = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages,
      stream: true,
      ...options,
    });
    for await (const chunk of response) {
      collect(chunk, seen);
      if (scenario === "abort" && seen.chunks === 4) break; // aborts the request
    }
  } catch (error) {
    return { ...seen, ...describe(error) };
  }
  return seen;
}

async function responses() {
  const events = [];
  const response = await client.responses.create({ model: "gpt-4o-mini", input: "hi", stream: true });
  for await (const event of response) events.push(event);
  return {
    types: events.map((event) => event.type),
    text: events
      .filter((event) => event.type === "response.output_text.delta")
      .map((event) => event.delta)
      .join(""),
    usage: events.at(-1)?.response?.usage ?? null,
  };
}

const scenarios = {
  usage: () => stream({ stream_options: { include_usage: true } }),
  plain: () => stream({}),
  tools: () => stream({ tools: [{ type: "function", function: { name: "get_weather" } }] }),
  error: () => stream({}),
  abort: () => stream({}),
  responses,
};

const result = await scenarios[scenario]();
process.stdout.write(JSON.stringify(result) + "\n");
