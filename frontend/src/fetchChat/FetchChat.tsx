import { useEffect } from "react";
import { AssistantMessage, UserMessage } from "../components/AssistantMessage";
import { Composer } from "../components/Composer";
import { Conversation } from "../components/Conversation";
import { useFetchChat } from "./useFetchChat";

/** The chat over `POST /api/chat/stream`, read with fetch + a ReadableStream reader. */
export function FetchChat({
  apiKey,
  onNeedsKey,
  fetch,
}: {
  apiKey: string;
  onNeedsKey: () => void;
  fetch?: typeof globalThis.fetch;
}) {
  const chat = useFetchChat({ apiKey, ...(fetch ? { fetch } : {}) });
  const last = chat.turns.at(-1);
  const needsKey = last?.answer.error?.needsKey ?? false;

  useEffect(() => {
    if (needsKey) onNeedsKey();
  }, [needsKey, last?.id, onNeedsKey]);

  return (
    <>
      <Conversation empty={chat.turns.length === 0}>
        {chat.turns.map((turn) => (
          <div className="turn" key={turn.id}>
            <UserMessage
              text={turn.question}
              dropped={!turn.answer.text && (turn.answer.state === "error" || turn.answer.state === "stopped")}
            />
            <AssistantMessage
              answer={turn.answer}
              onRetry={turn === last && !chat.busy ? chat.retry : undefined}
            />
          </div>
        ))}
      </Conversation>
      <Composer busy={chat.busy} onSend={chat.send} onStop={chat.stop} draft={chat.draft} />
    </>
  );
}
