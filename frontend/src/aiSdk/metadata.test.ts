import { APICallError } from "ai";
import { describe, expect, it } from "vitest";
import { answerErrorFromUseChat, metricsFromMetadata } from "./metadata";

const apiError = (statusCode: number, responseBody: string) =>
  new APICallError({ message: responseBody, url: "/api/chat", requestBodyValues: undefined, statusCode, responseBody });

describe("metricsFromMetadata", () => {
  it("reads the service's names and the AI SDK's usage spelling", () => {
    expect(
      metricsFromMetadata({ usage: { prompt_tokens: 9, completion_tokens: 4 }, ttft_ms: 12, tokens_per_second: 30 }),
    ).toEqual({ ttftMs: 12, tokensPerSecond: 30, outputTokens: 4, promptTokens: 9, fromService: true });
    expect(
      metricsFromMetadata({ usage: { inputTokens: 3, outputTokens: 5 }, metrics: { ttftMs: 7, tokensPerSecond: 2.5 } }),
    ).toEqual({ ttftMs: 7, tokensPerSecond: 2.5, outputTokens: 5, promptTokens: 3, fromService: true });
    expect(metricsFromMetadata({ output_tokens: 6 })?.outputTokens).toBe(6);
  });

  it("gives nothing for absent or foreign metadata", () => {
    expect(metricsFromMetadata(undefined)).toBeUndefined();
    expect(metricsFromMetadata({ createdAt: 1 })).toBeUndefined();
    expect(metricsFromMetadata({ ttft_ms: "fast" })).toBeUndefined();
  });
});

describe("answerErrorFromUseChat", () => {
  it("reads the service's error body from an HTTP error", () => {
    const body = { error: { type: "rate_limited", message: "slow down", retryable: true, retry_after_seconds: 3 } };
    expect(answerErrorFromUseChat(apiError(429, JSON.stringify(body)))).toEqual({
      type: "rate_limited", message: "slow down", retryable: true, retryAfterSeconds: 3, needsKey: false,
    });
    const unauthorized = { error: { type: "unauthorized", message: "key needed", retryable: false } };
    expect(answerErrorFromUseChat(apiError(401, JSON.stringify(unauthorized))).needsKey).toBe(true);
  });

  it("judges by the status when the body does not say", () => {
    expect(answerErrorFromUseChat(apiError(404, '{"error":{"type":"not_found","message":"Not Found"}}'))).toMatchObject({
      type: "not_found", message: "Not Found", retryable: false,
    });
    expect(answerErrorFromUseChat(apiError(502, "<html>Bad Gateway</html>"))).toMatchObject({
      type: "http_error", retryable: true,
    });
  });

  it("keeps an in-band error's text and says nothing it does not know", () => {
    expect(answerErrorFromUseChat(new Error("the upstream failed mid-stream"))).toEqual({
      type: undefined, message: "the upstream failed mid-stream", retryable: null, retryAfterSeconds: undefined, needsKey: false,
    });
    expect(answerErrorFromUseChat(new TypeError("Failed to fetch"))).toMatchObject({ type: "network_error", retryable: true });
  });
});
