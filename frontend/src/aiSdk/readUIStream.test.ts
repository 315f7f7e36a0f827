/**
 * The UI message stream protocol v1 read by the `ai` package's own reader. The bytes are built
 * here exactly as the protocol defines them (SSE `data:` lines of JSON chunks, then
 * `data: [DONE]`); `readUIStream` takes any ReadableStream, so the same checks can be pointed at
 * the service's `POST /api/chat` body.
 */
import { describe, expect, it } from "vitest";
import { readUIStream } from "./readUIStream";

const encoder = new TextEncoder();

function bodyOf(text: string, cuts: (bytes: Uint8Array) => number[] = () => []): ReadableStream<Uint8Array> {
  const bytes = encoder.encode(text);
  const bounds = [0, ...cuts(bytes).filter((cut) => cut > 0 && cut < bytes.length), bytes.length];
  let index = 0;
  return new ReadableStream({
    pull(controller) {
      if (index + 1 >= bounds.length) return controller.close();
      controller.enqueue(bytes.slice(bounds[index], bounds[index + 1]));
      index++;
    },
  });
}

const frame = (chunk: Record<string, unknown>) => `data: ${JSON.stringify(chunk)}\n\n`;

// What the upstream said, piece by piece: Markdown, a newline, CR, quotes, emoji, CJK, and text
// that looks like the framing itself.
const PIECES = ["Hel", "lo **wo", "rld** 👋\r\n", '"quoted" 世界 ', "data: [DONE]\n\n", "end"];
const REASONING = ["Think", "ing…"];
const METADATA = {
  usage: { prompt_tokens: 9, completion_tokens: 6, total_tokens: 15 },
  ttft_ms: 412.3,
  tokens_per_second: 48.1,
  output_tokens: 6,
};

function protocolStream({ error }: { error?: string } = {}): string {
  return [
    frame({ type: "start", messageId: "msg-1" }),
    frame({ type: "start-step" }),
    frame({ type: "reasoning-start", id: "r-0" }),
    ...REASONING.map((delta) => frame({ type: "reasoning-delta", id: "r-0", delta })),
    frame({ type: "reasoning-end", id: "r-0" }),
    frame({ type: "text-start", id: "t-0" }),
    ...PIECES.map((delta) => frame({ type: "text-delta", id: "t-0", delta })),
    ...(error
      ? [frame({ type: "error", errorText: error })]
      : [
          frame({ type: "text-end", id: "t-0" }),
          frame({ type: "finish-step" }),
          frame({ type: "finish", finishReason: "stop", messageMetadata: METADATA }),
        ]),
    "data: [DONE]\n\n",
  ].join("");
}

describe("the ai package's reader over a UI message stream", () => {
  it("gets exactly the upstream text, the reasoning and the metadata", async () => {
    const result = await readUIStream(bodyOf(protocolStream()));
    expect(result.errors).toEqual([]);
    expect(result.text).toBe(PIECES.join(""));
    expect(result.reasoning).toBe(REASONING.join(""));
    expect(result.message?.id).toBe("msg-1");
    expect(result.message?.role).toBe("assistant");
    expect(result.message?.metadata).toEqual(METADATA);
    expect(result.chunks.map((chunk) => chunk.type)).toEqual([
      "start", "start-step", "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end",
      "text-start", ...PIECES.map(() => "text-delta"), "text-end", "finish-step", "finish",
    ]);
    expect(result.chunks.at(-1)).toMatchObject({ type: "finish", finishReason: "stop" });
    // The message grows as it streams: one state per text piece at least.
    expect(result.updates).toBeGreaterThan(PIECES.length);
  });

  it("gives the same message whatever the read boundaries, down to one byte per read", async () => {
    const whole = await readUIStream(bodyOf(protocolStream()));
    const split = await readUIStream(
      bodyOf(protocolStream(), (bytes) => Array.from({ length: bytes.length }, (_, i) => i)),
    );
    expect(split.text).toBe(whole.text);
    expect(split.message).toEqual(whole.message);
  });

  it("accepts every finish reason the service can send, in the SDK's spelling", async () => {
    for (const finishReason of ["stop", "length", "content-filter", "tool-calls", "error", "other"]) {
      const stream = [
        frame({ type: "start", messageId: "m" }),
        frame({ type: "finish", finishReason }),
        "data: [DONE]\n\n",
      ].join("");
      const result = await readUIStream(bodyOf(stream));
      expect(result.chunks.at(-1)).toMatchObject({ type: "finish", finishReason });
    }
  });

  it("refuses a finish reason in the OpenAI spelling (content_filter)", async () => {
    const stream = frame({ type: "finish", finishReason: "content_filter" }) + "data: [DONE]\n\n";
    const result = await readUIStream(bodyOf(stream));
    expect(result.chunks).toEqual([]);
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatch(/^Type validation failed/);
  });

  it("reports an in-band error chunk and keeps the text before it", async () => {
    const result = await readUIStream(bodyOf(protocolStream({ error: "the upstream failed mid-stream" })));
    expect(result.errors).toEqual(["the upstream failed mid-stream"]);
    expect(result.text).toBe(PIECES.join(""));
  });
});
