import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChatStreamError,
  isAbortError,
  parseServerSentEvents,
  streamChat,
  type ChatMessage,
  type ChatStreamEvent,
  type ServerSentEvent,
} from "./chatStream";

const encoder = new TextEncoder();

/** A body that delivers `bytes` cut at the given offsets, one piece per read. */
function bodyOf(bytes: Uint8Array, cuts: number[]): ReadableStream<Uint8Array> {
  const bounds = [0, ...cuts.filter((cut) => cut > 0 && cut < bytes.length), bytes.length];
  let index = 0;
  return new ReadableStream({
    pull(controller) {
      if (index + 1 >= bounds.length) return controller.close();
      controller.enqueue(bytes.slice(bounds[index], bounds[index + 1]));
      index++;
    },
  });
}

async function collect(body: ReadableStream<Uint8Array>): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of parseServerSentEvents(body)) events.push(event);
  return events;
}

const everyByte = (bytes: Uint8Array) => Array.from({ length: bytes.length }, (_, i) => i);

// What the service sends (docs/api.md, "Server-Sent Events"), with text that is hard to carry:
// a 4-byte emoji, CJK, a CR, a quote and a look-alike of a `data:` line.
const ANSWER = ['Hel', 'lo 👋 世界', ' "q"\r\n', "data: [DONE]", " end"];
const SERVICE_STREAM = [
  "retry: 3000\nid: chat-1:0\nevent: start\n" +
    'data: {"type":"start","content":"","id":"chat-1","model":"demo"}\n\n',
  ...ANSWER.map(
    (text, i) => `id: chat-1:${i + 1}\ndata: ${JSON.stringify({ type: "delta", content: text })}\n\n`,
  ),
  ": ping\n\n",
  "id: chat-1:9\nevent: end\n" +
    'data: {"type":"end","content":"","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8},' +
    '"metrics":{"ttft_ms":12.5,"upstream_ttft_ms":10.1,"tokens_per_second":40.2,"output_tokens":5,"duration_ms":130.0}}\n\n',
  "id: chat-1:done\ndata: [DONE]\n\n",
].join("");

describe("parseServerSentEvents", () => {
  it("gives the same events however the bytes are cut, down to one byte per read", async () => {
    const bytes = encoder.encode(SERVICE_STREAM);
    const whole = await collect(bodyOf(bytes, []));
    expect(whole.map((event) => event.event)).toEqual([
      "start", "message", "message", "message", "message", "message", "end", "message",
    ]);
    const deltas = whole.filter((e) => e.event === "message" && e.data !== "[DONE]");
    expect(deltas.map((e) => JSON.parse(e.data).content)).toEqual(ANSWER);
    expect(whole.at(-1)).toEqual({ event: "message", data: "[DONE]", id: "chat-1:done" });

    expect(await collect(bodyOf(bytes, everyByte(bytes)))).toEqual(whole);
    // Cuts inside the emoji's four bytes and inside the CJK characters' three.
    const emoji = bytes.indexOf(0xf0);
    expect(emoji).toBeGreaterThan(0);
    expect(await collect(bodyOf(bytes, [emoji + 1, emoji + 2, emoji + 3, emoji + 6, emoji + 8]))).toEqual(whole);
  });

  it("accepts CRLF and lone CR line ends, also with CR and LF in different reads", async () => {
    const lf = "event: end\ndata: a\ndata: b\n\ndata: c\n\n";
    const expected = [
      { event: "end", data: "a\nb", id: "" },
      { event: "message", data: "c", id: "" },
    ];
    for (const text of [lf, lf.replaceAll("\n", "\r\n"), lf.replaceAll("\n", "\r")]) {
      const bytes = encoder.encode(text);
      expect(await collect(bodyOf(bytes, []))).toEqual(expected);
      expect(await collect(bodyOf(bytes, everyByte(bytes)))).toEqual(expected);
    }
    // "\r" | "\n\r\n": the LF after a CR that ended the previous read is not a second line end.
    const crlf = encoder.encode("data: x\r\n\r\ndata: y\r\n\r\n");
    expect(await collect(bodyOf(crlf, [8]))).toEqual([
      { event: "message", data: "x", id: "" },
      { event: "message", data: "y", id: "" },
    ]);
  });

  it("follows the field rules: comments, no space, bare names, a BOM, unfinished last event", async () => {
    const text = "\uFEFF: hello\ndata:no-space\nid: 7\n\ndata\n\nevent: x\n\nrandom: y\ndata:  two\n\ndata: cut off";
    expect(await collect(bodyOf(encoder.encode(text), [1, 2]))).toEqual([
      { event: "message", data: "no-space", id: "7" },
      { event: "message", data: "", id: "7" },
      // `event: x` alone has no data: nothing is dispatched.
      { event: "message", data: " two", id: "7" },
    ]);
  });

  it("cancels the body when the reader stops early", async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(encoder.encode("data: 1\n\n"));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const event of parseServerSentEvents(body)) {
      expect(event.data).toBe("1");
      break;
    }
    expect(cancelled).toBe(true);
  });
});

// A real HTTP server on loopback: node's fetch talks to it as a browser's would to the service.
type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void;
let server: Server | undefined;

async function serve(handler: Handler): Promise<string> {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => handler(request, response, Buffer.concat(chunks).toString("utf8")));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/chat/stream`;
}

afterEach(async () => {
  if (!server) return;
  server.closeAllConnections();
  server.close();
  await once(server, "close");
  server = undefined;
});

async function drain(stream: AsyncIterable<ChatStreamEvent>): Promise<ChatStreamEvent[]> {
  const events: ChatStreamEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure");
}

const HISTORY: ChatMessage[] = [
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "And now?" },
];

describe("streamChat", () => {
  it("posts the history with the key and yields the typed events, split awkwardly", async () => {
    let seen: { headers: IncomingMessage["headers"]; body: unknown } | undefined;
    const bytes = encoder.encode(SERVICE_STREAM);
    const url = await serve(async (request, response, body) => {
      seen = { headers: request.headers, body: JSON.parse(body) };
      response.writeHead(200, { "Content-Type": "text/event-stream; charset=utf-8" });
      response.flushHeaders();
      for (let offset = 0; offset < bytes.length; offset += 7) {
        response.write(bytes.slice(offset, offset + 7));
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      response.end();
    });
    const events = await drain(
      streamChat(HISTORY, { url, apiKey: "k-123", options: { max_tokens: 50 } }),
    );
    expect(seen?.body).toEqual({ max_tokens: 50, messages: HISTORY });
    expect(seen?.headers.authorization).toBe("Bearer k-123");
    expect(seen?.headers.accept).toBe("text/event-stream");
    expect(events[0]).toEqual({ type: "start", content: "", id: "chat-1", model: "demo" });
    const text = events.flatMap((e) => (e.type === "delta" ? [e.content] : [])).join("");
    expect(text).toBe(ANSWER.join(""));
    const end = events.at(-1);
    expect(end?.type).toBe("end");
    if (end?.type === "end") {
      expect(end.metrics.ttft_ms).toBe(12.5);
      expect(end.metrics.tokens_per_second).toBe(40.2);
      expect(end.usage?.completion_tokens).toBe(5);
    }
  });

  it("turns an error status and its JSON body into a ChatStreamError", async () => {
    const url = await serve((_request, response) => {
      response.writeHead(429, { "Content-Type": "application/json", "Retry-After": "7" });
      response.end(JSON.stringify({
        error: { type: "rate_limited", message: "the upstream is rate limiting requests", retryable: true, retry_after_seconds: 7 },
      }));
    });
    const error = await failure(drain(streamChat(HISTORY, { url })));
    expect(error).toBeInstanceOf(ChatStreamError);
    expect(error).toMatchObject({
      status: 429, type: "rate_limited", retryable: true, retryAfterSeconds: 7, inBand: false,
      message: "the upstream is rate limiting requests",
    });
  });

  it("reports 422 and 401 as not retryable, with the service's message", async () => {
    let status = 422;
    const url = await serve((_request, response) => {
      const type = status === 401 ? "unauthorized" : "invalid_request";
      response.writeHead(status, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ error: { type, message: `${type} says why`, retryable: false } }));
    });
    expect(await failure(drain(streamChat(HISTORY, { url })))).toMatchObject({
      status: 422, type: "invalid_request", retryable: false, message: "invalid_request says why",
    });
    status = 401;
    expect(await failure(drain(streamChat(HISTORY, { url })))).toMatchObject({
      status: 401, type: "unauthorized", retryable: false,
    });
  });

  it("gives a generic error for a body that is not the service's (a proxy's HTML page)", async () => {
    const url = await serve((_request, response) => {
      response.writeHead(502, "Bad Gateway", { "Content-Type": "text/html" });
      response.end("<html><body>502 Bad Gateway</body></html>");
    });
    expect(await failure(drain(streamChat(HISTORY, { url })))).toMatchObject({
      status: 502, type: "http_error", retryable: true, message: "502 Bad Gateway",
    });
  });

  it("throws an in-band error after the text it followed", async () => {
    const url = await serve((_request, response) => {
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      response.end(
        'data: {"type":"delta","content":"partial"}\n\n' +
          'event: error\ndata: {"type":"error","content":"","error":{"type":"upstream_unavailable","message":"the upstream failed mid-stream","retryable":true}}\n\n' +
          "data: [DONE]\n\n",
      );
    });
    const seen: ChatStreamEvent[] = [];
    const error = await failure((async () => {
      for await (const event of streamChat(HISTORY, { url })) seen.push(event);
    })());
    expect(seen).toEqual([{ type: "delta", content: "partial" }]);
    expect(error).toMatchObject({
      inBand: true, status: undefined, type: "upstream_unavailable", retryable: true,
      message: "the upstream failed mid-stream",
    });
  });

  it("says so when the stream ends without [DONE]", async () => {
    const url = await serve((_request, response) => {
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      response.end('data: {"type":"delta","content":"cut"}\n\ndata: {"type":"del');
    });
    expect(await failure(drain(streamChat(HISTORY, { url })))).toMatchObject({
      type: "incomplete_stream", inBand: true, retryable: true,
    });
  });

  it("aborts mid-stream: the read fails with AbortError and the server sees its client leave", async () => {
    let clientLeft: Promise<unknown> | undefined;
    const url = await serve((request, response) => {
      clientLeft = once(response, "close");
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      response.write('data: {"type":"delta","content":"first"}\n\n');
      // and then nothing more until the client goes away
      void request;
    });
    const controller = new AbortController();
    const seen: ChatStreamEvent[] = [];
    const error = await failure((async () => {
      for await (const event of streamChat(HISTORY, { url, signal: controller.signal })) {
        seen.push(event);
        controller.abort();
      }
    })());
    expect(seen).toEqual([{ type: "delta", content: "first" }]);
    expect(isAbortError(error)).toBe(true);
    expect(error).not.toBeInstanceOf(ChatStreamError);
    await clientLeft; // hangs (and the test times out) if the connection stayed open
  });

  it("aborts before the response headers arrive", async () => {
    let arrived!: () => void;
    const requestArrived = new Promise<void>((resolve) => (arrived = resolve));
    let clientLeft: Promise<unknown> | undefined;
    const url = await serve((_request, response) => {
      clientLeft = once(response, "close");
      arrived(); // never answers
    });
    const controller = new AbortController();
    const pending = failure(drain(streamChat(HISTORY, { url, signal: controller.signal })));
    await requestArrived;
    controller.abort();
    expect(isAbortError(await pending)).toBe(true);
    await clientLeft;
  });
});
