import { lazy, Suspense, useCallback, useEffect, useRef, useState } from "react";
import { useApiKey } from "./apiKey";
import { API_BASE } from "./config";
import { FetchChat } from "./fetchChat/FetchChat";

// The AI SDK is most of the bundle's weight: only the useChat path loads it.
const UseChatPanel = lazy(() =>
  import("./aiSdk/UseChatPanel").then((module) => ({ default: module.UseChatPanel })),
);

export type Mode = "fetch" | "usechat";

const MODES: { mode: Mode; label: string; title: string }[] = [
  { mode: "fetch", label: "fetch", title: "POST /api/chat/stream, read with fetch() and a stream reader" },
  { mode: "usechat", label: "useChat", title: "the AI SDK's useChat, POST /api/chat (UI message stream)" },
];

/** `?mode=usechat` in the address picks the AI SDK path, so a link (or a test) can choose. */
function initialMode(): Mode {
  const asked = new URLSearchParams(window.location.search).get("mode");
  return asked === "usechat" ? "usechat" : "fetch";
}

function useModelName(fetchImpl: typeof fetch): string {
  const [name, setName] = useState("");
  useEffect(() => {
    let live = true;
    fetchImpl(`${API_BASE}/healthz`)
      .then((response) => (response.ok ? response.json() : undefined))
      .then((health: { demo?: boolean; model?: string; provider?: string } | undefined) => {
        if (live && health) setName(health.demo ? "demo model" : `${health.model} · ${health.provider}`);
      })
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [fetchImpl]);
  return name;
}

// Looked up at each call, so the page always uses the window's current fetch.
const browserFetch: typeof fetch = (input, init) => globalThis.fetch(input, init);

export function App({ fetch: fetchImpl = browserFetch }: { fetch?: typeof fetch }) {
  const [mode, setMode] = useState<Mode>(initialMode);
  const [apiKey, setApiKey] = useApiKey();
  const [askKey, setAskKey] = useState(Boolean(apiKey));
  const keyInput = useRef<HTMLInputElement>(null);
  const model = useModelName(fetchImpl);

  const [keyRequests, setKeyRequests] = useState(0);
  const onNeedsKey = useCallback(() => {
    setAskKey(true);
    setKeyRequests((count) => count + 1);
  }, []);
  // In an effect of its own, so it runs after the field is shown and after the message box
  // took the focus back at the end of the request.
  useEffect(() => {
    if (keyRequests > 0) keyInput.current?.focus();
  }, [keyRequests]);

  const choose = (next: Mode) => {
    setMode(next);
    const url = new URL(window.location.href);
    if (next === "fetch") url.searchParams.delete("mode");
    else url.searchParams.set("mode", next);
    window.history.replaceState(null, "", url);
  };

  return (
    <div className="app">
      <header>
        <h1>Chat</h1>
        <span className="model">{model}</span>
        <div className="modes" role="radiogroup" aria-label="How the page talks to the service">
          {MODES.map((item) => (
            <button
              key={item.mode}
              type="button"
              role="radio"
              aria-checked={mode === item.mode}
              className={mode === item.mode ? "active" : undefined}
              title={item.title}
              onClick={() => choose(item.mode)}
            >
              {item.label}
            </button>
          ))}
        </div>
        {askKey && (
          <input
            ref={keyInput}
            className="api-key"
            type="password"
            placeholder="Service API key"
            aria-label="Service API key"
            defaultValue={apiKey}
            onChange={(event) => setApiKey(event.target.value)}
          />
        )}
      </header>
      {/* Each path keeps its own conversation; switching starts the other one. */}
      {mode === "fetch" ? (
        <FetchChat key="fetch" apiKey={apiKey} onNeedsKey={onNeedsKey} fetch={fetchImpl} />
      ) : (
        <Suspense fallback={<main className="scroller" />}>
          <UseChatPanel key="usechat" apiKey={apiKey} onNeedsKey={onNeedsKey} fetch={fetchImpl} />
        </Suspense>
      )}
      <p className="hint">Enter to send · Shift+Enter for a new line · Esc to stop</p>
    </div>
  );
}
