/**
 * Reading what `POST /api/chat` (the AI SDK UI message stream) tells the `useChat` path:
 * the metrics under `messageMetadata`, and errors as `useChat` reports them.
 *
 * The metadata names follow the service's `end` event (`ttft_ms`, `tokens_per_second`,
 * `output_tokens`, `usage.prompt_tokens`); the AI SDK's own usage spelling (`inputTokens`,
 * `outputTokens`) and camelCase figures are read too, so the panel keeps working whichever the
 * endpoint settles on.
 */
import { APICallError } from "ai";
import { networkError, type AnswerError, type AnswerMetrics } from "../answer";
import { RETRYABLE_STATUSES } from "../chatStream";

type Fields = Record<string, unknown>;

const asFields = (value: unknown): Fields =>
  typeof value === "object" && value !== null ? (value as Fields) : {};

function numberAt(fields: Fields, ...names: string[]): number | null {
  for (const name of names) {
    const value = fields[name];
    if (typeof value === "number" && Number.isFinite(value)) return value;
  }
  return null;
}

export function metricsFromMetadata(metadata: unknown): AnswerMetrics | undefined {
  const fields = asFields(metadata);
  const metrics = { ...fields, ...asFields(fields.metrics) };
  const usage = asFields(fields.usage);
  const result: AnswerMetrics = {
    ttftMs: numberAt(metrics, "ttft_ms", "ttftMs"),
    tokensPerSecond: numberAt(metrics, "tokens_per_second", "tokensPerSecond"),
    outputTokens:
      numberAt(usage, "completion_tokens", "outputTokens") ??
      numberAt(metrics, "output_tokens", "outputTokens"),
    promptTokens: numberAt(usage, "prompt_tokens", "inputTokens"),
    fromService: true,
  };
  const known = [result.ttftMs, result.tokensPerSecond, result.outputTokens, result.promptTokens];
  return known.some((value) => value !== null) ? result : undefined;
}

/** The service's `{"error": {type, message, retryable}}` (or the bare inner object), if `text` is one. */
function serviceError(text: string | undefined): Fields | undefined {
  if (!text) return undefined;
  try {
    const parsed = asFields(JSON.parse(text));
    const inner = asFields(parsed.error ?? parsed);
    return typeof inner.message === "string" ? inner : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `useChat`'s `error`: an `APICallError` (status and body) when the response was an HTTP error,
 * an `Error` with the chunk's `errorText` after an in-band `{"type":"error"}`, a `TypeError`
 * when the service could not be reached.
 */
export function answerErrorFromUseChat(error: Error): AnswerError {
  const status = APICallError.isInstance(error) ? error.statusCode : undefined;
  const body = serviceError(APICallError.isInstance(error) ? error.responseBody : error.message);
  if (body) {
    return {
      type: typeof body.type === "string" ? body.type : undefined,
      message: body.message as string,
      retryable:
        typeof body.retryable === "boolean"
          ? body.retryable
          : status !== undefined
            ? RETRYABLE_STATUSES.includes(status)
            : null,
      retryAfterSeconds: typeof body.retry_after_seconds === "number" ? body.retry_after_seconds : undefined,
      needsKey: status === 401,
    };
  }
  if (status !== undefined) {
    return {
      type: "http_error",
      message: `${status}${error.message ? `: ${error.message.slice(0, 200)}` : ""}`,
      retryable: RETRYABLE_STATUSES.includes(status),
      retryAfterSeconds: undefined,
      needsKey: status === 401,
    };
  }
  if (error.name === "TypeError") return networkError(error);
  // An in-band error chunk carries only its text: whether a retry helps is not said.
  return { type: undefined, message: error.message, retryable: null, retryAfterSeconds: undefined, needsKey: false };
}
