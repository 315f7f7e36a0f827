/**
 * What the UI shows for one answer, whichever path produced it: the fetch reader
 * (`chatStream.ts`) or the AI SDK's `useChat`. Both panels turn their own state into this, so
 * one set of components renders messages, metrics and errors the same way.
 */

export type AnswerState = "waiting" | "streaming" | "done" | "stopped" | "error";

export interface AnswerMetrics {
  /** Time to first token: the service's figure at the end, the browser's while streaming. */
  ttftMs: number | null;
  tokensPerSecond: number | null;
  outputTokens: number | null;
  promptTokens: number | null;
  /** True when the figures are the service's own (the stream's `end` event or metadata). */
  fromService: boolean;
}

export interface AnswerError {
  /** The service's `error.type` (`rate_limited`, `unauthorized`, ...) when known. */
  type: string | undefined;
  message: string;
  /** Whether another try may succeed; `null` when the service did not say. */
  retryable: boolean | null;
  retryAfterSeconds: number | undefined;
  /** The service wants an API key (401): the UI asks for one. */
  needsKey: boolean;
}

export interface Answer {
  text: string;
  reasoning: string;
  state: AnswerState;
  model: string | undefined;
  finishReason: string | undefined;
  metrics: AnswerMetrics | undefined;
  error: AnswerError | undefined;
}

export const emptyAnswer: Answer = {
  text: "",
  reasoning: "",
  state: "waiting",
  model: undefined,
  finishReason: undefined,
  metrics: undefined,
  error: undefined,
};

/**
 * fetch() rejects with a bare TypeError ("Failed to fetch") both when the service is down and
 * when CORS refused the page's origin; the browser hides which, so the message names both.
 */
export function networkError(error: unknown): AnswerError {
  const reason = error instanceof Error ? error.message : String(error);
  return {
    type: "network_error",
    message: `${reason}: the service could not be reached, or it does not allow this page's origin (CORS_ALLOW_ORIGINS)`,
    retryable: true,
    retryAfterSeconds: undefined,
    needsKey: false,
  };
}

/** The note for an answer that ended early for a reason other than an error. */
export function finishNote(finishReason: string | undefined): string | undefined {
  switch (finishReason) {
    case "length":
      return "Cut off: the answer reached max_tokens.";
    case "content_filter":
    case "content-filter":
      return "Stopped by the provider's content filter.";
    default:
      return undefined;
  }
}
