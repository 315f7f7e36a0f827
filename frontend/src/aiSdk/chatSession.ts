/**
 * What lets a `useChat` answer outlive the page (issue 13, docs/operations.md "Resumable streams with Redis"): with
 * `REDIS_URL` set, the service keeps producing an answer whose client went away for a grace
 * period, serves the chat's active stream at `GET {api}/{chatId}/stream` (the URL
 * `DefaultChatTransport.reconnectToStream` builds by default), and stops it at once on
 * `POST {api}/{chatId}/stop`, from any replica.
 *
 * - The chat id and the messages are kept in `sessionStorage` (this tab only, like the key), so
 *   a reload finds the same chat and `useChat({ resume: true })` can ask for its stream.
 * - `resumeFetch` makes a service without resumable streams (no `REDIS_URL`: the GET route does
 *   not exist, 404) look like one with nothing to resume (204), so a page load is quiet there.
 * - `stopOnService` is the explicit stop: aborting the fetch alone only starts the grace period.
 */
import { generateId, type UIMessage } from "ai";

const ID_KEY = "chat.useChat.id";
const MESSAGES_KEY = "chat.useChat.messages";

function read(key: string): string | null {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null; // storage disabled: the chat lives in memory only
  }
}

function write(key: string, value: string): void {
  try {
    sessionStorage.setItem(key, value);
  } catch {
    // storage disabled or full: memory only
  }
}

/** The service accepts chat ids of `[A-Za-z0-9_-]{1,200}` on its resume and stop routes. */
const VALID_ID = /^[A-Za-z0-9_-]{1,200}$/;

/** This tab's chat id: the stored one, or a new one stored now. */
export function chatId(): string {
  const stored = read(ID_KEY);
  if (stored && VALID_ID.test(stored)) return stored;
  const id = generateId();
  write(ID_KEY, id);
  return id;
}

/** The messages stored for this tab's chat (none if nothing readable is stored). */
export function storedMessages(): UIMessage[] {
  const stored = read(MESSAGES_KEY);
  if (!stored) return [];
  try {
    const messages: unknown = JSON.parse(stored);
    return Array.isArray(messages) ? (messages as UIMessage[]) : [];
  } catch {
    return [];
  }
}

export function storeMessages(messages: UIMessage[]): void {
  write(MESSAGES_KEY, JSON.stringify(messages));
}

/**
 * `fetch` for the transport: a GET (useChat's reconnect, the only GET it sends) answered 404 is
 * read as 204, "no active stream", since a service without `REDIS_URL` has no resume route.
 */
export function resumeFetch(base: typeof globalThis.fetch): typeof globalThis.fetch {
  return async (input, init) => {
    const response = await base(input, init);
    if ((init?.method ?? "GET") === "GET" && response.status === 404) {
      void response.body?.cancel();
      return new Response(null, { status: 204 });
    }
    return response;
  };
}

/**
 * Asks the service to stop the chat's active stream now, wherever it is produced. Best effort
 * and quiet: without `REDIS_URL` the route does not exist (404) and aborting the fetch has
 * already cancelled the generation; a stream that has ended is 404 too.
 */
export async function stopOnService(
  api: string,
  id: string,
  apiKey: string,
  fetch: typeof globalThis.fetch = globalThis.fetch,
): Promise<void> {
  try {
    const response = await fetch(`${api}/${encodeURIComponent(id)}/stop`, {
      method: "POST",
      headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
    });
    void response.body?.cancel();
  } catch {
    // network gone: the abort (and, with Redis, the grace period) still ends the generation
  }
}
