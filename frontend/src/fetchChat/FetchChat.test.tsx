// @vitest-environment happy-dom
import { act, cleanup, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { App } from "../App";
import { fakeService, jsonResponse, sse } from "../testing/fakeService";

beforeEach(() => {
  sessionStorage.clear();
  window.history.replaceState(null, "", "/");
});
afterEach(cleanup);

const answers = () => screen.getAllByTestId("assistant");
const lastAnswer = () => answers().at(-1)!;

async function ask(text: string) {
  const user = userEvent.setup();
  await user.type(screen.getByLabelText("Message"), `${text}{Enter}`);
  return user;
}

describe("the fetch path (POST /api/chat/stream)", () => {
  it("renders Markdown as it streams, shows the service's metrics, and sends the history", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    await ask("Show code");
    const response = await service.nextResponse();
    expect(response.request.url).toBe("/api/chat/stream");
    expect(response.request.body).toEqual({ messages: [{ role: "user", content: "Show code" }] });

    response.write(sse.start() + sse.delta("Here:\n\n```py\nprint("));
    await waitFor(() => expect(lastAnswer().querySelector("pre code")?.textContent).toBe("print(\n"));
    expect(lastAnswer().dataset.state).toBe("streaming");
    response.write(sse.delta('"hi")\n```\n\n**done**'));
    await waitFor(() => expect(lastAnswer().querySelector("strong")?.textContent).toBe("done"));
    expect(lastAnswer().querySelector("pre code")?.textContent).toBe('print("hi")\n');

    response.write(
      sse.end(
        { ttft_ms: 412.3, upstream_ttft_ms: 400, tokens_per_second: 48.14, output_tokens: 3, duration_ms: 500 },
        { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
      ) + sse.done,
    );
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    const metrics = within(lastAnswer()).getByTestId("metrics");
    expect(metrics.dataset.final).toBe("true");
    expect(metrics.textContent).toContain("TTFT 412 ms");
    expect(metrics.textContent).toContain("48.1 tok/s");
    expect(metrics.textContent).toContain("3 tokens");
    expect(metrics.textContent).toContain("9 in");

    await ask("And again");
    const second = await service.nextResponse();
    expect(second.request.body).toEqual({
      messages: [
        { role: "user", content: "Show code" },
        { role: "assistant", content: 'Here:\n\n```py\nprint("hi")\n```\n\n**done**' },
        { role: "user", content: "And again" },
      ],
    });
  });

  it("Stop aborts the request; the partial answer stays and is sent as history", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Tell a long story");
    const response = await service.nextResponse();
    response.write(sse.start() + sse.delta("Once upon"));
    await waitFor(() => expect(lastAnswer().textContent).toContain("Once upon"));

    await user.click(screen.getByRole("button", { name: "Stop" }));
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("stopped"));
    expect(response.request.signal?.aborted).toBe(true);
    expect(response.closedByClient).toBe(true);
    expect(lastAnswer().textContent).toContain("Stopped.");
    expect(within(lastAnswer()).getByTestId("metrics").textContent).toContain("TTFT");

    await ask("Go on");
    const second = await service.nextResponse();
    expect((second.request.body as { messages: unknown[] }).messages).toEqual([
      { role: "user", content: "Tell a long story" },
      { role: "assistant", content: "Once upon" },
      { role: "user", content: "Go on" },
    ]);
  });

  it("switching to the useChat path stops the answer being streamed", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Long answer");
    const response = await service.nextResponse();
    response.write(sse.delta("Part"));
    await waitFor(() => expect(lastAnswer().textContent).toContain("Part"));
    await user.click(screen.getByRole("radio", { name: "useChat" }));
    await waitFor(() => expect(response.request.signal?.aborted).toBe(true));
    expect(response.closedByClient).toBe(true);
    expect(window.location.search).toBe("?mode=usechat");
  });

  it("Esc stops too, before the first token: the question goes back into the box", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    const user = await ask("Wait for it");
    const response = await service.nextResponse();
    await user.keyboard("{Escape}");
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("stopped"));
    expect(response.request.signal?.aborted).toBe(true);
    expect(lastAnswer().textContent).toContain("Stopped before the answer began.");
    expect(screen.getByLabelText<HTMLTextAreaElement>("Message").value).toBe("Wait for it");
  });

  it("shows a retryable error with its message, and Retry sends the question again", async () => {
    let calls = 0;
    const service = fakeService(() =>
      ++calls === 1
        ? jsonResponse(
            429,
            { error: { type: "rate_limited", message: "the upstream is rate limiting requests", retryable: true, retry_after_seconds: 7 } },
            { "Retry-After": "7" },
          )
        : "stream",
    );
    render(<App fetch={service.fetch} />);
    const user = await ask("Hello");
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    const alert = within(lastAnswer()).getByRole("alert");
    expect(alert.textContent).toContain("Error (rate_limited): the upstream is rate limiting requests.");
    expect(alert.textContent).toContain("A retry may help; the service asks to wait 7 s.");

    await user.click(within(alert).getByRole("button", { name: "Retry" }));
    const response = await service.nextResponse();
    expect(response.request.body).toEqual({ messages: [{ role: "user", content: "Hello" }] });
    response.write(sse.delta("Hi!") + sse.end({ ttft_ms: 5, upstream_ttft_ms: 4, tokens_per_second: null, output_tokens: 1, duration_ms: 6 }) + sse.done);
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
    expect(answers()).toHaveLength(1);
    expect(lastAnswer().textContent).toContain("Hi!");
  });

  it("offers no Retry when the service says it will not help (422)", async () => {
    const service = fakeService(() =>
      jsonResponse(422, { error: { type: "invalid_request", message: "messages: at most 500 messages", retryable: false } }),
    );
    render(<App fetch={service.fetch} />);
    await ask("Too much");
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    const alert = within(lastAnswer()).getByRole("alert");
    expect(alert.textContent).toContain("Error (invalid_request): messages: at most 500 messages.");
    expect(alert.textContent).toContain("Retrying the same request will not help.");
    expect(within(alert).queryByRole("button", { name: "Retry" })).toBeNull();
  });

  it("an in-band error keeps the text that came before it", async () => {
    const service = fakeService();
    render(<App fetch={service.fetch} />);
    await ask("Hello");
    const response = await service.nextResponse();
    response.write(
      sse.delta("Partial answer") +
        sse.error({ type: "upstream_unavailable", message: "the upstream failed mid-stream", retryable: true }) +
        sse.done,
    );
    response.end();
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    expect(lastAnswer().textContent).toContain("Partial answer");
    expect(within(lastAnswer()).getByRole("alert").textContent).toContain("the upstream failed mid-stream");
  });

  it("asks for an API key after a 401 and sends it as a Bearer token", async () => {
    const service = fakeService((request) =>
      request.headers.get("Authorization") === "Bearer sk-test"
        ? "stream"
        : jsonResponse(401, { error: { type: "unauthorized", message: "a valid API key is required", retryable: false } }),
    );
    render(<App fetch={service.fetch} />);
    expect(screen.queryByLabelText("Service API key")).toBeNull();
    const user = await ask("Hello");
    const keyField = await screen.findByLabelText("Service API key");
    await waitFor(() => expect(document.activeElement).toBe(keyField));
    expect(within(lastAnswer()).getByRole("alert").textContent).toContain("needs an API key");

    await user.type(keyField, "sk-test");
    expect(sessionStorage.getItem("chat.apiKey")).toBe("sk-test");
    await user.click(within(lastAnswer()).getByRole("button", { name: "Retry" }));
    const response = await service.nextResponse();
    expect(response.request.headers.get("Authorization")).toBe("Bearer sk-test");
    await act(async () => {
      response.write(sse.delta("Welcome") + sse.done);
      response.end();
    });
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("done"));
  });

  it("reports an unreachable service as a network error worth retrying", async () => {
    const service = fakeService(() => {
      throw new TypeError("Failed to fetch");
    });
    render(<App fetch={service.fetch} />);
    await ask("Hello");
    await waitFor(() => expect(lastAnswer().dataset.state).toBe("error"));
    const alert = within(lastAnswer()).getByRole("alert");
    expect(alert.textContent).toContain("Error (network_error): Failed to fetch: the service could not be reached");
    expect(alert.textContent).toContain("CORS_ALLOW_ORIGINS");
    expect(within(alert).getByRole("button", { name: "Retry" })).toBeTruthy();
  });
});
