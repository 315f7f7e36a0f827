// The docs include the sections marked `--8<--` (docs/clients.md, issue 18).
// --8<-- [start:contract]
/**
 * Read the chat service's stream (`POST /api/chat/stream`, Server-Sent Events) with plain
 * `fetch()` and a `ReadableStream` reader. One file, no imports: copy it into any app.
 *
 *     const controller = new AbortController();
 *     try {
 *       for await (const event of streamChat(history, { signal: controller.signal })) {
 *         if (event.type === "delta") answer += event.content;
 *         if (event.type === "end") console.log(event.metrics.ttft_ms, event.usage);
 *       }
 *     } catch (error) {
 *       if (isAbortError(error)) { ... }                   // controller.abort(): Stop
 *       else if (error instanceof ChatStreamError) { ... } // error.message, error.retryable
 *     }
 *
 * Contract:
 * - Yields `start`, then `delta`s, then one `end`, and returns after `data: [DONE]`.
 * - Throws `ChatStreamError` when the service answers with an error status (its JSON body,
 *   `{"error": {type, message, retryable, retry_after_seconds?}}`, becomes the error; a body that
 *   is not the service's, e.g. a proxy's HTML page, gives a generic one with the status), when
 *   an `error` event arrives after the first token (`inBand: true`, the text so far is valid),
 *   and when the stream ends without `[DONE]` (cut off by a proxy or the network).
 * - `signal` aborts the request at any moment; the body is then cancelled, the connection closed
 *   and the service stops the generation. An abort surfaces as the platform's `AbortError`.
 * - Leaving the `for await` loop early (break, return, throw) also cancels the body.
 *
 * The SSE parser follows the WHATWG rules
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * CRLF, LF and lone CR line ends (also when a CR and its LF arrive in different reads), UTF-8
 * decoded across reads (a character split between two chunks), a leading BOM, comments
 * (`: ping` heartbeats), several `data:` lines joined with "\n", and an unfinished event at the
 * end of the stream dropped.
 */
// --8<-- [end:contract]

export type ChatRole = "system" | "user" | "assistant";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  reasoning_tokens?: number;
}

/** What the service measured for one stream (docs/api.md, "Server-Sent Events"). */
export interface StreamMetrics {
  /** Request received by the service to first text sent. */
  ttft_ms: number | null;
  /** Upstream request sent to first text received. */
  upstream_ttft_ms: number | null;
  /** Decode rate after the first token. */
  tokens_per_second: number | null;
  output_tokens: number;
  duration_ms: number;
}

/** The `error` object of the service's error bodies and `error` events. */
export interface ServiceErrorBody {
  type: string;
  message: string;
  retryable: boolean;
  retry_after_seconds?: number;
}

export type ChatStreamEvent =
  | { type: "start"; id: string; model: string }
  | { type: "delta"; content: string }
  | { type: "end"; finish_reason: string; usage: Usage | null; metrics: StreamMetrics };

export class ChatStreamError extends Error {
  override readonly name = "ChatStreamError";
  /** The service's `error.type`, or `http_error` / `incomplete_stream` / `bad_event`. */
  readonly type: string;
  /** Whether sending the same request again may succeed. */
  readonly retryable: boolean;
  readonly retryAfterSeconds: number | undefined;
  /** The HTTP status of a failed response; `undefined` when the failure came mid-stream. */
  readonly status: number | undefined;
  /** True when the failure came after the first token (the partial answer is valid). */
  readonly inBand: boolean;

  constructor(
    body: ServiceErrorBody,
    options: { status?: number; inBand?: boolean } = {},
  ) {
    super(body.message);
    this.type = body.type;
    this.retryable = body.retryable;
    this.retryAfterSeconds = body.retry_after_seconds;
    this.status = options.status;
    this.inBand = options.inBand ?? false;
  }
}

// --8<-- [start:options]
export interface StreamChatOptions {
  /** Default `/api/chat/stream` (same origin, e.g. through the dev server's proxy). */
  url?: string;
  /** Sent as `Authorization: Bearer <key>` when the service has SERVICE_API_KEYS set. */
  apiKey?: string;
  signal?: AbortSignal;
  /** Extra body fields: `model`, `temperature`, `max_tokens`. */
  options?: { model?: string; temperature?: number; max_tokens?: number };
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
}
// --8<-- [end:options]

export function isAbortError(error: unknown): boolean {
  return (
    typeof error === "object" &&
    error !== null &&
    "name" in error &&
    (error as { name: unknown }).name === "AbortError"
  );
}

/** Sends the conversation and yields the answer's events as they arrive. */
export async function* streamChat(
  messages: readonly ChatMessage[],
  options: StreamChatOptions = {},
): AsyncGenerator<ChatStreamEvent, void, undefined> {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    Accept: "text/event-stream",
  };
  if (options.apiKey) headers.Authorization = `Bearer ${options.apiKey}`;
  const response = await (options.fetch ?? fetch)(options.url ?? "/api/chat/stream", {
    method: "POST",
    headers,
    body: JSON.stringify({ ...options.options, messages }),
    signal: options.signal,
  });
  if (!response.ok) throw await errorFromResponse(response);
  if (!response.body) {
    throw new ChatStreamError(
      { type: "http_error", message: "the response has no body", retryable: true },
      { status: response.status },
    );
  }
  for await (const message of parseServerSentEvents(response.body)) {
    if (message.data === "[DONE]") return;
    yield* eventsOf(message.data);
  }
  throw new ChatStreamError(
    { type: "incomplete_stream", message: "the stream ended before it was complete", retryable: true },
    { inBand: true },
  );
}

function* eventsOf(data: string): Generator<ChatStreamEvent> {
  let event: Record<string, unknown>;
  try {
    event = JSON.parse(data) as Record<string, unknown>;
  } catch {
    throw new ChatStreamError(
      { type: "bad_event", message: `the service sent an event that is not JSON: ${data.slice(0, 80)}`, retryable: false },
      { inBand: true },
    );
  }
  switch (event.type) {
    case "start":
    case "delta":
    case "end":
      yield event as unknown as ChatStreamEvent;
      return;
    case "error":
      throw new ChatStreamError(asErrorBody(event.error, "the stream failed"), { inBand: true });
    default:
      // `ping` (NDJSON heartbeats) and event types added later: not part of the answer.
      return;
  }
}

/** Statuses worth another try when the body does not say (timeouts, overload, gateways). */
export const RETRYABLE_STATUSES: readonly number[] = [408, 429, 502, 503, 504];

/** The typed error for a response whose status is not 2xx. */
export async function errorFromResponse(response: Response): Promise<ChatStreamError> {
  const fallback = `${response.status} ${response.statusText}`.trim();
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const error = asErrorBody(
    typeof body === "object" && body !== null ? (body as { error?: unknown }).error : undefined,
    fallback,
    RETRYABLE_STATUSES.includes(response.status),
  );
  return new ChatStreamError(error, { status: response.status });
}

function asErrorBody(value: unknown, fallbackMessage: string, fallbackRetryable = false): ServiceErrorBody {
  const fields = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  const body: ServiceErrorBody = {
    type: typeof fields.type === "string" ? fields.type : "http_error",
    message: typeof fields.message === "string" && fields.message ? fields.message : fallbackMessage,
    retryable: typeof fields.retryable === "boolean" ? fields.retryable : fallbackRetryable,
  };
  if (typeof fields.retry_after_seconds === "number") {
    body.retry_after_seconds = fields.retry_after_seconds;
  }
  return body;
}

export interface ServerSentEvent {
  /** The `event:` field; `message` when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen so far in the stream (it carries over, as in `EventSource`). */
  id: string;
}

/** Splits a byte stream into Server-Sent Events; cancels the stream when the caller stops early. */
export async function* parseServerSentEvents(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<ServerSentEvent, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8"); // strips a leading BOM, as the spec asks
  let pending = ""; // text after the last line end
  let skipLineFeed = false; // the previous read ended with CR: a leading LF belongs to it
  let data: string[] = [];
  let eventName = "";
  let lastId = "";
  let finished = false;

  function* lines(text: string): Generator<string> {
    let start = 0;
    if (skipLineFeed && text.startsWith("\n")) start = 1;
    skipLineFeed = false;
    for (let index = start; index < text.length; index++) {
      const char = text[index];
      if (char !== "\r" && char !== "\n") continue;
      yield pending + text.slice(start, index);
      pending = "";
      if (char === "\r") {
        if (index + 1 === text.length) skipLineFeed = true;
        else if (text[index + 1] === "\n") index++;
      }
      start = index + 1;
    }
    pending += text.slice(start);
  }

  function field(line: string): ServerSentEvent | undefined {
    if (line === "") {
      const dispatched =
        data.length > 0 ? { event: eventName || "message", data: data.join("\n"), id: lastId } : undefined;
      data = [];
      eventName = "";
      return dispatched;
    }
    if (line.startsWith(":")) return undefined; // a comment: heartbeats
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") data.push(value);
    else if (name === "event") eventName = value;
    else if (name === "id" && !value.includes("\0")) lastId = value;
    // `retry` only matters to EventSource's reconnection; unknown fields are ignored.
    return undefined;
  }

  try {
    for (;;) {
      const { value, done } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (const line of lines(text)) {
        const event = field(line);
        if (event) yield event;
      }
      if (done) {
        finished = true;
        return; // an event without its blank line is incomplete: dropped
      }
    }
  } finally {
    // The caller stopped early or a read failed: close the response (and so the connection).
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
