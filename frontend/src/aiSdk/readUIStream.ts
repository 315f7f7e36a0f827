/**
 * Reads an AI SDK UI message stream (protocol v1) with the `ai` package's own pieces, exactly as
 * `useChat`'s `DefaultChatTransport` does: `parseJsonEventStream` with `uiMessageChunkSchema`
 * (every chunk validated against the SDK's schema), then `readUIMessageStream` builds the
 * assistant message. The byte source is the caller's: a constructed body in tests, or
 * `(await fetch("/api/chat", ...)).body` against the real endpoint.
 */
import {
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
  type UIMessage,
  type UIMessageChunk,
} from "ai";

export interface UIStreamResult {
  /** Every chunk, as the SDK parsed and validated it. */
  chunks: UIMessageChunk[];
  /** The assistant message after the last chunk. */
  message: UIMessage | undefined;
  /** How many message states `readUIMessageStream` produced (one per update). */
  updates: number;
  text: string;
  reasoning: string;
  /** The `errorText` of `{"type":"error"}` chunks, in order. */
  errors: string[];
}

export async function readUIStream(bytes: ReadableStream<Uint8Array>): Promise<UIStreamResult> {
  const chunks: UIMessageChunk[] = [];
  const errors: string[] = [];
  const chunkStream = parseJsonEventStream({ stream: bytes, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(result, controller) {
        // A chunk the SDK's schema refuses ends the read with an error (onError), as in useChat.
        if (!result.success) throw result.error;
        chunks.push(result.value);
        controller.enqueue(result.value);
      },
    }),
  );
  let message: UIMessage | undefined;
  let updates = 0;
  for await (const state of readUIMessageStream({
    stream: chunkStream,
    onError: (error) => errors.push(error instanceof Error ? error.message : String(error)),
  })) {
    message = state;
    updates++;
  }
  const partsText = (type: "text" | "reasoning") =>
    (message?.parts ?? []).map((part) => (part.type === type ? part.text : "")).join("");
  return { chunks, message, updates, text: partsText("text"), reasoning: partsText("reasoning"), errors };
}
