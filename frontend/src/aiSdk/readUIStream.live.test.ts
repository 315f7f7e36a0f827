/**
 * `readUIStream` (the `ai` package's own reader) over the body of the service's `POST /api/chat`.
 * Needs CHAT_SERVICE_URL (a running service) and EXPECTED_TEXT (a JSON string: what its upstream
 * will answer); tests/test_frontend_browser.py sets both.
 */
import { expect, it } from "vitest";
import { readUIStream } from "./readUIStream";

it("reads exactly the upstream's text from POST /api/chat", async () => {
  const base = process.env.CHAT_SERVICE_URL;
  const expected = process.env.EXPECTED_TEXT;
  if (!base || expected === undefined) throw new Error("set CHAT_SERVICE_URL and EXPECTED_TEXT");
  // The body useChat's DefaultChatTransport sends.
  const response = await fetch(`${base}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      id: "chat-live",
      messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "Say hello" }] }],
      trigger: "submit-message",
      messageId: undefined,
    }),
  });
  expect(response.status).toBe(200);
  expect(response.headers.get("x-vercel-ai-ui-message-stream")).toBe("v1");
  const result = await readUIStream(response.body!);
  expect(result.errors).toEqual([]);
  expect(result.text).toBe(JSON.parse(expected));
  expect(result.chunks.at(-1)).toMatchObject({ type: "finish", finishReason: "stop" });
  const metadata = result.message?.metadata as Record<string, unknown>;
  expect(typeof metadata.ttft_ms).toBe("number");
  expect(metadata.output_tokens).toBeGreaterThan(0);
});
