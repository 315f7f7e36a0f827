/**
 * The same chat through the Vercel AI SDK: `useChat` from `@ai-sdk/react` with
 * `DefaultChatTransport` posting to `/api/chat`, which answers in the UI message stream
 * protocol (header `x-vercel-ai-ui-message-stream: v1`). Stop calls `useChat`'s `stop()`, which
 * aborts the fetch and so the generation, and also `POST /api/chat/{chatId}/stop`: with
 * `REDIS_URL` set the service otherwise keeps generating for its grace period, waiting for the
 * client to resume (issue 13). Retry calls `regenerate()`. Unmounting the panel (switching
 * paths) stops too: `useChat` stops the chat it created when it unmounts, and the panel sends
 * the stop request if an answer was coming.
 *
 * The chat id and messages survive a reload (`./chatSession`), and `resume: true` makes
 * `useChat` ask for the chat's active stream on load, which the service replays from `start`.
 */
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, type UIMessage } from "ai";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { emptyAnswer, type Answer } from "../answer";
import { AssistantMessage, UserMessage } from "../components/AssistantMessage";
import { Composer } from "../components/Composer";
import { Conversation } from "../components/Conversation";
import { API_BASE } from "../config";
import { chatId, resumeFetch, stopOnService, storedMessages, storeMessages } from "./chatSession";
import { answerErrorFromUseChat, metricsFromMetadata } from "./metadata";

interface Ending {
  stopped: boolean;
  finishReason: string | undefined;
}

const textOf = (message: UIMessage, type: "text" | "reasoning") =>
  message.parts.map((part) => (part.type === type ? part.text : "")).join("");

export function UseChatPanel({
  apiKey,
  onNeedsKey,
  fetch,
  api = `${API_BASE}/api/chat`,
}: {
  apiKey: string;
  onNeedsKey: () => void;
  fetch?: typeof globalThis.fetch;
  api?: string;
}) {
  const keyRef = useRef(apiKey);
  keyRef.current = apiKey;
  const fetchRef = useRef(fetch);
  fetchRef.current = fetch;
  // --8<-- [start:use-chat]
  // One chat and one transport for the panel's life; the key is read at each request.
  const [session] = useState(() => ({ id: chatId(), messages: storedMessages() }));
  const [transport] = useState(
    () =>
      new DefaultChatTransport<UIMessage>({
        api,
        headers: (): Record<string, string> =>
          keyRef.current ? { Authorization: `Bearer ${keyRef.current}` } : {},
        fetch: resumeFetch((input, init) => (fetchRef.current ?? globalThis.fetch)(input, init)),
      }),
  );
  const [endings, setEndings] = useState<Record<string, Ending>>({});
  const [stoppedEarly, setStoppedEarly] = useState(false); // Stop before any answer arrived
  const [draft, setDraft] = useState<{ text: string }>();
  // The browser's own time to first text per answer: the service's figures come only with the
  // `finish` chunk, which a stopped answer never gets.
  const sentAt = useRef(0);
  const [firstTextMs, setFirstTextMs] = useState<Record<string, number>>({});
  const { messages, sendMessage, status, error, stop, regenerate, setMessages } = useChat({
    id: session.id,
    messages: session.messages,
    resume: true,
    transport,
    onFinish: ({ message, isAbort, finishReason }) =>
      setEndings((current) => ({ ...current, [message.id]: { stopped: isAbort, finishReason } })),
  });
  // --8<-- [end:use-chat]
  const busy = status === "submitted" || status === "streaming";
  const last = messages.at(-1);

  useEffect(() => storeMessages(messages), [messages]);

  const stopOnServer = useCallback(
    () => void stopOnService(api, session.id, keyRef.current, fetchRef.current),
    [api, session.id],
  );
  // Leaving the panel with an answer coming: useChat aborts its fetch; this ends the generation.
  const busyRef = useRef(busy);
  busyRef.current = busy;
  useEffect(() => () => {
    if (busyRef.current) stopOnServer();
  }, [stopOnServer]);
  const failure = useMemo(
    () => (status === "error" && error ? answerErrorFromUseChat(error) : undefined),
    [status, error],
  );

  useEffect(() => {
    if (failure?.needsKey) onNeedsKey();
  }, [failure?.needsKey, onNeedsKey]);

  const send = useCallback(
    (text: string) => {
      sentAt.current = performance.now();
      setStoppedEarly(false);
      // A question that got no answer at all is left out of the history (roles alternate).
      if (messages.at(-1)?.role === "user") setMessages(messages.slice(0, -1));
      void sendMessage({ text });
    },
    [messages, sendMessage, setMessages],
  );

  const onStop = useCallback(() => {
    if (messages.at(-1)?.role === "user") setStoppedEarly(true);
    void stop();
    stopOnServer();
  }, [messages, stop, stopOnServer]);

  const retry = useCallback(() => {
    sentAt.current = performance.now();
    setStoppedEarly(false);
    void regenerate();
  }, [regenerate]);

  // A question whose request failed or was stopped before any answer: ready to send again.
  const unanswered = !busy && last?.role === "user" && (failure || stoppedEarly) ? last : undefined;
  useEffect(() => {
    if (unanswered) setDraft({ text: textOf(unanswered, "text") });
  }, [unanswered]);

  const streamingId = busy && last?.role === "assistant" && textOf(last, "text") ? last.id : undefined;
  useEffect(() => {
    if (streamingId && !(streamingId in firstTextMs)) {
      setFirstTextMs((current) => ({ ...current, [streamingId]: performance.now() - sentAt.current }));
    }
  }, [streamingId, firstTextMs]);

  const answerFor = (message: UIMessage, isLast: boolean): Answer => {
    const text = textOf(message, "text");
    const ending = endings[message.id];
    let state: Answer["state"] = "done";
    if (isLast && busy) state = text ? "streaming" : "waiting";
    else if (isLast && failure) state = "error";
    else if (ending?.stopped) state = "stopped";
    return {
      ...emptyAnswer,
      text,
      reasoning: textOf(message, "reasoning"),
      state,
      finishReason: ending?.finishReason,
      metrics:
        metricsFromMetadata(message.metadata) ??
        (message.id in firstTextMs
          ? {
              ttftMs: firstTextMs[message.id] ?? null,
              tokensPerSecond: null,
              outputTokens: null,
              promptTokens: null,
              fromService: false,
            }
          : undefined),
      error: isLast ? failure : undefined,
    };
  };

  // After a question with no answer message yet: waiting, failed before the first token, or stopped.
  const pending: Answer | undefined =
    last?.role === "user"
      ? busy
        ? { ...emptyAnswer, state: "waiting" }
        : failure
          ? { ...emptyAnswer, state: "error", error: failure }
          : stoppedEarly
            ? { ...emptyAnswer, state: "stopped" }
            : undefined
      : undefined;

  return (
    <>
      <Conversation empty={messages.length === 0}>
        {messages.map((message) =>
          message.role === "user" ? (
            <UserMessage
              key={message.id}
              text={textOf(message, "text")}
              dropped={message === last && !busy && Boolean(failure || stoppedEarly)}
            />
          ) : message.role === "assistant" ? (
            <AssistantMessage
              key={message.id}
              answer={answerFor(message, message === last)}
              onRetry={message === last && failure ? retry : undefined}
            />
          ) : null,
        )}
        {pending && <AssistantMessage answer={pending} onRetry={failure ? retry : undefined} />}
      </Conversation>
      <Composer busy={busy} onSend={send} onStop={onStop} draft={draft} />
    </>
  );
}
