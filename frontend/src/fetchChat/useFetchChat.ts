/**
 * The conversation over `POST /api/chat/stream`, read with `chatStream.ts` (fetch + reader).
 *
 * - Every request carries the whole history. A stopped or failed answer keeps its partial text in
 *   the history; a turn that produced no text at all is left out (so roles still alternate), and
 *   its question goes back into the message box.
 * - Stop aborts the fetch: the connection closes and the service cancels the generation. So does
 *   unmounting (switching to the other path).
 * - Streamed text reaches React at most once per animation frame, so a fast stream does not
 *   re-render Markdown for every token.
 * - Metrics: while streaming, the browser's own TTFT and rate; at the `end` event, the service's.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  ChatStreamError,
  isAbortError,
  streamChat,
  type ChatMessage,
  type StreamChatOptions,
} from "../chatStream";
import { emptyAnswer, networkError, type Answer, type AnswerError } from "../answer";
import { API_BASE } from "../config";

export interface Turn {
  id: number;
  question: string;
  answer: Answer;
}

export interface FetchChatOptions {
  apiKey: string;
  url?: string;
  fetch?: typeof fetch;
}

export function historyBefore(turns: readonly Turn[]): ChatMessage[] {
  return turns.flatMap((turn): ChatMessage[] =>
    turn.answer.text
      ? [
          { role: "user", content: turn.question },
          { role: "assistant", content: turn.answer.text },
        ]
      : [],
  );
}

export function answerError(error: unknown): AnswerError {
  if (error instanceof ChatStreamError) {
    return {
      type: error.type,
      message: error.message,
      retryable: error.retryable,
      retryAfterSeconds: error.retryAfterSeconds,
      needsKey: error.status === 401,
    };
  }
  return networkError(error);
}

const nextFrame: (callback: () => void) => void =
  typeof requestAnimationFrame === "function"
    ? (callback) => requestAnimationFrame(callback)
    : (callback) => setTimeout(callback, 16);

export function useFetchChat(options: FetchChatOptions) {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [busy, setBusy] = useState(false);
  const [draft, setDraft] = useState<{ text: string }>();
  const controller = useRef<AbortController | null>(null);
  const turnsRef = useRef(turns);
  turnsRef.current = turns;
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const nextId = useRef(1);

  const update = (id: number, change: (answer: Answer) => Answer) =>
    setTurns((current) =>
      current.map((turn) => (turn.id === id ? { ...turn, answer: change(turn.answer) } : turn)),
    );

  const run = useCallback(async (turn: Turn, earlier: readonly Turn[]) => {
    const abort = new AbortController();
    controller.current = abort;
    setBusy(true);
    const messages: ChatMessage[] = [...historyBefore(earlier), { role: "user", content: turn.question }];
    const { apiKey, url, fetch: fetchImpl } = optionsRef.current;
    const request: StreamChatOptions = { apiKey, signal: abort.signal, url: url ?? `${API_BASE}/api/chat/stream` };
    if (fetchImpl) request.fetch = fetchImpl;

    const sentAt = performance.now();
    let firstAt: number | null = null;
    let deltas = 0;
    let text = "";
    let shown = 0; // characters of `text` already handed to React
    let frameQueued = false;
    const liveMetrics = () => {
      if (firstAt === null) return undefined;
      const seconds = (performance.now() - firstAt) / 1000;
      return {
        ttftMs: firstAt - sentAt,
        tokensPerSecond: deltas > 1 && seconds > 0 ? (deltas - 1) / seconds : null,
        outputTokens: deltas,
        promptTokens: null,
        fromService: false,
      };
    };
    const flush = () => {
      frameQueued = false;
      if (shown === text.length) return;
      shown = text.length;
      const snapshot = text;
      const metrics = liveMetrics();
      update(turn.id, (answer) =>
        answer.state === "streaming" ? { ...answer, text: snapshot, metrics } : answer,
      );
    };

    // --8<-- [start:stream-loop]
    let final: Partial<Answer> = {};
    try {
      for await (const event of streamChat(messages, request)) {
        if (event.type === "start") {
          update(turn.id, (answer) => ({ ...answer, model: event.model }));
        } else if (event.type === "delta") {
          if (firstAt === null) {
            firstAt = performance.now();
            update(turn.id, (answer) => ({ ...answer, state: "streaming" }));
          }
          deltas += 1;
          text += event.content;
          if (!frameQueued) {
            frameQueued = true;
            nextFrame(flush);
          }
        } else {
          final = {
            state: "done",
            finishReason: event.finish_reason,
            metrics: {
              ttftMs: event.metrics.ttft_ms,
              tokensPerSecond: event.metrics.tokens_per_second,
              outputTokens: event.usage?.completion_tokens ?? event.metrics.output_tokens,
              promptTokens: event.usage?.prompt_tokens ?? null,
              fromService: true,
            },
          };
        }
      }
      if (!final.state) final = { state: "done", metrics: liveMetrics() };
    } catch (error) {
      if (isAbortError(error)) final = { state: "stopped", metrics: liveMetrics() };
      else final = { state: "error", error: answerError(error), metrics: liveMetrics() };
    } finally {
      controller.current = null;
      update(turn.id, (answer) => ({ ...answer, ...final, text }));
      if (!text) setDraft({ text: turn.question }); // ready to send again
      setBusy(false);
    }
    // --8<-- [end:stream-loop]
  }, []);

  const send = useCallback(
    (question: string) => {
      if (controller.current) return;
      const turn: Turn = { id: nextId.current++, question, answer: emptyAnswer };
      const earlier = turnsRef.current;
      setTurns([...earlier, turn]);
      void run(turn, earlier);
    },
    [run],
  );

  /** Sends the last question again, in place of its failed answer. */
  const retry = useCallback(() => {
    const earlier = turnsRef.current.slice(0, -1);
    const last = turnsRef.current.at(-1);
    if (!last || controller.current) return;
    const turn: Turn = { ...last, answer: emptyAnswer };
    setTurns([...earlier, turn]);
    void run(turn, earlier);
  }, [run]);

  const stop = useCallback(() => controller.current?.abort(), []);
  // Leaving the chat (switching paths, closing the view) stops its answer, and so the generation.
  useEffect(() => () => controller.current?.abort(), []);

  return { turns, busy, draft, send, retry, stop };
}
