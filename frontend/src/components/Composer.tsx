import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";

/** The message box: Enter sends, Shift+Enter adds a line, Esc (anywhere) stops. */
export function Composer({
  busy,
  onSend,
  onStop,
  draft,
}: {
  busy: boolean;
  onSend: (text: string) => void;
  onStop: () => void;
  /** Text put back in the box (a question that got no answer), when it is empty. */
  draft?: { text: string } | undefined;
}) {
  const [text, setText] = useState("");
  const box = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    if (draft) setText((current) => current || draft.text);
  }, [draft]);

  useEffect(() => {
    const onKey = (event: globalThis.KeyboardEvent) => {
      if (event.key === "Escape" && busy) onStop();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [busy, onStop]);

  useEffect(() => {
    if (!busy) box.current?.focus();
  }, [busy]);

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    element.style.height = "auto";
    element.style.height = `${element.scrollHeight + 2}px`;
  }, [text]);

  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    const message = text.trim();
    if (!message || busy) return;
    setText("");
    onSend(message);
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) submit(event);
  };

  return (
    <footer className="composer-bar">
    <form className="composer" onSubmit={submit}>
      <textarea
        ref={box}
        rows={1}
        value={text}
        placeholder="Message"
        aria-label="Message"
        onChange={(event) => setText(event.target.value)}
        onKeyDown={onKeyDown}
      />
      {busy ? (
        <button type="button" className="stop" onClick={onStop}>
          Stop
        </button>
      ) : (
        <button type="submit" disabled={!text.trim()}>
          Send
        </button>
      )}
    </form>
    </footer>
  );
}
