// @vitest-environment happy-dom
import { cleanup, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { App } from "../App";
import { fakeService as streamingService, jsonResponse, ui, type RecordedRequest } from "../testing/fakeService";

// The app loads this panel lazily; loading the AI SDK the first time can take seconds on a busy
// machine, longer than a findBy* waits, so it is loaded before the tests.
beforeAll(() => import("./UseChatPanel"), 60_000);

beforeEach(() => {
  sessionStorage.clear();
  window.history.replaceState(null, "", "/?mode=usechat");
});
afterEach(cleanup);

type Respond = (request: RecordedRequest) => Response | "stream";

const notFound = () => jsonResponse(404, { error: { type: "not_found", message: "Not Found" } });
const isResumeOrStop = (request: RecordedRequest) => request.method === "GET" || request.url.endsWith("/stop");

/** The fake service as one without `REDIS_URL` (no resume or stop routes: 404), so useChat's
 * resume on load finds nothing; `respond` answers the chat requests (streams by default). */
function fakeService(respond: Respond = () => "stream") {
  return streamingService((request) => (isResumeOrStop(request) ? notFound() : respond(request)));
}

const lastAnswer = () => screen.getAllByTestId("assistant").at(-1)!;

async function ask(text: string) {
  const user = userEvent.setup();
  await user.type(await screen.findByLabelText("Message"), `${text}{Enter}`);
  return user;
}

interface UIRequestBody {
  id: string;
  trigger: string;
  messageId?: string;
  messages: { id: string; role: string; parts: { type: string; text?: string }[] }[];
}
const bodyOf = (request: RecordedRequest) => request.body as UIRequestBody;
const conversation = (request: RecordedRequest) =>
  bodyOf(request).messages.map((message) => ({
    role: message.role,
    text: message.parts.map((part) => (part.type === "text" ? part.text : "")).join(""),
  }));

function answer(text: string[], metadata: Record<string, unknown>, messageId = "msg-1"): string {
  return [
    ui.chunk({ type: "start", messageId }),
    ui.chunk({ type: "start-step" }),
    ui.chunk({ type: "text-start", id: "t" }),
    ...text.map((delta) => ui.chunk({ type: "text-delta", id: "t", delta })),
    ui.chunk({ type: "text-end", id: "t" }),
    ui.chunk({ type: "finish-step" }),
    ui.chunk({ type: "finish", finishReason: "stop", messageMetadata: metadata }),
    ui.done,
  ].join("");
}

describe("the useChat path (POST /api/chat, UI message stream)", () => {
  it("streams through useChat, shows the metadata's metrics, and sends the history as UI messages", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    expect(screen.getByRole("radio", { name: "useChat" }).getAttribute("aria-checked")).toBe("true");
    await ask("First question");
    const response = await service.nextResponse();
    expect(response.request.url).toBe("/api/chat");
    expect(bodyOf(response.request).trigger).toBe("submit-message");
    expect(typeof bodyOf(response.request).id).toBe("string");
    expect(conversation(response.request)).toEqual([{ role: "user", text: "First question" }]);

    response.write(ui.chunk({ type: "start", messageId: "msg-1" }) + ui.chunk({ type: "reasoning-start", id: "r" }));
    response.write(ui.chunk({ type: "reasoning-delta", id: "r", delta: "Let me think" }) + ui.chunk({ type: "reasoning-end", id: "r" }));
    response.write(ui.chunk({ type: "text-start", id: "t" }) + ui.chunk({ type: "text-delta", id: "t", delta: "Answer with `co" }));
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("streaming"));
    expect(lastAnswer().querySelector(".reasoning")?.textContent).toContain("Let me think");
    response.write(ui.chunk({ type: "text-delta", id: "t", delta: "de`" }) + ui.chunk({ type: "text-end", id: "t" }));
    response.write(
      ui.chunk({
        type: "finish",
        finishReason: "stop",
        messageMetadata: {
          usage: { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 },
          ttft_ms: 250.4,
          tokens_per_second: 30.26,
        },
      }) + ui.done,
    );
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    expect(lastAnswer().querySelector("code")?.textContent).toBe("code");
    const metrics = within(lastAnswer()).getByTestId("metrics").textContent;
    expect(metrics).toContain("TTFT 250 ms");
    expect(metrics).toContain("30.3 tok/s");
    expect(metrics).toContain("4 tokens");
    expect(metrics).toContain("7 in");

    await ask("Second question");
    const second = await service.nextResponse();
    expect(conversation(second.request)).toEqual([
      { role: "user", text: "First question" },
      { role: "assistant", text: "Answer with `code`" },
      { role: "user", text: "Second question" },
    ]);
    expect(bodyOf(second.request).id).toBe(bodyOf(response.request).id);
  });

  it("Stop calls useChat's stop(), which aborts the fetch", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Long one");
    const response = await service.nextResponse();
    response.write(
      ui.chunk({ type: "start", messageId: "m" }) +
        ui.chunk({ type: "text-start", id: "t" }) +
        ui.chunk({ type: "text-delta", id: "t", delta: "Partial" }),
    );
    await waitFor(() => expect(lastAnswer().textContent).toContain("Partial"));
    await user.click(screen.getByRole("button", { name: "Stop" }));
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("stopped"));
    expect(response.request.signal?.aborted).toBe(true);
    expect(response.closedByClient).toBe(true);
    expect(lastAnswer().textContent).toContain("Stopped.");
    expect(screen.getByRole("button", { name: "Send" })).toBeTruthy();
    // No finish chunk, so no figures from the service: the browser's own time to first text.
    const metrics = within(lastAnswer()).getByTestId("metrics");
    expect(metrics.dataset.final).toBeUndefined();
    expect(metrics.textContent).toMatch(/^TTFT \d+ ms$/);
  });

  it("switching to the fetch path stops the answer being streamed", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Long answer");
    const response = await service.nextResponse();
    response.write(ui.chunk({ type: "start", messageId: "m" }) + ui.chunk({ type: "text-start", id: "t" }));
    response.write(ui.chunk({ type: "text-delta", id: "t", delta: "Part" }));
    await waitFor(() => expect(lastAnswer().textContent).toContain("Part"));
    await user.click(screen.getByRole("radio", { name: "fetch" }));
    await waitFor(() => expect(response.request.signal?.aborted).toBe(true));
    expect(window.location.search).toBe("");
  });

  it("shows the service's HTTP error and retries with regenerate()", async () => {
    let calls = 0;
    const service = fakeService(() =>
      ++calls === 1
        ? jsonResponse(502, { error: { type: "upstream_unavailable", message: "the upstream is unreachable", retryable: true } })
        : "stream",
    );
    render(<App fetch={service.fetch} />);
    const user = await ask("Hello");
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    const alert = within(lastAnswer()).getByRole("alert");
    expect(alert.textContent).toContain("Error (upstream_unavailable): the upstream is unreachable.");
    expect(alert.textContent).toContain("A retry may help.");

    await user.click(within(alert).getByRole("button", { name: "Retry" }));
    const response = await service.nextResponse();
    expect(bodyOf(response.request).trigger).toBe("regenerate-message");
    expect(conversation(response.request)).toEqual([{ role: "user", text: "Hello" }]);
    response.write(answer(["Hi", " there"], { ttft_ms: 10, tokens_per_second: 5 }));
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    expect(lastAnswer().textContent).toContain("Hi there");
    expect(screen.getAllByTestId("assistant")).toHaveLength(1);
  });

  it("shows an in-band error chunk's text after the partial answer", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    await ask("Hello");
    const response = await service.nextResponse();
    response.write(
      ui.chunk({ type: "start", messageId: "m" }) +
        ui.chunk({ type: "text-start", id: "t" }) +
        ui.chunk({ type: "text-delta", id: "t", delta: "Half an answer" }) +
        ui.chunk({ type: "error", errorText: "the upstream failed mid-stream" }) +
        ui.done,
    );
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    expect(lastAnswer().textContent).toContain("Half an answer");
    expect(within(lastAnswer()).getByRole("alert").textContent).toContain("the upstream failed mid-stream");
  });

  it("asks for the key after a 401 and sends it as a Bearer token", async () => {
    const service = fakeService((request) =>
      request.headers.get("Authorization") === "Bearer sk-ui"
        ? "stream"
        : jsonResponse(401, { error: { type: "unauthorized", message: "a valid API key is required", retryable: false } }),
    );
    render(<App fetch={service.fetch} />);
    const user = await ask("Hello");
    const keyField = await screen.findByLabelText("Service API key");
    await user.type(keyField, "sk-ui");
    await user.click(within(lastAnswer()).getByRole("button", { name: "Retry" }));
    const response = await service.nextResponse();
    expect(response.request.headers.get("Authorization")).toBe("Bearer sk-ui");
    response.write(answer(["Welcome"], {}));
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
  });

  it("Stop also asks the service to stop the chat's stream, with the key, and a 404 stays quiet", async () => {
    sessionStorage.setItem("chat.apiKey", "sk-ui");
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Long one");
    const response = await service.nextResponse();
    response.write(ui.chunk({ type: "start", messageId: "m" }) + ui.chunk({ type: "text-start", id: "t" }));
    response.write(ui.chunk({ type: "text-delta", id: "t", delta: "Partial" }));
    await waitFor(() => expect(lastAnswer().textContent).toContain("Partial"));
    await user.click(screen.getByRole("button", { name: "Stop" }));
    const id = bodyOf(response.request).id;
    const stops = () => service.requests.filter((request) => request.url.endsWith("/stop"));
    await waitFor(() => expect(stops()).toHaveLength(1));
    expect(stops()[0]!.method).toBe("POST");
    expect(stops()[0]!.url).toBe(`/api/chat/${id}/stop`);
    expect(stops()[0]!.headers.get("Authorization")).toBe("Bearer sk-ui");
    expect(response.request.signal?.aborted).toBe(true);
    // The service without Redis answered the stop 404: the answer is just stopped.
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("stopped"));
    expect(within(lastAnswer()).queryByRole("alert")).toBeNull();
  });

  it("sends the stop without a key when none is set", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Long one");
    const response = await service.nextResponse();
    response.write(ui.chunk({ type: "start", messageId: "m" }));
    await user.click(await screen.findByRole("button", { name: "Stop" }));
    await waitFor(() => expect(service.requests.filter((request) => request.url.endsWith("/stop"))).toHaveLength(1));
    const stop = service.requests.find((request) => request.url.endsWith("/stop"))!;
    expect(stop.url).toBe(`/api/chat/${bodyOf(response.request).id}/stop`);
    expect(stop.headers.has("Authorization")).toBe(false);
  });

  it("keeps the chat id and messages across a reload and resumes the active stream", async () => {
    sessionStorage.setItem("chat.apiKey", "sk-ui");
    const before = fakeService();
    render(<App fetch={before.fetch} />);
    // On load, useChat asks for the chat's active stream; without Redis that is a quiet 404.
    await waitFor(() => expect(before.requests.some((request) => request.method === "GET")).toBe(true));
    await ask("First question");
    const first = await before.nextResponse();
    first.write(answer(["First answer"], {}));
    first.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    const id = bodyOf(first.request).id;
    expect(within(lastAnswer()).queryByRole("alert")).toBeNull();
    await ask("Second question");
    const second = await before.nextResponse();
    second.write(ui.chunk({ type: "start", messageId: "msg-2" }) + ui.chunk({ type: "text-start", id: "t" }));
    second.write(ui.chunk({ type: "text-delta", id: "t", delta: "Resu" }));
    await waitFor(() => expect(lastAnswer().textContent).toContain("Resu"));
    cleanup(); // the page goes away mid-answer; sessionStorage stays, as it does over a reload

    // The reloaded page: the service has an answer in flight for this chat and replays it.
    const after = streamingService((request) => (request.url.endsWith("/stop") ? notFound() : "stream"));
    render(<App fetch={after.fetch} />);
    const resumed = await after.nextResponse();
    expect(resumed.request.method).toBe("GET");
    expect(resumed.request.url).toBe(`/api/chat/${id}/stream`);
    expect(resumed.request.headers.get("Authorization")).toBe("Bearer sk-ui");
    expect(screen.getAllByTestId("assistant")[0]!.textContent).toContain("First answer");
    // The replay starts from `start`: the half answer kept from before is rebuilt, not doubled.
    resumed.write(answer(["Resumed", " answer"], {}, "msg-2"));
    resumed.end();
    await waitFor(() => expect(lastAnswer().textContent).toContain("Resumed answer"));
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    expect(screen.getAllByTestId("assistant")).toHaveLength(2);

    await ask("Next question");
    const next = await after.nextResponse();
    expect(bodyOf(next.request).id).toBe(id);
    expect(conversation(next.request)).toEqual([
      { role: "user", text: "First question" },
      { role: "assistant", text: "First answer" },
      { role: "user", text: "Second question" },
      { role: "assistant", text: "Resumed answer" },
      { role: "user", text: "Next question" },
    ]);
  });
});
