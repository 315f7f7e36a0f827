/**
 * A fake of the transport for component tests: a `fetch` that records each request and answers
 * with a body the test writes to piece by piece. Everything above it (the stream reader,
 * useChat's transport and parser, React) is the real code. It behaves as a browser's fetch does
 * on abort: a pending request rejects, a body being read errors, both with an `AbortError`.
 */

export interface RecordedRequest {
  url: string;
  method: string;
  headers: Headers;
  body: unknown;
  signal: AbortSignal | undefined;
}

export interface OpenResponse {
  request: RecordedRequest;
  /** Sends raw text (encoded as UTF-8) as one read. */
  write(text: string): void;
  end(): void;
  /** Whether the client went away: aborted, or cancelled the body. */
  readonly closedByClient: boolean;
}

type Responder = (request: RecordedRequest) => Response | "stream";

const encoder = new TextEncoder();

const abortError = () => new DOMException("The operation was aborted.", "AbortError");

export function fakeService(respond: Responder = () => "stream") {
  const requests: RecordedRequest[] = [];
  const waiting: ((response: OpenResponse) => void)[] = [];
  const untaken: OpenResponse[] = [];

  const fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    if (url.endsWith("/healthz")) {
      return new Response(JSON.stringify({ status: "ok", provider: "demo", model: "demo", demo: true }));
    }
    const request: RecordedRequest = {
      url,
      method: init.method ?? "GET",
      headers: new Headers(init.headers),
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      signal: init.signal ?? undefined,
    };
    requests.push(request);
    if (request.signal?.aborted) throw abortError();
    const answer = respond(request);
    if (answer !== "stream") return answer;

    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let closedByClient = false;
    let ended = false;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
      },
      cancel() {
        closedByClient = true;
      },
    });
    request.signal?.addEventListener("abort", () => {
      closedByClient = true;
      if (!ended) controller.error(abortError());
    });
    const open: OpenResponse = {
      request,
      write: (text) => controller.enqueue(encoder.encode(text)),
      end: () => {
        ended = true;
        controller.close();
      },
      get closedByClient() {
        return closedByClient;
      },
    };
    const waiter = waiting.shift();
    if (waiter) waiter(open);
    else untaken.push(open);
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  };

  /** The next response the app opens (or the oldest one opened and not yet taken). */
  const nextResponse = (): Promise<OpenResponse> => {
    const open = untaken.shift();
    return open ? Promise.resolve(open) : new Promise((resolve) => waiting.push(resolve));
  };

  return { fetch: fetch as typeof globalThis.fetch, requests, nextResponse };
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

/** The service's SSE framing for its events (docs/api.md, "Server-Sent Events"). */
export const sse = {
  start: (model = "demo") =>
    `retry: 3000\nid: c:0\nevent: start\ndata: ${JSON.stringify({ type: "start", content: "", id: "c", model })}\n\n`,
  delta: (content: string) => `id: c:1\ndata: ${JSON.stringify({ type: "delta", content })}\n\n`,
  end: (metrics: Record<string, number | null>, usage: Record<string, number> | null = null, finishReason = "stop") =>
    `id: c:9\nevent: end\ndata: ${JSON.stringify({ type: "end", content: "", finish_reason: finishReason, usage, metrics })}\n\n`,
  error: (error: Record<string, unknown>) =>
    `id: c:9\nevent: error\ndata: ${JSON.stringify({ type: "error", content: "", error })}\n\n`,
  done: "id: c:done\ndata: [DONE]\n\n",
};

/** The AI SDK UI message stream protocol v1: one `data:` JSON chunk per event, then [DONE]. */
export const ui = {
  chunk: (chunk: Record<string, unknown>) => `data: ${JSON.stringify(chunk)}\n\n`,
  done: "data: [DONE]\n\n",
};
